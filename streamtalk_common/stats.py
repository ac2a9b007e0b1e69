"""Percentiles and latency summaries of the benchmarks, traces and gates."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

Method = Literal["linear", "nearest_rank"]


def percentile(values: Iterable[float | None], q: float, method: Method = "linear") -> float | None:
    """The q-th percentile (q in 0..100) of the values that are not None; None when none are.

    - `linear`: interpolated between the two closest ranks (NumPy's default);
    - `nearest_rank`: the smallest value with at least q% of the values at or below it.
    """
    if method not in ("linear", "nearest_rank"):
        raise ValueError(f"unknown percentile method {method!r}; valid: linear, nearest_rank")
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    if method == "nearest_rank":
        return float(xs[max(1, math.ceil(q / 100.0 * len(xs))) - 1])
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def latency_summary(values_ms: Iterable[float], digits: int = 1,
                    method: Method = "linear") -> dict[str, float | int | None]:
    """`n`, `p50_ms`, `p95_ms`, `min_ms` and `max_ms` of latencies in ms, rounded to `digits`
    (None where there are no values)."""
    xs = list(values_ms)

    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {"n": len(xs),
            "p50_ms": rounded(percentile(xs, 50, method)),
            "p95_ms": rounded(percentile(xs, 95, method)),
            "min_ms": rounded(min(xs, default=None)),
            "max_ms": rounded(max(xs, default=None))}
