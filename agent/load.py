"""The load a worker reports to LiveKit, and its Prometheus gauges.

LiveKit sends a room to a worker that is not full, picked at random weighted by
1 - load. A worker's limit is the tighter of two:

- rooms: `AGENT_MAX_ROOMS` rooms in all, listening or speaking;
- the TTS engine: the streams its admission control can keep real time
  (`TTSEngine.capacity`, measured at start-up and kept current, at most
  `TTS_MAX_ACTIVE_STREAMS`). A stream beyond it waits, and one that waits
  `TTS_QUEUE_TIMEOUT_S` is refused: that is the engine's reject point.

So `load = max(rooms / AGENT_MAX_ROOMS, streams in use / engine capacity)`,
at most 1, where streams in use counts the queued ones too. The worker is full
(takes no new room) once its load reaches `AGENT_LOAD_THRESHOLD` (< 1), so
LiveKit stops sending rooms while the engine still has streams to spare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class WorkerLoad:
    rooms: int
    max_rooms: int
    engine_streams: int  # active and queued
    engine_capacity: int

    @property
    def rooms_share(self) -> float:
        return self.rooms / max(1, self.max_rooms)

    @property
    def engine_share(self) -> float:
        return self.engine_streams / max(1, self.engine_capacity)

    @property
    def load(self) -> float:
        return min(1.0, max(self.rooms_share, self.engine_share))


class LoadCollector(Collector):
    """The worker's load and its parts, read at each scrape of the worker's /metrics."""

    def __init__(self, sample: Callable[[], WorkerLoad], threshold: float) -> None:
        self.sample = sample
        self.threshold = threshold

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.sample()
        gauges = (
            ("streamtalk_agent_load", "load reported to LiveKit: max(rooms share, engine share)",
             now.load),
            ("streamtalk_agent_load_threshold", "load at which the worker takes no new room "
             "(AGENT_LOAD_THRESHOLD)", self.threshold),
            ("streamtalk_agent_rooms", "rooms this worker serves", now.rooms),
            ("streamtalk_agent_max_rooms", "rooms this worker may serve (AGENT_MAX_ROOMS)",
             now.max_rooms),
            ("streamtalk_agent_engine_streams", "TTS engine streams in use (active and queued)",
             now.engine_streams),
            ("streamtalk_agent_engine_capacity", "TTS engine streams that stay real time "
             "(admission control)", now.engine_capacity),
        )
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
