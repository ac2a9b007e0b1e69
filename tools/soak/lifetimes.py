"""A service's process lifetimes within a soak, and the gaps between them.

A service run under scripts/keep_running.sh (the agent worker: a recycled worker exits and
a fresh one starts) keeps its process group, but its worker process changes: the samples
(procstat.py) name the group leader's children, and a new child starts a new lifetime.
Samples with no child (after an exit, before the next start) belong to no lifetime, nor do
a fresh worker's samples before it registered with LiveKit (it was loading its engine,
not serving). A service that runs all the soak in one process has one lifetime. Resident
memory grows within a lifetime and falls at a restart, so the slope is taken per
lifetime: the slope of a process, whatever the restarts bound.

The gap a user would see: the worker's log holds keep_running.sh's line when a worker
exited, and the livekit-agents line "registered worker" when the next one was accepted by
LiveKit; a room that arrived in between waited that long for an agent (or its dispatch
was retried by the room reconciler).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from agent.recycle import RECYCLE_EXIT_CODE
from streamtalk_common.stack import REGISTERED_LINE

from .procstat import Sample, slope_per_min

MIN_SLOPE_SAMPLES = 12  # fewer samples give a noise slope (one minute at the default 5 s)
EXIT_LINE = re.compile(r"^\[keep_running (?P<at>\S+)\] (?P<name>\S+) exited with status "
                       r"(?P<status>\d+) after (?P<up>\d+) s")


def split(series: list[Sample]) -> list[list[Sample]]:
    """The series cut wherever the leader's children change; runs without a child are
    dropped when the service had children at all (the gap of a restart)."""
    runs: list[list[Sample]] = []
    for sample in series:
        if runs and runs[-1][0].children == sample.children:
            runs[-1].append(sample)
        else:
            runs.append([sample])
    with_child = [run for run in runs if run[0].children]
    return with_child if with_child and len(runs) > 1 else runs


def serving(runs: list[list[Sample]], registered: list[float]) -> list[list[Sample]]:
    """Each run from its worker's registration on (`registered`: on the samples' clock),
    where the worker registered after the run began: it started during the soak."""
    out = []
    for run in runs:
        started = [t for t in registered if run[0].t < t <= run[-1].t]
        if started:
            run = [s for s in run if s.t >= started[0]]
        if run:
            out.append(run)
    return out


def summary(run: list[Sample], t0: float) -> dict[str, Any]:
    times = [s.t - t0 for s in run]
    rss = [s.rss_mib for s in run]
    return {"start_s": round(times[0], 1), "end_s": round(times[-1], 1), "samples": len(run),
            "rss_mib_start": round(rss[0], 1), "rss_mib_end": round(rss[-1], 1),
            "rss_mib_peak": round(max(rss), 1),
            "rss_slope_mib_per_min": (round(slope_per_min(times, rss), 3)
                                      if len(run) >= MIN_SLOPE_SAMPLES else None)}


def process_slope(runs: list[dict[str, Any]]) -> float:
    """The steepest slope of a lifetime long enough to have one; else of the longest."""
    slopes = [r["rss_slope_mib_per_min"] for r in runs if r["rss_slope_mib_per_min"] is not None]
    if slopes:
        return max(slopes)
    return max(runs, key=lambda r: r["samples"])["rss_slope_mib_per_min"] or 0.0


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def registrations(log_text: str) -> list[datetime]:
    """When each worker of the log registered with LiveKit (its livekit-agents JSON line)."""
    registered = []
    for line in log_text.splitlines():
        if REGISTERED_LINE in line and line.startswith("{"):
            try:
                registered.append(_when(json.loads(line)["timestamp"]))
            except (ValueError, KeyError):
                continue
    return registered


def restarts(log_text: str) -> list[dict[str, Any]]:
    """Each exit keep_running.sh logged, with the seconds until the next worker registered
    (None: none registered after it)."""
    exits = [{"at": m["at"], "status": int(m["status"]), "up_s": int(m["up"]),
              "recycled": int(m["status"]) == RECYCLE_EXIT_CODE}
             for m in map(EXIT_LINE.match, log_text.splitlines()) if m]
    registered = registrations(log_text)
    for e in exits:
        exited = _when(e["at"])
        later = [r for r in registered if r > exited]
        e["registered_after_s"] = round((min(later) - exited).total_seconds(), 1) if later else None
    return exits
