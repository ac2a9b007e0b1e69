"""aiohttp application: POST /api/token, /api/config, /api/openapi.json, /healthz and the
web client. Errors are JSON everywhere (streamtalk_common.http_api). Beside them runs the
room reconciler (token_server/reconciler.py) unless TOKEN_RECONCILE_GRACE_S=0."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from streamtalk_common.http_api import (
    ApiError,
    Operation,
    api_key_header,
    json_errors,
    openapi_document,
    read_model,
)

from .client_limits import charge_token, connection_limit
from .config import TokenServerConfig
from .live_nodes import LiveNodes, NoLiveNode, watching
from .rate_limit import RateLimiter
from .reconciler import RoomReconciler
from .tokens import TokenRequest, grant_for, mint_token

log = logging.getLogger("token_server")

CONFIG_KEY = web.AppKey("config", TokenServerConfig)
NODES_KEY = web.AppKey("livekit_nodes", LiveNodes)
LIMITER_KEY = web.AppKey("token_rate_limiter", RateLimiter)
OPENAPI_KEY = web.AppKey("openapi", dict)
MAX_BODY_BYTES = 16 * 1024
VENDOR_JS = "/vendor/livekit-client.umd.js"
ACCESS_KEY_HEADER = "X-Access-Key"
KEYLESS_PATHS = frozenset({"/api/config", "/healthz"})  # the access key guards /api/token only

OPERATIONS = (
    Operation(
        "POST",
        "/api/token",
        "A LiveKit join token for one room, which also dispatches the agent",
        TokenRequest,
        {
            200: "the token, the LiveKit URL, and the room and identity it is for",
            400: "the body is not a valid token request",
            401: "the access key is missing or wrong",
            413: f"the body is larger than {MAX_BODY_BYTES} bytes",
            415: "the body is not application/json",
            429: "too many token requests or concurrent requests from this client",
            503: "no LiveKit node answers (several nodes, LIVEKIT_URLS)",
        },
    ),
    Operation("GET", "/api/config", "What the web page needs before asking for a token"),
    Operation("GET", "/healthz", "Liveness"),
)


def _check_access_key(request: web.Request, config: TokenServerConfig) -> None:
    if config.access_key is None:
        return
    given = request.headers.get(ACCESS_KEY_HEADER)
    if given is None:
        raise ApiError(
            401, "access_key_required", f"this server requires the {ACCESS_KEY_HEADER} header"
        )
    if not hmac.compare_digest(given.encode(), config.access_key.encode()):
        raise ApiError(401, "access_key_invalid", f"the {ACCESS_KEY_HEADER} header is wrong")


def client_url(app: web.Application) -> str:
    """The LiveKit URL a client gets: the public one, else a live node."""
    config = app[CONFIG_KEY]
    if config.public_url:
        return config.public_url
    try:
        return app[NODES_KEY].client_url()
    except NoLiveNode as exc:
        raise ApiError(503, "livekit_unavailable", str(exc)) from None


async def create_token(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    charge_token(request.app.get(LIMITER_KEY), request)
    _check_access_key(request, config)
    grant = grant_for(await read_model(request, TokenRequest))
    url = client_url(request.app)
    issued = mint_token(
        grant,
        api_key=config.api_key,
        api_secret=config.api_secret,
        ttl_s=config.ttl_s,
        agent_name=config.agent_name,
    )
    log.info(
        "token issued room=%s identity=%s expires_at=%d url=%s",
        grant.room,
        grant.identity,
        issued.expires_at,
        url,
    )
    return web.json_response(
        {
            "token": issued.token,
            "url": url,
            "room": grant.room,
            "identity": grant.identity,
            "expires_at": issued.expires_at,
        },
        headers={"Cache-Control": "no-store"},
    )


async def client_config(request: web.Request) -> web.Response:
    """What the page needs before asking for a token; nothing secret."""
    config = request.app[CONFIG_KEY]
    return web.json_response(
        {
            "livekit_url": client_url(request.app),
            "agent_name": config.agent_name,
            "access_key_required": config.access_key is not None,
            "livekit_client_available": config.livekit_client_js.is_file(),
        }
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def vendor_js(request: web.Request) -> web.StreamResponse:
    path = request.app[CONFIG_KEY].livekit_client_js
    if not path.is_file():
        raise ApiError(
            404,
            "not_installed",
            "livekit-client is not installed on the server: run scripts/install_node_deps.sh",
        )
    return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})


async def static_file(request: web.Request) -> web.StreamResponse:
    root = request.app[CONFIG_KEY].web_root.resolve()
    rel = request.match_info.get("path", "") or "index.html"
    try:
        target = (root / rel).resolve()
        if target.is_dir():
            target = target / "index.html"
        found = target.is_relative_to(root) and target.is_file()
    except (ValueError, OSError):  # a null byte, a name too long for the file system
        found = False
    if not found:
        raise web.HTTPNotFound()
    return web.FileResponse(target, headers={"Cache-Control": "no-cache"})


def openapi_spec(config: TokenServerConfig) -> dict[str, Any]:
    return openapi_document(
        "streamtalk token server",
        "1",
        OPERATIONS,
        security=api_key_header(ACCESS_KEY_HEADER) if config.access_key else None,
        open_paths=KEYLESS_PATHS,
    )


def create_app(config: TokenServerConfig) -> web.Application:
    app = web.Application(
        middlewares=[json_errors(log), connection_limit(config.max_connections_per_client)],
        client_max_size=MAX_BODY_BYTES,
    )
    app[CONFIG_KEY] = config
    app[NODES_KEY] = LiveNodes(config.livekit_urls, config.api_key, config.api_secret)
    if config.rate_limit_per_min:
        app[LIMITER_KEY] = RateLimiter(config.rate_limit_per_min)
    app[OPENAPI_KEY] = openapi_spec(config)
    app.router.add_post("/api/token", create_token)
    app.router.add_get("/api/config", client_config)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get(VENDOR_JS, vendor_js)
    app.router.add_route("*", "/api/{tail:.*}", _api_not_found)
    app.router.add_get("/{path:.*}", static_file)
    app.cleanup_ctx.append(watch_nodes)
    if config.reconcile_grace_s > 0:
        app.cleanup_ctx.append(run_reconciler)
    return app


async def watch_nodes(app: web.Application) -> AsyncIterator[None]:
    async with watching(app[NODES_KEY]) as nodes:
        if nodes.watched:
            log.info("LiveKit nodes %s: each token names a live one", ", ".join(nodes.urls))
        yield


async def run_reconciler(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG_KEY]
    reconciler = RoomReconciler(app[NODES_KEY], config.agent_name, config.reconcile_grace_s,
                                config.reconcile_max_attempts)
    task = asyncio.create_task(reconciler.run(), name="room_reconciler")
    log.info("room reconciler on: a room with people but no %s agent for %g s gets it "
             "dispatched again (at most %d times)", config.agent_name, config.reconcile_grace_s,
             config.reconcile_max_attempts)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _api_not_found(request: web.Request) -> web.Response:
    """Keeps a wrong method on an /api/ path from landing on the static files' route."""
    allowed = [
        r.method
        for r in request.app.router.routes()
        if r.resource is not None and r.resource.canonical == request.path
    ]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def web_root_problems(config: TokenServerConfig) -> list[str]:
    """Start-up warnings about the files the page needs."""
    problems = []
    if not (Path(config.web_root) / "index.html").is_file():
        problems.append(f"web client missing: {config.web_root}/index.html")
    if not config.livekit_client_js.is_file():
        problems.append(
            f"livekit-client missing at {config.livekit_client_js}; "
            "run scripts/install_node_deps.sh"
        )
    return problems
