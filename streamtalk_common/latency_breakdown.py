"""One turn's latency, end of the user's speech to the reply's first audio, in four segments.

The segments run between the agent's trace points (agent/trace.py) in the order a turn
passes them, so they add up to the whole:

    vad_end --stt--> stt_end --llm--> llm_first_token --tts--> tts_first_packet
            --publish--> first_audio_published

- `stt`: the VAD's end of speech until the transcript is back;
- `llm`: transcript until the first LLM token (the endpointing wait, the request, TTFT);
- `tts`: first token until the engine's first PCM packet (the starter segment, TTFA);
- `publish`: first packet until its first frame goes to the room.

The agent publishes each turn's breakdown on the data topic `LATENCY_TOPIC`
(streamtalk_common/room_protocol.py) as `to_json()`; the AutoRTC report computes the same
from the agent's trace file with `from_points`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# (segment, from point, to point), in turn order; each segment starts where the last ended
SEGMENTS: tuple[tuple[str, str, str], ...] = (
    ("stt", "vad_end", "stt_end"),
    ("llm", "stt_end", "llm_first_token"),
    ("tts", "llm_first_token", "tts_first_packet"),
    ("publish", "tts_first_packet", "first_audio_published"),
)
POINTS: tuple[str, ...] = tuple(a for _, a, _ in SEGMENTS) + (SEGMENTS[-1][2],)
PAYLOAD_TYPE = "turn_latency"


@dataclass(frozen=True)
class LatencyBreakdown:
    turn: int
    stt_ms: float
    llm_ms: float
    tts_ms: float
    publish_ms: float

    @property
    def total_ms(self) -> float:
        return self.stt_ms + self.llm_ms + self.tts_ms + self.publish_ms

    @classmethod
    def from_points(cls, turn: int, points: Mapping[str, float]) -> LatencyBreakdown | None:
        """The breakdown of a turn whose points ({point: t_mono_ms}) are all there; None when
        one is missing (a greeting has no vad_end, a failed reply no first audio)."""
        if any(p not in points for p in POINTS):
            return None
        ms = {name: round(points[b] - points[a], 1) for name, a, b in SEGMENTS}
        return cls(turn=turn, stt_ms=ms["stt"], llm_ms=ms["llm"], tts_ms=ms["tts"],
                   publish_ms=ms["publish"])

    def segments_ms(self) -> dict[str, float]:
        return {name: getattr(self, f"{name}_ms") for name, _, _ in SEGMENTS}

    def to_dict(self) -> dict[str, Any]:
        return {"type": PAYLOAD_TYPE, "turn": self.turn, "segments_ms": self.segments_ms(),
                "total_ms": round(self.total_ms, 1)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
