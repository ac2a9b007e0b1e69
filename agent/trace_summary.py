"""P50/P95 of the agent's turn traces: `python -m agent.trace_summary FILE... [--json OUT]`.

Reads trace JSONL files (`output/traces/<room>.jsonl`), groups the points by
(trace_id, room, turn) and reports each interval over all turns that have both
ends: count, P50, P95, max, in milliseconds (monotonic clock). Prints a table
last; `--json` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from streamtalk_common.stats import latency_summary
from streamtalk_common.tables import write_json

from .errors import TraceFormatError
from .events import Event

# (name, from point, to point)
INTERVALS: tuple[tuple[str, Event, Event], ...] = (
    ("eot_to_first_audio", Event.VAD_END, Event.FIRST_AUDIO_PUBLISHED),
    ("vad_end_to_stt_start", Event.VAD_END, Event.STT_START),
    ("stt", Event.STT_START, Event.STT_END),
    ("stt_end_to_llm_request", Event.STT_END, Event.LLM_REQUEST),
    ("fast_lane_ttft", Event.LLM_REQUEST, Event.LLM_FIRST_TOKEN),
    ("first_token_to_first_segment", Event.LLM_FIRST_TOKEN, Event.FIRST_SEGMENT),
    ("first_segment_to_tts_first_packet", Event.FIRST_SEGMENT, Event.TTS_FIRST_PACKET),
    ("tts_first_to_publish", Event.TTS_FIRST_PACKET, Event.FIRST_AUDIO_PUBLISHED),
    ("reply_audio", Event.FIRST_AUDIO_PUBLISHED, Event.REPLY_END),
    ("interrupt_to_reply_end", Event.INTERRUPTED, Event.REPLY_END),
)


def load_points(paths: list[Path]) -> dict[tuple[str, str, int], dict[str, float]]:
    """{(trace_id, room, turn): {point: t_mono_ms}}; the first value of a point wins."""
    turns: dict[tuple[str, str, int], dict[str, float]] = defaultdict(dict)
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TraceFormatError(f"cannot read {path}: {exc}") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
                key = (str(ev["trace_id"]), str(ev["room"]), int(ev["turn"]))
                point, t = str(ev["point"]), float(ev["t_mono_ms"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise TraceFormatError(f"{path}:{n}: not a trace event ({exc})") from None
            turns[key].setdefault(point, t)
    return dict(turns)


def summarize(turns: dict[tuple[str, str, int], dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"turns": len(turns), "intervals": {}}
    for name, a, b in INTERVALS:
        values = [p[b] - p[a] for p in turns.values() if a in p and b in p]
        out["intervals"][name] = {"from": a, "to": b, **latency_summary(values)}
    out["interrupted_turns"] = sum(1 for p in turns.values() if Event.INTERRUPTED in p)
    return out


def format_table(summary: dict[str, Any]) -> str:
    rows = [("interval", "n", "P50 ms", "P95 ms", "max ms")]
    for name, v in summary["intervals"].items():
        rows.append((name, str(v["n"]), _fmt(v["p50_ms"]), _fmt(v["p95_ms"]), _fmt(v["max_ms"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        f"turns: {summary['turns']}  interrupted: {summary['interrupted_turns']}",
        "  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i])
                  for i, h in enumerate(rows[0])),
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows[1:]:
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                               for i, c in enumerate(r)))
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.trace_summary",
                                     description="P50/P95 of agent turn traces (JSONL).")
    parser.add_argument("files", nargs="+", type=Path, help="trace files (output/traces/*.jsonl)")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    files = [f for f in args.files if not f.name.endswith(".metrics.jsonl")]
    try:
        summary = summarize(load_points(files))
    except TraceFormatError as exc:
        print(f"trace_summary: {exc}", file=sys.stderr)
        return 2
    write_json(args.json, summary)
    print(format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
