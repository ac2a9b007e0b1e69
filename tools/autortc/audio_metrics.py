"""AutoRTC metrics for one case folder, in three rings (docs/AUTORTC.md defines each).

capture_status comes first; quality is computed only when capture is OK.
- Ring0 transport (reply segment only, 20 ms energy frames): post_rms, max_gap_ms,
  audible_dropout, clipping_ratio.
- Ring1 quality (pre_rtc.wav vs post_rtc_reply.wav): mel_distance (dB, -1 when a file
  is missing), hf_ratio_drop (share of 4-8 kHz energy lost).
- Ring2 latency: eot_to_first_audio_ms (user eot -> probe first audible frame),
  tts_first_to_publish_ms and fast_lane_ttft_ms (agent trace), inter_arrival_p95_ms;
  agent_turn_latency_ms, the agent's stt/llm/tts/publish breakdown of the turn
  (streamtalk_common/latency_breakdown.py, from its trace).
- P1 fingerprints (WARN only): boom (spikes in the input WAV), speed_drift, distortion.
- Turn-taking (cases whose recipe names a `turn_taking` kind): turn_taking.py. The hole
  reply 1 paused for after an interjection or barge-in is left out of rings 0 and 1 (the
  duplex's deliberate pause, measured as resume_gap_ms); a premature reply has no
  eot_to_first_audio_ms (it began before the end of turn).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from streamtalk_common.audio import SAMPLE_RATE
from streamtalk_common.latency_breakdown import LatencyBreakdown

from .common import GAP_RMS, SILENCE_RMS, read_json, read_wav, rms
from .turn_taking import summary as turn_taking_summary
from .turn_taking import turn_taking_metrics

FRAME_S = 0.020
DROPOUT_RMS = 1e-4  # digital silence
DROPOUT_MIN_MS = 40.0
CLIP_LEVEL = 0.999
BOOM_LEVEL = 0.9


def frame_rms(x: np.ndarray, rate: int, frame_s: float = FRAME_S) -> np.ndarray:
    n = max(1, int(rate * frame_s))
    k = len(x) // n
    if k == 0:
        return np.zeros(0)
    f = x[: k * n].astype(np.float64).reshape(k, n)
    return np.sqrt(np.mean(f * f, axis=1))


def active_span(e: np.ndarray, level: float = SILENCE_RMS) -> tuple[int, int] | None:
    idx = np.flatnonzero(e >= level)
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else None


def silent_runs(e: np.ndarray, level: float) -> list[tuple[int, int]]:
    """The runs of frames below `level`, as [start, end) frame indices."""
    below = np.concatenate(([False], np.asarray(e) < level, [False]))
    edges = np.flatnonzero(np.diff(below.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def reply_gaps(e: np.ndarray) -> list[tuple[int, int]]:
    """Runs of 20 ms frames below GAP_RMS between the first and last audible frame of the
    energy frames `e` ([start, end) indices into `e`)."""
    span = active_span(e)
    if span is None:
        return []
    return [(span[0] + a, span[0] + b) for a, b in silent_runs(e[span[0]:span[1]], GAP_RMS)]


def max_gap_ms(x: np.ndarray, rate: int) -> float:
    """Longest silence between the first and last audible 20 ms frame of a reply segment."""
    return max((b - a for a, b in reply_gaps(frame_rms(x, rate))), default=0) * FRAME_S * 1000


def gap_share(x: np.ndarray, rate: int) -> float:
    """The share of a reply segment's 20 ms frames, between its first and last audible one,
    that lie in gaps (0 when nothing is audible)."""
    e = frame_rms(x, rate)
    span = active_span(e)
    if span is None:
        return 0.0
    return sum(b - a for a, b in reply_gaps(e)) / (span[1] - span[0])


def dropout_count(x: np.ndarray, rate: int) -> int:
    e = frame_rms(x, rate, 0.010)
    span = active_span(e)
    if span is None:
        return 0
    min_frames = int(DROPOUT_MIN_MS / 10)
    return sum(1 for a, b in silent_runs(e[span[0]:span[1]], DROPOUT_RMS)
               if b - a >= min_frames)


def audible_dropout(post: np.ndarray, post_rate: int, pre: np.ndarray | None,
                    pre_rate: int = SAMPLE_RATE) -> int:
    """Digital-silence holes in the post reply that the agent did not send itself."""
    d = dropout_count(post, post_rate)
    if pre is not None and len(pre):
        d -= dropout_count(pre, pre_rate)
    return max(0, d)


def clipping_ratio(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x) >= CLIP_LEVEL)) if len(x) else 0.0


def _mel_fb(n_fft: int, rate: int, n_mels: int = 40, fmax: float = 8000.0) -> np.ndarray:
    def hz2mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    mels = np.linspace(hz2mel(60.0), hz2mel(min(fmax, rate / 2)), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    fb = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, c, hi = hz[m], hz[m + 1], hz[m + 2]
        fb[m] = np.clip(np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), 0, None)
    return fb


def _spectrum(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Time-averaged power spectrum of the audible 25 ms frames, and its frequencies."""
    n = int(rate * 0.025)
    hop = int(rate * 0.010)
    if len(x) < n:
        return None
    idx = np.arange(0, len(x) - n + 1, hop)
    frames = np.stack([x[i:i + n] for i in idx]).astype(np.float64)
    loud = np.sqrt(np.mean(frames ** 2, axis=1)) >= SILENCE_RMS
    if not loud.any():
        return None
    spec = np.abs(np.fft.rfft(frames[loud] * np.hanning(n), axis=1)) ** 2
    return spec.mean(axis=0), np.fft.rfftfreq(n, 1.0 / rate)


def mel_distance(pre: np.ndarray, pre_rate: int, post: np.ndarray, post_rate: int) -> float:
    """Mean absolute difference (dB) of the level-normalised time-averaged log-mel spectra."""
    a, b = _spectrum(pre, pre_rate), _spectrum(post, post_rate)
    if a is None or b is None:
        return -1.0
    out = []
    for (p, _), rate in ((a, pre_rate), (b, post_rate)):
        n_fft = (len(p) - 1) * 2
        m = _mel_fb(n_fft, rate) @ p
        db = 10 * np.log10(m + 1e-12)
        out.append(db - db.mean())
    return float(np.mean(np.abs(out[0] - out[1])))


def hf_ratio(x: np.ndarray, rate: int) -> float | None:
    s = _spectrum(x, rate)
    if s is None:
        return None
    p, f = s
    band = p[(f >= 4000) & (f < 8000)].sum()
    total = p[(f >= 60) & (f < 8000)].sum()
    return float(band / total) if total > 0 else None


def hf_ratio_drop(pre: np.ndarray, pre_rate: int, post: np.ndarray, post_rate: int) -> float | None:
    a, b = hf_ratio(pre, pre_rate), hf_ratio(post, post_rate)
    if a is None or b is None or a <= 0:
        return None
    return float(1.0 - b / a)


def trace_points(path: Path, turn: int = 1) -> dict[str, float]:
    if not path.exists():
        return {}
    pts: dict[str, float] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            e = json.loads(line)
            if e.get("turn") == turn:
                pts.setdefault(e["point"], float(e["t_wall_ms"]))
    return pts


def inter_arrival_p95(probe: dict[str, Any]) -> float | None:
    frames, span = probe.get("frames") or [], probe.get("reply_frames")
    if not span or span[1] - span[0] < 3:
        return None
    t = np.array([f[0] for f in frames[span[0]:span[1]]])
    return float(np.percentile(np.diff(t), 95))


def without_hole(post: np.ndarray, probe: dict[str, Any], hole: list[float]) -> np.ndarray:
    """The reply WAV without the samples of the probe frames that arrived inside `hole`
    ([start, end) wall ms); unchanged when the probe's frames had no fixed size."""
    size, span = probe.get("frame_samples"), probe.get("reply_frames")
    if not size or not span:
        return post
    t = np.array([f[0] for f in probe["frames"][span[0]:span[1]]], dtype=np.float64)
    a, b = (int(np.searchsorted(t, w)) * size for w in hole)
    return np.concatenate([post[:a], post[b:]])


def diagnose(row: dict[str, Any]) -> str:
    """One readable sentence on why a capture is not OK, from what the agent sent
    (pre_rtc.wav) against what the probe heard."""
    status, pre = row.get("capture_status"), row.get("pre_rms")
    heard = f"the probe heard rms {max(row.get('reply_rms', 0), row.get('full_rms', 0)):.4f}"
    if status == "BOT_ERROR":
        return f"a bot failed: {row.get('error')}"
    if status == "NO_REPLY":
        return ("the agent never announced a reply (no reply_start): no transcript or no LLM "
                "answer; see the agent trace and log")
    if status == "POST_SILENT" and pre is not None and pre >= SILENCE_RMS:
        return (f"the agent's TTS made audible audio (pre_rtc rms {pre:.4f}) but {heard}: "
                "the audio was lost between the agent's sink and the room (muted or "
                "unpublished track, wrong track subscribed)")
    if status == "POST_SILENT":
        return (f"{heard} and the agent's own output was silent or missing (pre_rtc rms "
                f"{'-' if pre is None else f'{pre:.4f}'}): the TTS produced no audio")
    if status == "REPLY_SILENT":
        return "audio arrived, but none of it inside the reply window (reply_start..reply_end)"
    return ""


def case_metrics(cdir: Path, case: dict[str, Any],
                 input_wav: Path | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"case_id": case["id"], "priority": case.get("priority", "P0")}
    if case.get("turn_taking"):
        row["turn_taking"] = case["turn_taking"]
    try:
        probe = read_json(cdir / "probe_result.json")
        user = read_json(cdir / "user_result.json")
    except (OSError, ValueError) as exc:
        row["capture_status"] = "BOT_ERROR"
        row["error"] = f"bot result missing: {exc}"
        return row
    row["reply_rms"] = round(float(probe.get("reply_rms", 0.0)), 5)
    row["full_rms"] = round(float(probe.get("full_rms", 0.0)), 5)
    row["audio_valid"] = max(row["reply_rms"], row["full_rms"]) >= SILENCE_RMS
    if not probe.get("ok") or not user.get("ok"):
        row["capture_status"] = "BOT_ERROR"
        row["error"] = probe.get("error") or user.get("error") or "bot failed"
    elif probe.get("reply_start") is None:
        row["capture_status"] = "NO_REPLY"
    elif not row["audio_valid"]:
        row["capture_status"] = "POST_SILENT"
    elif "first_audio_wall_ms" not in probe:
        row["capture_status"] = "REPLY_SILENT"
    else:
        row["capture_status"] = "OK"
    pts = trace_points(cdir / "agent_trace.jsonl", 1)
    if "tts_first_packet" in pts and "first_audio_published" in pts:
        row["tts_first_to_publish_ms"] = pts["first_audio_published"] - pts["tts_first_packet"]
    if "llm_request" in pts and "llm_first_token" in pts:
        row["fast_lane_ttft_ms"] = pts["llm_first_token"] - pts["llm_request"]
    breakdown = LatencyBreakdown.from_points(1, pts)
    if breakdown is not None:  # the agent's own stages, as it publishes them to the room
        row["agent_turn_latency_ms"] = breakdown.segments_ms()
    if row["capture_status"] == "OK" and case.get("turn_taking"):
        row.update(turn_taking_metrics(case["turn_taking"], probe, user))
        row["turn_taking_summary"] = turn_taking_summary(row)
    if ("eot_wall_ms" in user and "first_audio_wall_ms" in probe
            and not row.get("premature_reply")):
        row["eot_to_first_audio_ms"] = probe["first_audio_wall_ms"] - user["eot_wall_ms"]
    if "vad_end" in pts and "eot_wall_ms" in user:
        row["eot_to_vad_end_ms"] = pts["vad_end"] - user["eot_wall_ms"]
    if input_wav is not None and input_wav.exists():
        case_wav, _ = read_wav(input_wav)
        row["input_spikes"] = int(np.sum(np.abs(case_wav) >= BOOM_LEVEL))
    pre: np.ndarray | None = None
    pre_rate = SAMPLE_RATE
    if (cdir / "pre_rtc.wav").exists():
        pre, pre_rate = read_wav(cdir / "pre_rtc.wav")
        row["pre_rms"] = round(rms(pre), 5)
    if row["capture_status"] != "OK":
        row["mel_distance"] = -1.0
        row["diagnosis"] = diagnose(row)
        return row
    post, prate = read_wav(cdir / "post_rtc_reply.wav")
    if "interjection_hole_wall_ms" in row:
        post = without_hole(post, probe, row["interjection_hole_wall_ms"])
    row["post_rms"] = round(rms(post), 5)
    row["max_gap_ms"] = round(max_gap_ms(post, prate), 1)
    row["clipping_ratio"] = clipping_ratio(post)
    row["inter_arrival_p95_ms"] = inter_arrival_p95(probe)
    row["audible_dropout"] = audible_dropout(post, prate, pre, pre_rate)
    if pre is None or not len(pre):
        row["pre_status"] = "PRE_MISSING"
        row["mel_distance"] = -1.0
        return row
    row["pre_status"] = "OK"
    row["mel_distance"] = round(mel_distance(pre, pre_rate, post, prate), 3)
    drop = hf_ratio_drop(pre, pre_rate, post, prate)
    row["hf_ratio_drop"] = None if drop is None else round(drop, 4)
    interrupted = any(e.get("type") == "reply_end" and e.get("interrupted")
                      for e in probe.get("agent_events", []))
    if not interrupted and int(case.get("expect_replies", 1)) == 1:
        ep, eq = frame_rms(pre, pre_rate), frame_rms(post, prate)
        sp, sq = active_span(ep), active_span(eq)
        if sp and sq:
            row["speed_drift"] = round((sq[1] - sq[0]) / (sp[1] - sp[0]) - 1.0, 4)
    return row
