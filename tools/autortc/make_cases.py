"""Render AutoRTC case WAVs from a recipe JSON (espeak-ng speech, deterministic noise, spikes).

`python -m tools.autortc.make_cases tools/autortc/cases/mini_cases.json --out DIR`
writes `DIR/<case>.wav` (and `DIR/<case>.barge.wav`) as 48 kHz 16-bit mono. The
same recipe gives the same samples on the same espeak-ng; a `.recipe` stamp
next to each WAV makes reruns reuse it.

A recipe speaks `text`; `then: [{"pause_s", "text"}, ...]` continues the same
utterance after a silence (a mid-sentence pause: the silence lies between the
last loud sample of one part and the first of the next). Instead of `text`, a
recipe may be a `burst` (a cough or knock: noise with a sharp attack and an
exponential decay). The sidecar `<wav>.json` holds the timing the metrics
need: the first and last speech sample and the pauses, as sample indices.
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
from .turn_taking import KINDS

RATE = 48000
SIDECAR_VERSION = 2  # 2: first speech sample and pauses besides the last speech sample
SPEECH_FLOOR = 0.002  # |sample| above this in the clean speech counts as speech


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


def burst(spec: dict[str, Any]) -> np.ndarray:
    """A cough-like noise burst: 5 ms attack, then an exponential decay over `seconds`."""
    n = int(float(spec.get("seconds", 0.3)) * RATE)
    if n <= 0:
        raise ValueError(f"burst seconds must be > 0, got {spec.get('seconds')!r}")
    t = np.arange(n) / RATE
    env = np.minimum(1.0, t / 0.005) * np.exp(-t / (n / RATE / 4))
    return noise(spec.get("kind", "pink"), n, float(spec.get("rms", 0.1)), int(spec.get("seed", 0))
                 ) * env.astype(np.float32)


def loud_span(x: np.ndarray) -> tuple[int, int]:
    """[first, last] index of the samples above the speech floor (the whole clip if none)."""
    loud = np.flatnonzero(np.abs(x) > SPEECH_FLOOR)
    return (int(loud[0]), int(loud[-1])) if loud.size else (0, len(x) - 1)


def utterance(spec: dict[str, Any]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The clean speech (or burst) of a recipe and its pauses ([start, end) sample indices)."""
    if "burst" in spec:
        return burst(spec["burst"]), []
    if not str(spec.get("text", "")).strip():
        raise ValueError(f"a case recipe needs a 'text' or a 'burst': {spec}")
    voice, wpm = spec.get("voice", "en-us"), int(spec.get("wpm", 160))
    x = espeak(spec["text"], voice, wpm)
    pauses = []
    for part in spec.get("then", []):
        pause_s = part.get("pause_s")
        if not isinstance(pause_s, int | float) or pause_s <= 0 or not part.get("text"):
            raise ValueError(f"each 'then' part needs a 'pause_s' > 0 and a 'text', got {part}")
        nxt = espeak(part["text"], voice, wpm)
        x = x[:loud_span(x)[1] + 1]
        pauses.append((len(x), len(x) + int(pause_s * RATE)))
        x = np.concatenate([x, np.zeros(int(pause_s * RATE), np.float32), nxt[loud_span(nxt)[0]:]])
    return x, pauses


def render(spec: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The case audio and its timing: first and last speech sample (from the clean speech)
    and the pauses inside the utterance, as sample indices into the case audio."""
    speech, pauses = utterance(spec)
    speech = speech * float(spec.get("gain", 1.0))
    lead = int(spec.get("lead_s", 0.3) * RATE)
    first, last = loud_span(speech)
    timing = {"first_speech_sample": lead + first, "last_speech_sample": lead + last,
              "pauses": [[lead + a, lead + b] for a, b in pauses]}
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
    return np.clip(x, -1.0, 1.0), timing


def _stamp(spec: dict[str, Any]) -> str:
    # the sidecar's format is part of the stamp: a cache from an older format is re-rendered
    key = {"recipe": spec, "sidecar": SIDECAR_VERSION}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


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
            x, timing = render(spec)
            write_wav(path, x, RATE)
            meta.write_text(json.dumps({**timing, "rate": RATE, "samples": len(x)}))
            stamp.write_text(_stamp(spec))
        paths[key] = path
    return paths


def check_case(case: dict[str, Any]) -> None:
    """Refuse a recipe whose turn-taking kind is unknown or lacks the second turn it needs."""
    kind = case.get("turn_taking")
    if kind is None:
        return
    if kind not in KINDS:
        raise SystemExit(f"case {case['id']}: unknown turn_taking {kind!r}; known: "
                         f"{', '.join(KINDS)}")
    if kind == "pause" and not case.get("then"):
        raise SystemExit(f"case {case['id']}: a pause case needs 'then' parts after a pause")
    if kind != "pause" and "barge_in" not in case:
        raise SystemExit(f"case {case['id']}: a {kind} case needs a 'barge_in' recipe (what "
                         "the user says or does during the reply)")


def load_cases(path: Path, only: list[str] | None = None) -> list[dict[str, Any]]:
    cases = json.loads(path.read_text())["cases"]
    for case in cases:
        check_case(case)
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
