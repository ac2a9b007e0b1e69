"""Render AutoRTC case WAVs from a recipe JSON (espeak-ng speech, deterministic noise, spikes).

`python -m tools.autortc.make_cases tools/autortc/cases/mini_cases.json --out DIR`
writes `DIR/<case>.wav` (and `DIR/<case>.barge.wav`) as 48 kHz 16-bit mono. The
same recipe gives the same samples on the same espeak-ng; a `.recipe` stamp
next to each WAV makes reruns reuse it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .common import read_wav, write_wav

RATE = 48000
META_FORMAT = 2  # of the .json beside each WAV; a new one re-renders cached cases


def espeak(text: str, voice: str, wpm: int) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng missing: run scripts/install_system_deps.sh")
    with tempfile.TemporaryDirectory() as d:
        raw = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text],
                       check=True, timeout=60, capture_output=True)
        x, sr = read_wav(raw)
    n_out = int(round(len(x) * RATE / sr))
    return np.interp(np.linspace(0, len(x) - 1, n_out), np.arange(len(x)), x).astype(np.float32)


def noise(kind: str, n: int, level: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "hum":
        t = np.arange(n) / RATE
        y = np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(2 * np.pi * 150 * t)
    else:
        y = rng.standard_normal(n)
        if kind == "pink":  # 1/f shaping in the frequency domain
            spec = np.fft.rfft(y)
            f = np.arange(len(spec), dtype=np.float64)
            f[0] = 1.0
            y = np.fft.irfft(spec / np.sqrt(f), n)
    y = y / (np.sqrt(np.mean(y * y)) + 1e-12) * level
    return y.astype(np.float32)


def render(spec: dict[str, Any]) -> tuple[np.ndarray, int, int]:
    """The case audio and the indices of its first and last speech samples (from the clean speech)."""
    speech = espeak(spec["text"], spec.get("voice", "en-us"), int(spec.get("wpm", 160)))
    speech = speech * float(spec.get("gain", 1.0))
    loud = np.flatnonzero(np.abs(speech) > 0.002)
    lead = int(spec.get("lead_s", 0.3) * RATE)
    first = lead + (int(loud[0]) if loud.size else 0)
    last = lead + (int(loud[-1]) if loud.size else len(speech) - 1)
    x = np.concatenate([np.zeros(lead, np.float32), speech,
                        np.zeros(int(spec.get("tail_s", 1.5) * RATE), np.float32)])
    if "noise" in spec:
        nz = spec["noise"]
        x = x + noise(nz.get("kind", "white"), len(x), float(nz["rms"]), int(nz.get("seed", 0)))
    if "spikes" in spec:  # "boom": short full-scale clicks inside the speech
        sp = spec["spikes"]
        rng = np.random.default_rng(int(sp.get("seed", 0)))
        for pos in rng.integers(lead, lead + max(1, len(speech) - 480), int(sp.get("count", 3))):
            x[pos:pos + 96] = float(sp.get("amplitude", 0.9)) * np.sign(rng.standard_normal(96))
    return np.clip(x, -1.0, 1.0), first, last


def _stamp(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([META_FORMAT, spec], sort_keys=True).encode()).hexdigest()[:16]


def make_case(case: dict[str, Any], out: Path) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    jobs = [("wav", case, out / f"{case['id']}.wav")]
    if "barge_in" in case:
        jobs.append(("barge_wav", case["barge_in"], out / f"{case['id']}.barge.wav"))
    for key, spec, path in jobs:
        stamp = path.with_suffix(".recipe")
        meta = path.with_suffix(".json")
        if not (path.exists() and stamp.exists() and meta.exists()
                and stamp.read_text() == _stamp(spec)):
            x, first, last = render(spec)
            write_wav(path, x, RATE)
            meta.write_text(json.dumps({"first_speech_sample": first, "last_speech_sample": last,
                                        "rate": RATE, "samples": len(x)}))
            stamp.write_text(_stamp(spec))
        paths[key] = path
    return paths


def load_cases(path: Path, only: list[str] | None = None) -> list[dict[str, Any]]:
    cases = json.loads(path.read_text())["cases"]
    if only:
        cases = [c for c in cases if c["id"] in only]
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    for case in load_cases(a.cases):
        for k, v in make_case(case, a.out).items():
            print(f"{case['id']:24s} {k:9s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
