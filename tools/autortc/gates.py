"""The AutoRTC gates, evaluated per profile (profiles.json: `gpu` = the targets of a GPU
deployment, `ci` = calibrated on a 2-core CPU machine), plus P1 WARN fingerprints.

Nine gates hold for every run. Five turn-taking gates hold for the cases of their
kind (turn_taking.py) and are SKIP when a run has none: premature_replies (pause),
false_stops and resume_gap_p95 (backchannel, noise), barge_in_stop_p50 and
barge_in_missed (barge_in).

PRIMARY_KPI = eot_to_probe_first_audio_p95_ms; the run fails when it is worse than
the golden baseline by more than `primary_kpi_max_regression_ms`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from streamtalk_common.stats import percentile

from .common import read_json
from .turn_taking import INTERJECTIONS

PROFILES = Path(__file__).with_name("profiles.json")
PRIMARY_KPI = "eot_to_probe_first_audio_p95_ms"

FIXES = {
    "eot_to_first_audio_p95": "check VAD end-of-speech silence, STT/LLM latency in the agent "
                              "trace (eot_to_vad_end_ms, fast_lane_ttft_ms) and TTS TTFA",
    "tts_first_to_publish_p95": "the audio sink queues too much: lower AGENT_AUDIO_QUEUE_MS, "
                                "check that TTS packets are pushed without batching",
    "audible_dropout": "holes in the received reply: check the TTS producer keeps up (RTF < 1) "
                       "and the event loop is not blocked (executor for blocking calls)",
    "max_gap": "long silence inside the reply: TTS stalls between segments or packets; "
               "check the engine's RTF and packet pacing",
    "clipping_ratio": "the reply clips: lower the TTS output gain / check int16 conversion",
    "fast_lane_ttft_p95": "the backend's first token is slow: check the Omni server load "
                          "and prompt length",
    "p0_audio_valid_rate": "the probe heard silence: check the agent published its track, "
                           "the TTS produced audio (pre_rtc.wav) and the barrier ordering",
    "inter_arrival_p95": "frames arrive in bursts: CPU starvation or a blocked loop in the "
                         "probe/agent; check load on the machine",
    "primary_kpi_regression": "end-to-end latency regressed vs the golden baseline: compare "
                              "the agent trace points turn by turn with the baseline run",
    "premature_replies": "the agent answered into the user's mid-sentence pause: the end of "
                         "turn was taken from VAD silence alone; check the end-of-turn "
                         "decision (VAD_SILENCE_MS, MIN_ENDPOINTING) in the agent trace",
    "false_stops": "a backchannel or a noise stopped the reply: check AGENT_MIN_INTERRUPTION_S, "
                   "AGENT_FALSE_INTERRUPTION_TIMEOUT_S and what the STT made of the interjection "
                   "(the agent trace and the case's waveform.png)",
    "resume_gap_p95": "a paused reply resumed late: AGENT_FALSE_INTERRUPTION_TIMEOUT_S bounds "
                      "the pause; check the duplex transitions in the agent log",
    "barge_in_stop_p50": "the reply stops late on a barge-in: VAD start of speech plus "
                         "AGENT_MIN_INTERRUPTION_S dominate (docs/AGENT.md, measured stop "
                         "latency); check the pause reached the sink",
    "barge_in_missed": "the agent did not stop and answer a real barge-in: check the agent "
                       "trace for `interrupted` and the STT of the second turn",
}


NO_DATA = "no case with capture_status OK measured it (see the cases without a valid capture)"


def load_profile(name: str) -> dict[str, Any]:
    profiles = read_json(PROFILES)["profiles"]
    if name not in profiles:
        raise SystemExit(f"unknown gate profile {name!r}; known: {sorted(profiles)}")
    return {"name": name, **profiles[name]}


def load_baseline(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SystemExit(f"golden baseline {path} does not exist (refresh it as docs/AUTORTC.md "
                         "says; `scripts/run_autortc.sh --baseline none`, or run_suite without "
                         "--baseline, skips the PRIMARY_KPI comparison)")
    return read_json(path)


def gated_values(rows: list[dict[str, Any]], key: str, p0_only: bool = False) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) is not None
            and r.get("capture_status") == "OK" and (not p0_only or r.get("priority") == "P0")]


def turn_taking_gates(rows: list[dict[str, Any]], th: dict[str, Any], gate: Any,
                      gates: list[dict[str, Any]]) -> None:
    """The five turn-taking gates; SKIP where the run had no case of their kind."""
    def skip(name: str, kinds: tuple[str, ...]) -> bool:
        if any(r.get("turn_taking") in kinds for r in rows):
            return False
        gates.append({"gate": name, "value": None, "threshold": "-", "status": "SKIP", "n": 0,
                      "fix": f"no {' or '.join(kinds)} case in this run"})
        return True

    kinds = {"premature_replies": ("pause",), "false_stops": INTERJECTIONS,
             "resume_gap_p95": INTERJECTIONS, "barge_in_stop_p50": ("barge_in",),
             "barge_in_missed": ("barge_in",)}
    if not skip("premature_replies", kinds["premature_replies"]):
        v = gated_values(rows, "premature_reply")
        gate("premature_replies", sum(v) if v else None, th["premature_replies"], "==", "",
             len(v))
    if not skip("false_stops", INTERJECTIONS):
        v = gated_values(rows, "false_stop")
        # a share of 1 in 10 allows no false stop in fewer than 10 cases: over a stability
        # set (baseline_stability.py pools the runs) the share itself is what counts
        allowed = math.floor(th["false_stop_rate"] * len(v))
        gate("false_stops", sum(v) if v else None, allowed, "<=", "", len(v))
        gates[-1]["threshold"] = f"<= {allowed} (share {th['false_stop_rate']} of {len(v)})"
    if not skip("resume_gap_p95", INTERJECTIONS):
        v = gated_values(rows, "resume_gap_ms")
        gate("resume_gap_p95", percentile(v, 95), th["resume_gap_p95_ms"], "<=", " ms", len(v))
    if not skip("barge_in_stop_p50", kinds["barge_in_stop_p50"]):
        v = gated_values(rows, "stop_latency_ms")
        gate("barge_in_stop_p50", percentile(v, 50), th["barge_in_stop_p50_ms"], "<=", " ms",
             len(v))
    if not skip("barge_in_missed", kinds["barge_in_missed"]):
        v = gated_values(rows, "barge_in_answered")
        gate("barge_in_missed", v.count(0.0) if v else None, th["barge_in_missed"], "==", "",
             len(v))


def evaluate(rows: list[dict[str, Any]], profile: dict[str, Any],
             baseline: dict[str, Any] | None) -> dict[str, Any]:
    th = profile["thresholds"]
    p0 = [r for r in rows if r.get("priority") == "P0"]
    gates: list[dict[str, Any]] = []

    def gate(name: str, value: float | None, limit: float, op: str, unit: str = "",
             n: int = 0) -> None:
        if value is None:
            status = "FAIL"  # no data is not a pass
            fix = NO_DATA
        else:
            ok = {"<=": value <= limit, "<": value < limit, "==": value == limit,
                  ">=": value >= limit}[op]
            status = "PASS" if ok else "FAIL"
            fix = "" if ok else FIXES.get(name, "")
        gates.append({"gate": name, "value": None if value is None else round(value, 4),
                      "threshold": f"{op} {limit}{unit}", "status": status, "n": n, "fix": fix})

    e2a = gated_values(rows, "eot_to_first_audio_ms")
    gate("eot_to_first_audio_p95", percentile(e2a, 95), th["eot_to_first_audio_p95_ms"], "<=",
         " ms", len(e2a))
    t2p = gated_values(rows, "tts_first_to_publish_ms")
    gate("tts_first_to_publish_p95", percentile(t2p, 95), th["tts_first_to_publish_p95_ms"], "<=",
         " ms", len(t2p))
    drop = gated_values(rows, "audible_dropout", p0_only=True)
    gate("audible_dropout", sum(drop) if drop else None, th["audible_dropout"], "==", "",
         len(drop))
    gaps = gated_values(rows, "max_gap_ms", p0_only=True)
    gate("max_gap", max(gaps) if gaps else None, th["max_gap_ms"], "<", " ms", len(gaps))
    clip = gated_values(rows, "clipping_ratio")
    gate("clipping_ratio", max(clip) if clip else None, th["clipping_ratio"], "<", "", len(clip))
    ttft = gated_values(rows, "fast_lane_ttft_ms")
    gate("fast_lane_ttft_p95", percentile(ttft, 95), th["fast_lane_ttft_p95_ms"], "<=", " ms",
         len(ttft))
    valid = [bool(r.get("audio_valid")) and r.get("capture_status") == "OK" for r in p0]
    gate("p0_audio_valid_rate", (sum(valid) / len(valid)) if valid else None,
         th["p0_audio_valid_rate"], ">=", "", len(valid))
    ia = gated_values(rows, "inter_arrival_p95_ms")
    gate("inter_arrival_p95", percentile(ia, 95), th["inter_arrival_p95_ms"], "<=", " ms", len(ia))

    turn_taking_gates(rows, th, gate, gates)

    current = percentile(e2a, 95)
    base = (baseline or {}).get("primary_kpi", {}).get("value")
    delta = None if current is None or base is None else current - base
    max_reg = th["primary_kpi_max_regression_ms"]
    if base is None:
        gates.append({"gate": "primary_kpi_regression", "value": None,
                      "threshold": f"<= baseline + {max_reg} ms", "status": "WARN",
                      "n": len(e2a), "fix": "no golden baseline given"})
    else:
        gate("primary_kpi_regression", delta, max_reg, "<=", " ms", len(e2a))
        gates[-1]["threshold"] = f"delta <= {max_reg} ms (baseline {base:.1f} ms)"

    warns: list[str] = []
    p1 = profile.get("p1_warn", {})
    for r in rows:
        if r.get("priority") != "P1":
            continue
        if r.get("input_spikes", 0) > 0:
            warns.append(f"{r['case_id']}: boom: {r['input_spikes']} spike samples in the input")
        sd = r.get("speed_drift")
        if sd is not None and abs(sd) > p1.get("speed_drift", 0.02):
            warns.append(f"{r['case_id']}: speed drift {sd:+.1%}")
        hf = r.get("hf_ratio_drop")
        if hf is not None and hf > p1.get("hf_ratio_drop", 0.5):
            warns.append(f"{r['case_id']}: distortion: 4-8 kHz share dropped {hf:.0%}")
        if r.get("capture_status") != "OK":
            warns.append(f"{r['case_id']}: P1 capture {r.get('capture_status')}")
    failed = [g for g in gates if g["status"] == "FAIL"]
    diagnoses = [f"{r['case_id']} ({r.get('capture_status')}): {r['diagnosis']}"
                 for r in rows if r.get("diagnosis")]
    measured = [g for g in failed if g["value"] is not None]
    unmeasured = [g["gate"] for g in failed if g["value"] is None]
    reasons = [f"{g['gate']}: {g['value']} (needs {g['threshold']}) -> {g['fix']}"
               for g in measured]
    if unmeasured:
        reasons.append(f"no data for {', '.join(unmeasured)}: {NO_DATA}")
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r.get("capture_status", "?")] = statuses.get(r.get("capture_status", "?"), 0) + 1
    return {
        "verdict": "FAIL" if failed else "PASS",
        "profile": profile["name"],
        "thresholds": th,
        "gates": gates,
        "fail_reasons": reasons + diagnoses,
        "case_diagnoses": diagnoses,
        "warnings": warns,
        "primary_kpi": {"name": PRIMARY_KPI,
                        "value": None if current is None else round(current, 2), "baseline": base,
                        "delta": None if delta is None else round(delta, 2),
                        "baseline_version": (baseline or {}).get("baseline_version")},
        "counts": {"cases": len(rows), "p0": len(p0), "capture_status": statuses,
                   "reply_wavs": sum(1 for r in rows if r.get("post_rms") is not None),
                   "pre_rtc_wavs": sum(1 for r in rows if r.get("pre_rms") is not None),
                   "retries": sum(int(r.get("retries", 0)) for r in rows)},
    }
