"""The LiveKit nodes the token server hands out, and which of them answer.

With one node (`LIVEKIT_URL`) there is nothing to choose: its URL goes to every
client, and its API serves the reconciler. With several (`LIVEKIT_URLS`, nodes
that share rooms through Redis) a watcher asks each node's HTTP root every
`CHECK_EVERY_S`; a node that does not answer within `CHECK_TIMEOUT_S` is left out
until it answers again. Clients get the live nodes in turn (the next one for each
token), and the server API (the reconciler's) is the first live node's, so a
client that lost its node rejoins through a token that names a live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator

import aiohttp
from livekit import api

log = logging.getLogger("token_server.live_nodes")

CHECK_EVERY_S = 1.0
CHECK_TIMEOUT_S = 1.0
# livekit-server counts a node dead once its stats are this old, and then moves its rooms to
# the live nodes (pkg/routing/selector: a node whose stats are older than 5 s is unavailable)
NODE_STALE_S = 5.0


def http_url(ws_url: str) -> str:
    """ws://host:port -> http://host:port (wss -> https): the node's HTTP root."""
    return "http" + ws_url.removeprefix("ws")


class NoLiveNode(Exception):
    """None of the configured LiveKit nodes answers."""


class LiveNodes:
    def __init__(self, urls: tuple[str, ...], api_key: str, api_secret: str) -> None:
        if not urls:
            raise ValueError("no LiveKit node URL")
        self.urls = urls
        self.api_key = api_key
        self.api_secret = api_secret
        self.live = dict.fromkeys(urls, True)  # until the first check says otherwise
        self.last_lost = -math.inf  # when a node last stopped answering (monotonic)
        self._next = 0
        self._apis: dict[str, api.LiveKitAPI] = {}

    @property
    def watched(self) -> bool:
        """Whether there is a choice to make (several nodes)."""
        return len(self.urls) > 1

    def client_url(self) -> str:
        """A live node for the next client, the live nodes in turn."""
        live = [u for u in self.urls if self.live[u]]
        if not live:
            raise NoLiveNode(f"no LiveKit node answers (checked every {CHECK_EVERY_S:g} s: "
                             f"{', '.join(self.urls)})")
        self._next = (self._next + 1) % len(live)
        return live[self._next]

    def api(self) -> api.LiveKitAPI:
        """The server API of the first live node (the first node when none answers: its
        calls then fail like any call to a LiveKit that is away). Call inside the event loop."""
        url = next((u for u in self.urls if self.live[u]), self.urls[0])
        if url not in self._apis:
            self._apis[url] = api.LiveKitAPI(url, self.api_key, self.api_secret)
        return self._apis[url]

    async def check(self, session: aiohttp.ClientSession) -> None:
        async def answers(url: str) -> bool:
            try:
                async with session.get(http_url(url) + "/",
                                       timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S)) as r:
                    return r.status == 200
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False

        for url, up in zip(self.urls, await asyncio.gather(*(answers(u) for u in self.urls)),
                           strict=True):
            if up != self.live[url]:
                log.warning("LiveKit node %s %s", url,
                            "answers again" if up else "does not answer: left out")
                if not up:
                    self.last_lost = time.monotonic()
            self.live[url] = up

    async def watch(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                await self.check(session)
                await asyncio.sleep(CHECK_EVERY_S)

    async def aclose(self) -> None:
        for client in self._apis.values():
            await client.aclose()


@contextlib.asynccontextmanager
async def watching(nodes: LiveNodes) -> AsyncIterator[LiveNodes]:
    """Watch the nodes while the context lasts (nothing to watch with one node)."""
    task = asyncio.create_task(nodes.watch(), name="livekit_node_watch") if nodes.watched else None
    try:
        yield nodes
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await nodes.aclose()
