"""Turn-taking metrics of one AutoRTC case: what the probe heard (10 ms frames with their
arrival wall times), the agent's reply events and the user bot's turns, all in wall ms.

A recipe names what it tests with `"turn_taking"`:
- `pause`: the user pauses mid-sentence and says nothing after the end of turn, so one
  reply, started after the eot and played to its end, is right. `premature_reply` is 1
  when agent audio reached the probe after the user's speech onset and before their final
  end of turn (`premature_lead_ms`: how long before it), or when reply 1 was given up
  (interrupted) after the eot although the user was silent: the agent had answered the
  first half and dropped that answer for the whole (`premature_superseded`). A slow
  pipeline can land an answer to the first half just after the eot; the second sign
  catches it.
- `backchannel`, `noise`: an interjection ("mm-hmm", a cough) during reply 1. The reply must
  go on: `reply_completed` (reply 1 ended without being interrupted and no reply 2
  started; `false_stop` is its negation) and `resume_gap_ms`, the longest hole in reply 1
  after the interjection's onset that audio followed again (0 when the reply played
  through).
- `barge_in`: a real interruption. `stop_latency_ms` = the barge-in's speech onset -> the
  start of the first QUIET_RUN_MS of frames below QUIET_RMS at the probe (the definition of
  tests/integration/test_agent_e2e.py and docs/AGENT.md); `barge_in_answered` = reply 1 was
  interrupted and a reply 2 started.
An interjection or barge-in that came after reply 1 had already ended tests nothing: its
metrics stay None and `turn_taking_void` says why.

In backchannel, noise and barge-in cases, reply 1's longest hole after the onset that its
audio followed again (`interjection_hole_wall_ms`) is the duplex's deliberate pause (held
up to AGENT_FALSE_INTERRUPTION_TIMEOUT_S), not a transport stall: ring 0 (max gap,
dropouts) leaves it out; for a completed reply it is the resume gap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import GAP_RMS, SILENCE_RMS

KINDS = ("pause", "backchannel", "noise", "barge_in")
INTERJECTIONS = ("backchannel", "noise")
QUIET_RMS = 0.005
QUIET_RUN_MS = 400.0


def frame_arrays(probe: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Arrival wall times (ms) and RMS of the probe's frames."""
    frames = probe.get("frames") or []
    return (np.array([f[0] for f in frames], dtype=np.float64),
            np.array([f[1] for f in frames], dtype=np.float64))


def first_audible(t: np.ndarray, r: np.ndarray, since: float, until: float) -> float | None:
    """Arrival time of the first audible frame in [since, until), else None."""
    idx = np.flatnonzero((t >= since) & (t < until) & (r >= SILENCE_RMS))
    return float(t[idx[0]]) if idx.size else None


def quiet_from(t: np.ndarray, r: np.ndarray, since: float) -> float | None:
    """Start of the first run of frames below QUIET_RMS lasting QUIET_RUN_MS after `since`."""
    run_start: float | None = None
    for ti, ri in zip(t, r, strict=True):
        if ti < since:
            continue
        if ri >= QUIET_RMS:
            run_start = None
        elif run_start is None:
            run_start = float(ti)
        if run_start is not None and ti - run_start >= QUIET_RUN_MS:
            return run_start
    return None


def longest_hole(t: np.ndarray, r: np.ndarray, since: float, until: float
                 ) -> tuple[float, float] | None:
    """The longest run of frames below GAP_RMS (ring 0's gap level) in [since, until) that
    audio followed again inside the window: (its first quiet frame, the first frame after
    it), else None."""
    inside = np.flatnonzero((t >= since) & (t < until))
    best: tuple[float, float] | None = None
    start: float | None = None
    for i in inside:
        if r[i] < GAP_RMS:
            start = float(t[i]) if start is None else start
        elif start is not None:
            if best is None or t[i] - start > best[1] - best[0]:
                best = (start, float(t[i]))
            start = None
    return best


def _event(probe: dict[str, Any], kind: str, seq: int) -> dict[str, Any] | None:
    return next((e for e in probe.get("agent_events", [])
                 if e.get("type") == kind and e.get("reply_seq") == seq), None)


def _reply_playing_at(t: np.ndarray, r: np.ndarray, onset: float) -> bool:
    """Reply audio arrived in the 200 ms before `onset` (the interjection met a reply)."""
    return first_audible(t, r, onset - 200.0, onset) is not None


def pause_metrics(t: np.ndarray, r: np.ndarray, probe: dict[str, Any],
                  turn: dict[str, Any]) -> dict[str, Any]:
    onset, eot = turn["onset_wall_ms"], turn["eot_wall_ms"]
    first = first_audible(t, r, onset, eot)
    end1 = _event(probe, "reply_end", 1)
    superseded = bool(end1 and end1.get("interrupted") and end1["t_wall_ms"] > eot)
    row: dict[str, Any] = {"premature_reply": int(first is not None or superseded),
                           "premature_superseded": superseded,
                           "user_pause_ms": sum(b - a for a, b in turn.get("pauses_wall_ms", []))}
    if first is not None:
        row["premature_lead_ms"] = eot - first
    return row


def interjection_hole(t: np.ndarray, r: np.ndarray, probe: dict[str, Any],
                      onset: float) -> dict[str, Any]:
    """{"interjection_hole_wall_ms": [a, b]} for reply 1's longest hole after `onset` inside
    the probe's reply window, or {} when it has none (or the probe sliced no reply)."""
    window = probe.get("reply_window_wall_ms")
    hole = longest_hole(t, r, onset, window[1]) if window else None
    return {} if hole is None else {"interjection_hole_wall_ms": [hole[0], hole[1]]}


def interjection_metrics(t: np.ndarray, r: np.ndarray, probe: dict[str, Any],
                         onset: float) -> dict[str, Any]:
    if not _reply_playing_at(t, r, onset):
        return {"turn_taking_void": "the interjection came when reply 1 was not playing"}
    end1 = _event(probe, "reply_end", 1)
    completed = (end1 is not None and not end1.get("interrupted")
                 and _event(probe, "reply_start", 2) is None)
    row: dict[str, Any] = {"reply_completed": completed, "false_stop": int(not completed),
                           **interjection_hole(t, r, probe, onset)}
    if completed:
        hole = row.get("interjection_hole_wall_ms")
        row["resume_gap_ms"] = 0.0 if hole is None else hole[1] - hole[0]
    return row


def barge_in_metrics(t: np.ndarray, r: np.ndarray, probe: dict[str, Any],
                     onset: float) -> dict[str, Any]:
    if not _reply_playing_at(t, r, onset):
        return {"turn_taking_void": "the barge-in came when reply 1 was not playing"}
    end1 = _event(probe, "reply_end", 1)
    interrupted = bool(end1 and end1.get("interrupted"))
    row: dict[str, Any] = {"barge_in_answered": interrupted
                           and _event(probe, "reply_start", 2) is not None,
                           **interjection_hole(t, r, probe, onset)}
    stop = quiet_from(t, r, onset) if interrupted else None
    if stop is not None:
        row["stop_latency_ms"] = stop - onset
    return row


def turn_taking_metrics(kind: str, probe: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """The metrics of a `kind` case (KINDS); {} when the user bot's turns lack the timing."""
    if kind not in KINDS:
        raise ValueError(f"unknown turn_taking kind {kind!r}; known: {', '.join(KINDS)}")
    turns = user.get("turns") or []
    t, r = frame_arrays(probe)
    row: dict[str, Any] = {"turn_taking": kind}
    if kind == "pause" and turns and "onset_wall_ms" in turns[0]:
        row.update(pause_metrics(t, r, probe, turns[0]))
    elif kind != "pause" and len(turns) > 1 and "onset_wall_ms" in turns[1]:
        onset = turns[1]["onset_wall_ms"]
        row.update(barge_in_metrics(t, r, probe, onset) if kind == "barge_in"
                   else interjection_metrics(t, r, probe, onset))
    else:
        row["turn_taking_void"] = "the user bot's result has no onset for the turn"
    return row


def summary(row: dict[str, Any]) -> str:
    """One short phrase for the report's case table."""
    if row.get("turn_taking_void"):
        return f"void: {row['turn_taking_void']}"
    parts = []
    if row.get("premature_lead_ms") is not None:
        parts.append(f"PREMATURE reply {row['premature_lead_ms']:.0f} ms before eot")
    elif row.get("premature_superseded"):
        parts.append("PREMATURE reply to the first half, given up after eot")
    elif "premature_reply" in row:
        parts.append("no premature reply")
    if "false_stop" in row:
        parts.append("FALSE STOP" if row["false_stop"] else "reply completed")
    if row.get("resume_gap_ms") is not None:
        parts.append(f"resume gap {row['resume_gap_ms']:.0f} ms")
    if "barge_in_answered" in row:
        parts.append("stopped and answered" if row["barge_in_answered"] else "NOT ANSWERED")
    if row.get("stop_latency_ms") is not None:
        parts.append(f"stop {row['stop_latency_ms']:.0f} ms")
    return ", ".join(parts)
