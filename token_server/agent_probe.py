"""`python -m token_server.agent_probe`: does LiveKit bring our agent into a room now?

The question `scripts/start_all.sh status` asks for the agent line. The worker's
own health route answers OK while it is not registered with LiveKit (after
LiveKit restarted, or while it reconnects), and LiveKit's answers OK while it
drains; neither says whether a user would get an agent. So the probe does what
a user's join does: it dispatches LIVEKIT_AGENT_NAME into a throwaway room and
waits for an agent participant, then deletes the room. Exit 0 when the agent
came (the time it took is printed), 1 when it did not within --timeout, 2 on
a configuration error. Reads LIVEKIT_URL and the keys like the token server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import time

import aiohttp
from livekit import api

from .config import ConfigError, TokenServerConfig

PROBE_ROOM_PREFIX = "status-probe-"


async def probe(config: TokenServerConfig, timeout_s: float) -> tuple[bool, str]:
    room = PROBE_ROOM_PREFIX + secrets.token_hex(4)
    start = time.monotonic()
    async with config.livekit_api() as lkapi:
        try:
            await lkapi.room.create_room(api.CreateRoomRequest(
                name=room, empty_timeout=int(timeout_s) + 5))
            await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                agent_name=config.agent_name, room=room, metadata='{"source": "status-probe"}'))
            while time.monotonic() - start < timeout_s:
                people = (await lkapi.room.list_participants(
                    api.ListParticipantsRequest(room=room))).participants
                if any(p.kind == api.ParticipantInfo.Kind.AGENT for p in people):
                    return True, (f"agent {config.agent_name} joined a probe room in "
                                  f"{time.monotonic() - start:.1f} s")
                await asyncio.sleep(0.2)
            return False, (f"no {config.agent_name} agent joined a probe room in {timeout_s:g} s "
                           "(is a worker of that name registered with this LiveKit?)")
        except (api.TwirpError, aiohttp.ClientError, OSError) as exc:
            return False, f"LiveKit refused the probe: {exc}"
        finally:
            with contextlib.suppress(api.TwirpError, aiohttp.ClientError, OSError):
                await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m token_server.agent_probe",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the agent (10)")
    args = parser.parse_args(argv)
    try:
        config = TokenServerConfig.from_env()
    except ConfigError as exc:
        print(f"agent_probe: configuration error: {exc}", file=sys.stderr)
        return 2
    ok, message = asyncio.run(probe(config, args.timeout))
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
