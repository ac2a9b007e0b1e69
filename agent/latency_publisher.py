"""Publishes each turn's latency breakdown to the room (data topic `streamtalk.latency`).

A listener of the trace collector's points (`TraceCollector.subscribe_points`): it uses the
collector's turn attribution and its clock readings, so nothing is timed twice. When a
turn's first audio is published, the turn's breakdown (streamtalk_common/latency_breakdown.py)
goes out once as reliable UTF-8 JSON, and is logged. A turn that lacks a point (a greeting,
a reply that failed) publishes nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from streamtalk_common.latency_breakdown import POINTS, LatencyBreakdown

log = logging.getLogger("streamtalk.agent")

KEEP_TURNS = 4  # points of turns this far behind the newest are dropped (they never finished)

Send = Callable[[str], Awaitable[None]]


class LatencyPublisher:
    def __init__(self, send: Send) -> None:
        self._send = send
        self._points: dict[int, dict[str, float]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.published: collections.deque[LatencyBreakdown] = collections.deque(maxlen=100)

    def __call__(self, turn: int, point: str, t_mono_ms: float) -> None:
        if point not in POINTS:
            return
        self._points.setdefault(turn, {})[point] = t_mono_ms
        for old in [t for t in self._points if t < turn - KEEP_TURNS]:
            del self._points[old]
        if point != POINTS[-1]:
            return
        breakdown = LatencyBreakdown.from_points(turn, self._points.pop(turn))
        if breakdown is None:
            return
        log.info("turn %d latency: %s, total %.0f ms", turn, ", ".join(
            f"{k} {v:.0f} ms" for k, v in breakdown.segments_ms().items()), breakdown.total_ms)
        self.published.append(breakdown)
        task = asyncio.ensure_future(self._publish(breakdown))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, breakdown: LatencyBreakdown) -> None:
        try:
            await self._send(breakdown.to_json())
        except Exception as exc:
            log.warning("cannot publish the latency of turn %d: %s", breakdown.turn,
                        exc or type(exc).__name__)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
