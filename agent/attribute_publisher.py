"""One participant attribute kept in step with a changing value: the latest value wins.

The LiveKit SDK's `set_attributes` sends the update, then waits (up to 5 s) for the
server's answer. The answer can arrive before the SDK starts waiting for it; the call
then times out although the server applied the update. So each send waits at most
`ACK_WAIT_S`: a value left unanswered is sent again, or replaced by a newer value, so a
new state never queues behind a lost answer. After `ATTEMPTS` unanswered sends of the
same value in a row the publisher logs a warning and rests until the value changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("streamtalk.agent")

ACK_WAIT_S = 1.0
ATTEMPTS = 3

Send = Callable[[str], Awaitable[None]]


class AttributePublisher:
    def __init__(self, send: Send, what: str) -> None:
        self._send = send
        self.what = what
        self._wanted: str | None = None
        self.published: str | None = None  # the last value the server acknowledged
        self._task: asyncio.Task[None] | None = None

    def set(self, value: str) -> None:
        """Publish `value` soon; values set meanwhile are coalesced (latest wins)."""
        self._wanted = value
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        unanswered = 0
        while self._wanted is not None and self._wanted != self.published:
            value = self._wanted
            try:
                await asyncio.wait_for(self._send(value), ACK_WAIT_S)
            except Exception as exc:
                unanswered = unanswered + 1 if value == self._wanted else 1
                if unanswered >= ATTEMPTS:
                    log.warning("cannot publish %s %r after %d attempts: %s", self.what, value,
                                unanswered, exc or type(exc).__name__)
                    return
                continue
            self.published = value
            unanswered = 0
