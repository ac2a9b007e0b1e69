"""aiohttp application: POST /api/token, /api/config, /healthz and the web client."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .config import TokenServerConfig
from .tokens import RequestError, mint_token, parse_token_request

log = logging.getLogger("token_server")

CONFIG_KEY = web.AppKey("config", TokenServerConfig)
MAX_BODY_BYTES = 16 * 1024
VENDOR_JS = "/vendor/livekit-client.umd.js"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str, **extra: object) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return web.json_response(body, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every client error on /api/* and /healthz is a JSON body, never HTML or a trace."""
    try:
        return await handler(request)
    except RequestError as exc:
        return web.json_response(exc.to_json(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(("/api/", "/healthz")):
            raise
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
        }.get(exc.status, "http_error")
        message = {
            404: f"no such endpoint: {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
            413: f"request body larger than {MAX_BODY_BYTES} bytes",
        }.get(exc.status, exc.reason)
        return _error(exc.status, code, message)


def _check_access_key(request: web.Request, config: TokenServerConfig) -> None:
    if config.access_key is None:
        return
    given = request.headers.get("X-Access-Key")
    if given is None:
        raise RequestError(
            401, "access_key_required", "this server requires the X-Access-Key header"
        )
    if not hmac.compare_digest(given.encode(), config.access_key.encode()):
        raise RequestError(401, "access_key_invalid", "the X-Access-Key header is wrong")


async def create_token(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    _check_access_key(request, config)
    raw = await request.read()  # raises 413 past client_max_size
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError(
            400, "invalid_json", 'the body must be JSON: {"room", "identity", "name"?}'
        ) from None
    req = parse_token_request(body)
    issued = mint_token(
        req,
        api_key=config.api_key,
        api_secret=config.api_secret,
        ttl_s=config.ttl_s,
        agent_name=config.agent_name,
    )
    log.info(
        "token issued room=%s identity=%s expires_at=%d", req.room, req.identity, issued.expires_at
    )
    return web.json_response(
        {
            "token": issued.token,
            "url": config.livekit_url,
            "room": req.room,
            "identity": req.identity,
            "expires_at": issued.expires_at,
        },
        headers={"Cache-Control": "no-store"},
    )


async def client_config(request: web.Request) -> web.Response:
    """What the page needs before asking for a token; nothing secret."""
    config = request.app[CONFIG_KEY]
    return web.json_response(
        {
            "livekit_url": config.livekit_url,
            "agent_name": config.agent_name,
            "access_key_required": config.access_key is not None,
            "livekit_client_available": config.livekit_client_js.is_file(),
        }
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def vendor_js(request: web.Request) -> web.StreamResponse:
    path = request.app[CONFIG_KEY].livekit_client_js
    if not path.is_file():
        return web.Response(
            status=404,
            text="livekit-client is not installed on the server: run scripts/install_node_deps.sh\n",
        )
    return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})


async def static_file(request: web.Request) -> web.StreamResponse:
    root = request.app[CONFIG_KEY].web_root.resolve()
    rel = request.match_info.get("path", "") or "index.html"
    target = (root / rel).resolve()
    if target.is_dir():
        target = target / "index.html"
    if not target.is_relative_to(root) or not target.is_file():
        raise web.HTTPNotFound(text=f"not found: /{rel}\n")
    return web.FileResponse(target, headers={"Cache-Control": "no-cache"})


def create_app(config: TokenServerConfig) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app[CONFIG_KEY] = config
    app.router.add_post("/api/token", create_token)
    app.router.add_get("/api/config", client_config)
    app.router.add_get("/healthz", healthz)
    app.router.add_get(VENDOR_JS, vendor_js)
    app.router.add_route("*", "/api/{tail:.*}", _api_not_found)
    app.router.add_get("/{path:.*}", static_file)
    return app


API_METHODS = {"/api/token": ["POST"], "/api/config": ["GET", "HEAD"]}


async def _api_not_found(request: web.Request) -> web.Response:
    allowed = API_METHODS.get(request.path)
    if allowed is not None:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def web_root_problems(config: TokenServerConfig) -> list[str]:
    """Start-up warnings about the files the page needs."""
    problems = []
    if not (Path(config.web_root) / "index.html").is_file():
        problems.append(f"web client missing: {config.web_root}/index.html")
    if not config.livekit_client_js.is_file():
        problems.append(
            f"livekit-client missing at {config.livekit_client_js}; run scripts/install_node_deps.sh"
        )
    return problems
