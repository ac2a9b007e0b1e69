"""RequestMetrics.to_dict: what asdict gives, without copying every packet's line."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from tts_engine.runtime.session import PCMPacket, RequestMetrics


def finished_metrics() -> RequestMetrics:
    m = RequestMetrics("r1", "ryan", "english", text_chars=40, packet_tokens=2, frames=6,
                       packets=3, audio_s=0.48, ttfa_ms=12.5, stop_reason="eos",
                       graph_stats={"codegen_graph_used": True, "eager_reason": None})
    for i in range(3):
        packet = PCMPacket(i, np.zeros(3840, dtype=np.float32), 2, 10.0 + i, 1.5, 0.5, 0.1)
        m.packet_log.append(packet.timings())
    return m


def test_to_dict_is_asdict():
    m = finished_metrics()
    assert m.to_dict() == asdict(m)
    assert m.to_dict()["packet_log"][1] == {"index": 1, "frames": 2, "t_ready_ms": 11.0,
                                            "codegen_ms": 1.5, "decode_ms": 0.5, "glue_ms": 0.1}


def test_to_dict_is_a_snapshot_of_the_lists():
    m = finished_metrics()
    snapshot = m.to_dict()
    m.packet_log.append({"index": 3})
    m.graph_stats["eager_reason"] = "changed"
    m.packets = 4
    assert len(snapshot["packet_log"]) == 3 and snapshot["packets"] == 3
    assert snapshot["graph_stats"]["eager_reason"] is None
