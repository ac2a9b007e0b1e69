"""Token server configuration: TokenServerConfig, whose fields are its knobs (each defined
here only; the README's table is generated from them)."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from livekit import api

from streamtalk_common.errors import ConfigError
from streamtalk_common.knobs import PORT_RANGE, KnobTable, knob
from streamtalk_common.paths import REPO_ROOT, cache_root

log = logging.getLogger("token_server")


def _node_modules(home: Path) -> Path:
    return home / "node" / "node_modules"


def _url_list(raw: str) -> tuple[str, ...]:
    return tuple(url.strip() for url in raw.split(",") if url.strip())


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
    host: str = knob("TOKEN_SERVER_HOST", "127.0.0.1",
                     "bind address; an address other than loopback needs `TOKEN_ACCESS_KEY` or "
                     "`TOKEN_ALLOW_OPEN=1`, else the server refuses to start",
                     flag="--host")
    port: int = knob("TOKEN_SERVER_PORT", 3000, "port", flag="--port", **PORT_RANGE)
    livekit_urls: tuple[str, ...] = knob("LIVEKIT_URLS", ("ws://127.0.0.1:7880",),
                                         "the LiveKit nodes, comma-separated: the server reaches "
                                         "their API and hands a live one to each client "
                                         "(token_server/live_nodes.py)",
                                         kind=_url_list, fallback=("LIVEKIT_URL",))
    public_url: str | None = knob("LIVEKIT_PUBLIC_URL", None,
                                  "the URL handed to every client instead, when browsers reach "
                                  "LiveKit under another name (a TLS proxy or load balancer in "
                                  "front of the nodes)",
                                  kind=str)
    # no default: a well-known secret would let anyone mint tokens
    api_key: str = knob("LIVEKIT_API_KEY", "",
                        "the LiveKit server's key (`scripts/start_all.sh` takes the keys from "
                        "`$STREAMTALK_HOME/livekit-keys.yaml`)",
                        shown_default="none: required")
    api_secret: str = knob("LIVEKIT_API_SECRET", "", "the LiveKit server's secret",
                           shown_default="none: required", repr=False)
    agent_name: str = knob("LIVEKIT_AGENT_NAME", "streamtalk", "the agent every token dispatches")
    ttl_s: int = knob("TOKEN_TTL_S", 3600, "token lifetime (s)", lo=1, hi=86400)
    access_key: str | None = knob("TOKEN_ACCESS_KEY", None,
                                  "when set, `POST /api/token` needs the header `X-Access-Key` "
                                  "with this value (compared in constant time)",
                                  kind=str, repr=False)
    allow_open: bool = knob("TOKEN_ALLOW_OPEN", False,
                            "`1`: serve tokens to anyone on a non-loopback address (not "
                            "127.0.0.0/8, `::1`, `localhost`) without an access key, on purpose")
    rate_limit_per_min: int = knob("TOKEN_RATE_LIMIT_PER_MIN", 30,
                                   "`POST /api/token` requests per client address a minute (a "
                                   "token bucket: bursts of as many, then one every 60/N s); "
                                   "past it `429 rate_limited` with `Retry-After` (seconds); "
                                   "`0` = off",
                                   lo=0)
    max_connections_per_client: int = knob("TOKEN_MAX_CONNECTIONS_PER_CLIENT", 16,
                                           "requests in flight at once per client address, "
                                           "any route; past it `429 too_many_connections` with "
                                           "`Retry-After: 1`",
                                           lo=1)
    # the room reconciler (token_server/reconciler.py)
    reconcile_grace_s: float = knob("TOKEN_RECONCILE_GRACE_S", 5.0,
                                    "seconds a room with people may lack its agent before it is "
                                    "dispatched again (then 1x, 2x, 4x... between attempts); "
                                    "`0` = reconciler off",
                                    lo=0, hi=3600)
    reconcile_max_attempts: int = knob("TOKEN_RECONCILE_MAX_ATTEMPTS", 5,
                                       "dispatches per stranded room before it gives up "
                                       "(the page then says so)", lo=1, hi=100)
    web_root: Path = knob("WEB_ROOT", REPO_ROOT / "web", "the web client's files", kind=Path)
    node_modules: Path = knob("STREAMTALK_NODE_MODULES", None,
                              "the folder holding `livekit-client/dist/livekit-client.umd.js` "
                              "(npm install)",
                              kind=Path, factory=lambda: _node_modules(cache_root()),
                              shown_default="`$STREAMTALK_HOME/node/node_modules`")

    def __post_init__(self) -> None:
        KNOBS.check(self)
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
        if not is_loopback(self.host) and self.access_key is None and not self.allow_open:
            raise ConfigError(
                f"the bind address {self.host} is not loopback, so anyone who reaches it could "
                "mint tokens for your LiveKit server: set TOKEN_ACCESS_KEY to require a key, or "
                "TOKEN_ALLOW_OPEN=1 if an open token server is intended"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 **overrides: object) -> TokenServerConfig:
        env = os.environ if env is None else env
        values = KNOBS.values(env, overrides)
        values.setdefault("node_modules", _node_modules(cache_root(env)))
        return cls(**values)

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


KNOBS = KnobTable(TokenServerConfig, ConfigError, log)
