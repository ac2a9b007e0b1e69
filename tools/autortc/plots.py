"""The AutoRTC report's pictures (PNG, matplotlib's Agg backend):

- `latency.png`: the run's EoT -> first audio distribution (sorted per-case values with
  P50, P95, the gate's threshold and the golden baseline) and, per case, how it splits
  into EoT -> VAD end and VAD end -> first audio heard by the probe;
- `load.png` (the load tier, load_tier.py): P95 and P50 of EoT -> first audio against the
  concurrent conversations, with the gate and the Ks that failed their gates;
- `<case dir>/waveform.png`: what the probe recorded, with the user's speech (user_bot's
  playback, start to end of turn), the reply window (reply_start..reply_end), the first
  audio and every gap inside the reply (runs of 20 ms frames below the gap level) marked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamtalk_common.stats import percentile

from .audio_metrics import FRAME_S, frame_rms, reply_gaps
from .common import read_json, read_wav

MIN_MARKED_GAP_FRAMES = 2  # 40 ms: shorter dips are the pauses inside words


def _pyplot():  # noqa: ANN202 - matplotlib's module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_png(out: Path, rows: list[dict[str, Any]], limit_ms: float | None,
                baseline_ms: float | None) -> str | None:
    ok = [r for r in rows if r.get("eot_to_first_audio_ms") is not None]
    if not ok:
        return None
    plt = _pyplot()
    values = np.array([r["eot_to_first_audio_ms"] for r in ok])
    fig, (dist, parts) = plt.subplots(1, 2, figsize=(11, 3.6),
                                      gridspec_kw={"width_ratios": [1, 1.4]})
    order = np.sort(values)
    dist.plot(order, np.arange(1, len(order) + 1) / len(order), "o-", color="tab:blue")
    marks = [("P50", percentile(list(values), 50), "tab:green"),
             ("P95", percentile(list(values), 95), "tab:blue"),
             ("gate", limit_ms, "tab:red"), ("baseline", baseline_ms, "tab:gray")]
    for label, x, color in marks:
        if x is not None:
            dist.axvline(x, color=color, ls="--", lw=1, label=f"{label} {x:.0f} ms")
    dist.set_xlabel("EoT -> first audio at the probe (ms)")
    dist.set_ylabel("share of cases")
    dist.set_title("distribution")
    dist.legend(fontsize=7, loc="lower right")
    names = [r["case_id"] for r in ok]
    to_vad = np.array([max(0.0, r.get("eot_to_vad_end_ms") or 0.0) for r in ok])
    rest = values - to_vad
    parts.barh(names, to_vad, color="tab:orange", label="EoT -> VAD end")
    parts.barh(names, rest, left=to_vad, color="tab:blue", label="VAD end -> first audio")
    parts.set_xlabel("ms")
    parts.set_title("per case")
    parts.tick_params(axis="y", labelsize=7)
    parts.invert_yaxis()
    parts.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=80)
    plt.close(fig)
    return "latency.png"


def window_gaps(x: np.ndarray, rate: int, start_s: float,
                end_s: float) -> list[tuple[float, float]]:
    """Gaps (start_s, end_s) inside the reply window worth marking: audio_metrics.reply_gaps
    of the window, at least MIN_MARKED_GAP_FRAMES long."""
    a = int(start_s / FRAME_S)
    return [((a + s) * FRAME_S, (a + t) * FRAME_S)
            for s, t in reply_gaps(frame_rms(x, rate)[a:int(end_s / FRAME_S)])
            if t - s >= MIN_MARKED_GAP_FRAMES]


def waveform_png(case_dir: Path, title: str) -> str | None:
    full = case_dir / "post_rtc_full.wav"
    if not full.exists():  # a golden folder keeps the picture, not the full recording
        return "waveform.png" if (case_dir / "waveform.png").exists() else None
    try:
        probe = read_json(case_dir / "probe_result.json")
        user = read_json(case_dir / "user_result.json")
    except (OSError, ValueError):
        return None
    x, rate = read_wav(full)
    t0 = probe.get("first_frame_wall_ms")
    if t0 is None or not len(x):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 2.6))
    step = max(1, len(x) // 20000)  # enough points for the envelope, not millions
    ax.plot(np.arange(0, len(x), step) / rate, x[::step], lw=0.4, color="tab:blue")
    window = probe.get("reply_window_wall_ms")
    if window:
        a, b = ((w - t0) / 1000 for w in window)
        ax.axvspan(a, b, color="tab:green", alpha=0.12, label="reply window")
        for i, (g0, g1) in enumerate(window_gaps(x, rate, a, b)):
            ax.axvspan(g0, g1, color="tab:red", alpha=0.35, label="gap" if i == 0 else None)
    for i, turn in enumerate(user.get("turns") or [user]):
        if "start_wall_ms" in turn and "eot_wall_ms" in turn:
            ax.axvspan((turn["start_wall_ms"] - t0) / 1000, (turn["eot_wall_ms"] - t0) / 1000,
                       color="tab:gray", alpha=0.15, label="user speaking" if i == 0 else None)
        if "eot_wall_ms" in turn:
            ax.axvline((turn["eot_wall_ms"] - t0) / 1000, color="black", ls="--", lw=1,
                       label="user end of turn" if i == 0 else None)
    if "first_audio_wall_ms" in probe:
        ax.axvline((probe["first_audio_wall_ms"] - t0) / 1000, color="tab:orange", lw=1.2,
                   label="first audio")
    ax.set_xlim(0, len(x) / rate)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("seconds since the probe's first frame")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncol=4)
    fig.tight_layout()
    fig.savefig(case_dir / "waveform.png", dpi=80)
    plt.close(fig)
    return "waveform.png"


def load_png(path: Path, per_k: list[dict[str, Any]], limit_ms: float) -> Path:
    """The load tier's picture; `per_k` as load_tier.summary makes it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ks = [s["k"] for s in per_k]
    for key, label, style in (("eot_to_first_audio_p95_ms", "P95", "o-"),
                              ("eot_to_first_audio_p50_ms", "P50", "s--")):
        ax.plot(ks, [s[key] if s[key] is not None else float("nan") for s in per_k], style,
                label=label)
    ax.axhline(limit_ms, color="tab:red", ls=":", label=f"gate {limit_ms:.0f} ms")
    for s in per_k:
        if s["verdict"] != "PASS":
            ax.annotate("gate failed", (s["k"], s["eot_to_first_audio_p95_ms"] or limit_ms),
                        color="tab:red", textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.set_xlabel("concurrent conversations (rooms)")
    ax.set_ylabel("EoT -> first audio at the probe (ms)")
    ax.set_xticks(ks)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title("turn latency against concurrent rooms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
