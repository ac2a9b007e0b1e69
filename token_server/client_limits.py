"""Per-client bounds: which client a request comes from, how many of its requests may be in
flight at once, and how fast it may mint tokens."""

from __future__ import annotations

import collections
import ipaddress
import math

from aiohttp import web

from streamtalk_common.http_api import ApiError, Handler

from .rate_limit import RateLimiter

CONNECTIONS_RETRY_AFTER_S = 1


def client_key(request: web.Request) -> str:
    """The peer address of the socket (no X-Forwarded-For: nothing here trusts a proxy).
    An IPv6 client counts as its /64, the block one host usually holds."""
    remote = request.remote or "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def connection_limit(max_per_client: int):
    """Middleware: a client with `max_per_client` requests in flight gets 429 for the next."""
    in_flight: collections.Counter[str] = collections.Counter()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = client_key(request)
        if in_flight[key] >= max_per_client:
            raise ApiError(
                429,
                "too_many_connections",
                f"at most {max_per_client} requests at a time per client; wait for one to finish",
                headers={"Retry-After": str(CONNECTIONS_RETRY_AFTER_S)},
            )
        in_flight[key] += 1
        try:
            return await handler(request)
        finally:
            in_flight[key] -= 1
            if not in_flight[key]:
                del in_flight[key]

    return middleware


def charge_token(limiter: RateLimiter | None, request: web.Request) -> None:
    """Count one token request against its client; 429 with Retry-After past the limit."""
    if limiter is None:
        return
    wait_s = limiter.acquire(client_key(request))
    if wait_s > 0:
        retry_after = math.ceil(wait_s)
        raise ApiError(
            429,
            "rate_limited",
            f"at most {limiter.per_min} token requests a minute per client; "
            f"retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
