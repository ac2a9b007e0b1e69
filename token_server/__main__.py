"""`python -m token_server [--host H] [--port P]`."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from .app import create_app, web_root_problems
from .config import KNOBS, ConfigError, TokenServerConfig, is_loopback

log = logging.getLogger("token_server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m token_server",
        description="LiveKit join-token API and host of the streamtalk web client.",
    )
    KNOBS.add_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = TokenServerConfig.from_env(**vars(args))
    except ConfigError as exc:
        print(f"token_server: configuration error: {exc}", file=sys.stderr)
        return 2
    for problem in web_root_problems(config):
        log.warning("%s", problem)
    if config.access_key is None and not is_loopback(config.host):
        log.warning(
            "open token server on %s (TOKEN_ALLOW_OPEN=1): anyone who reaches it gets tokens",
            config.host,
        )
    log.info(
        "token server on http://%s:%d (LiveKit %s, agent %s, ttl %ds, access key %s, "
        "%s tokens/min and %d requests at a time per client)",
        config.host,
        config.port,
        config.livekit_url,
        config.agent_name,
        config.ttl_s,
        "required" if config.access_key else "off",
        config.rate_limit_per_min or "unlimited",
        config.max_connections_per_client,
    )
    try:
        web.run_app(create_app(config), host=config.host, port=config.port, print=None)
    except OSError as exc:
        print(f"token_server: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
