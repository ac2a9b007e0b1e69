"""Token server configuration: one dataclass, read from the environment."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from livekit import api

from streamtalk_common.errors import ConfigError
from streamtalk_common.paths import cache_root

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
DEFAULT_LIVEKIT_URL = "ws://127.0.0.1:7880"
DEFAULT_AGENT_NAME = "streamtalk"
DEFAULT_TTL_S = 3600
MAX_TTL_S = 86400
DEFAULT_RATE_LIMIT_PER_MIN = 30
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 16
DEFAULT_RECONCILE_GRACE_S = 5.0
DEFAULT_RECONCILE_MAX_ATTEMPTS = 5


def _number_env(env: dict[str, str], name: str, default: float, kind: type = int):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None


def _bool_env(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1 or 0, got {env[name]!r}")


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@dataclass(frozen=True)
class TokenServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # the LiveKit nodes (LIVEKIT_URLS, else LIVEKIT_URL): the server reaches their API, and
    # hands a live one to each client (token_server/live_nodes.py)
    livekit_urls: tuple[str, ...] = (DEFAULT_LIVEKIT_URL,)
    # the URL handed to every client instead, when browsers reach LiveKit under another name
    # (a TLS proxy or load balancer in front of the nodes): LIVEKIT_PUBLIC_URL
    public_url: str | None = None
    # the LiveKit server's keys; no default: a well-known secret would let anyone mint tokens
    api_key: str = ""
    api_secret: str = field(default="", repr=False)
    agent_name: str = DEFAULT_AGENT_NAME
    ttl_s: int = DEFAULT_TTL_S
    access_key: str | None = field(default=None, repr=False)
    # Bound to a non-loopback address without an access key, the server starts only when
    # this says an open token server is intended.
    allow_open: bool = False
    rate_limit_per_min: int = DEFAULT_RATE_LIMIT_PER_MIN  # tokens per client address; 0 = off
    max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT
    # the room reconciler (token_server/reconciler.py): seconds a room with people may lack
    # its agent before it is dispatched again (0 = off), and dispatches per room at most
    reconcile_grace_s: float = DEFAULT_RECONCILE_GRACE_S
    reconcile_max_attempts: int = DEFAULT_RECONCILE_MAX_ATTEMPTS
    web_root: Path = REPO_ROOT / "web"
    # Folder holding livekit-client/dist/livekit-client.umd.js (npm install).
    node_modules: Path = field(default_factory=lambda: cache_root() / "node" / "node_modules")

    def __post_init__(self) -> None:
        if not 1 <= self.ttl_s <= MAX_TTL_S:
            raise ConfigError(
                f"TOKEN_TTL_S must be within 1..{MAX_TTL_S} seconds, got {self.ttl_s}"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be within 0..65535, got {self.port}")
        if not self.api_key or not self.api_secret:
            raise ConfigError(
                "set LIVEKIT_API_KEY and LIVEKIT_API_SECRET to the LiveKit server's keys "
                "(scripts/start_all.sh takes them from $STREAMTALK_HOME/livekit-keys.yaml; "
                "scripts/livekit_keys.sh CMD runs CMD with them)"
            )
        if not self.livekit_urls:
            raise ConfigError("LIVEKIT_URLS names no LiveKit node")
        for url in (*self.livekit_urls, *([self.public_url] if self.public_url else [])):
            if not url.startswith(("ws://", "wss://")):
                raise ConfigError(f"LiveKit URL must start with ws:// or wss://, got {url!r}")
        if not self.agent_name:
            raise ConfigError("LIVEKIT_AGENT_NAME must not be empty")
        if self.rate_limit_per_min < 0:
            raise ConfigError(
                f"TOKEN_RATE_LIMIT_PER_MIN must be 0 (off) or more, got {self.rate_limit_per_min}"
            )
        if self.max_connections_per_client < 1:
            raise ConfigError(
                "TOKEN_MAX_CONNECTIONS_PER_CLIENT must be 1 or more, "
                f"got {self.max_connections_per_client}"
            )
        if not 0 <= self.reconcile_grace_s <= 3600:
            raise ConfigError(
                "TOKEN_RECONCILE_GRACE_S must be within 0 (off)..3600 seconds, "
                f"got {self.reconcile_grace_s:g}"
            )
        if not 1 <= self.reconcile_max_attempts <= 100:
            raise ConfigError(
                "TOKEN_RECONCILE_MAX_ATTEMPTS must be within 1..100, "
                f"got {self.reconcile_max_attempts}"
            )
        if not is_loopback(self.host) and self.access_key is None and not self.allow_open:
            raise ConfigError(
                f"the bind address {self.host} is not loopback, so anyone who reaches it could "
                "mint tokens for your LiveKit server: set TOKEN_ACCESS_KEY to require a key, or "
                "TOKEN_ALLOW_OPEN=1 if an open token server is intended"
            )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> TokenServerConfig:
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {
            "host": env.get("TOKEN_SERVER_HOST") or DEFAULT_HOST,
            "port": _number_env(env, "TOKEN_SERVER_PORT", DEFAULT_PORT),
            "livekit_urls": tuple(u.strip() for u in env.get("LIVEKIT_URLS", "").split(",") if u.strip())
            or (env.get("LIVEKIT_URL") or DEFAULT_LIVEKIT_URL,),
            "public_url": env.get("LIVEKIT_PUBLIC_URL") or None,
            "api_key": env.get("LIVEKIT_API_KEY", ""),
            "api_secret": env.get("LIVEKIT_API_SECRET", ""),
            "agent_name": env.get("LIVEKIT_AGENT_NAME") or DEFAULT_AGENT_NAME,
            "ttl_s": _number_env(env, "TOKEN_TTL_S", DEFAULT_TTL_S),
            "access_key": env.get("TOKEN_ACCESS_KEY") or None,
            "allow_open": _bool_env(env, "TOKEN_ALLOW_OPEN"),
            "rate_limit_per_min": _number_env(
                env, "TOKEN_RATE_LIMIT_PER_MIN", DEFAULT_RATE_LIMIT_PER_MIN
            ),
            "max_connections_per_client": _number_env(
                env, "TOKEN_MAX_CONNECTIONS_PER_CLIENT", DEFAULT_MAX_CONNECTIONS_PER_CLIENT
            ),
            "reconcile_grace_s": _number_env(
                env, "TOKEN_RECONCILE_GRACE_S", DEFAULT_RECONCILE_GRACE_S, float
            ),
            "reconcile_max_attempts": _number_env(
                env, "TOKEN_RECONCILE_MAX_ATTEMPTS", DEFAULT_RECONCILE_MAX_ATTEMPTS
            ),
        }
        if env.get("WEB_ROOT"):
            values["web_root"] = Path(env["WEB_ROOT"])
        if env.get("STREAMTALK_NODE_MODULES"):
            values["node_modules"] = Path(env["STREAMTALK_NODE_MODULES"])
        elif env.get("STREAMTALK_HOME"):
            values["node_modules"] = Path(env["STREAMTALK_HOME"]) / "node" / "node_modules"
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def livekit_api_url(self) -> str:
        """The first node's: the one a one-off client (the agent probe) asks."""
        return self.livekit_urls[0]

    @property
    def livekit_url(self) -> str:
        """What clients are told when no node is chosen for them (logs, one node)."""
        return self.public_url or self.livekit_urls[0]

    def livekit_api(self) -> api.LiveKitAPI:
        """A client of the LiveKit server's API (the reconciler's, the agent probe's);
        call inside a running event loop, close it with `aclose()`."""
        return api.LiveKitAPI(self.livekit_api_url, self.api_key, self.api_secret)

    @property
    def livekit_client_js(self) -> Path:
        return self.node_modules / "livekit-client" / "dist" / "livekit-client.umd.js"
