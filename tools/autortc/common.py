"""Shared helpers of the AutoRTC tools: WAV I/O, protocol names, small JSON utilities."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import wave
from pathlib import Path
from typing import Any, Protocol

import numpy as np

TOPIC_PROBE = "autortc.probe"
TOPIC_AGENT = "autortc.agent"
SILENCE_RMS = 0.01  # valid capture: max(reply_rms, full_rms) >= this
GAP_RMS = 0.003  # a frame quieter than this is "no audio" inside a reply (-50 dBFS)
FRAME_MS = 10
REPO_ROOT = Path(__file__).resolve().parents[2]


def output_root() -> Path:
    return Path(os.environ.get("STREAMTALK_OUTPUT") or REPO_ROOT / "output")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit mono WAV -> float32 samples in [-1, 1] and the rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono WAV")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return pcm.astype(np.float32) / 32768.0, w.getframerate()


def write_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.asarray(x, dtype=np.float64) * 32768.0, -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def percentile(values: list[float], q: float) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return float(np.percentile(np.asarray(vals, dtype=np.float64), q))


def bot_arg_parser(description: str) -> argparse.ArgumentParser:
    """The arguments both bots take (run_suite passes the same values to each)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--trace-id", required=True)
    p.add_argument("--case-id", required=True)
    p.add_argument("--expect-replies", type=int, default=1)
    p.add_argument("--ready-timeout-s", type=float, default=30.0)
    p.add_argument("--timeout-s", type=float, default=90.0)
    return p


class Bot(Protocol):
    events: list[dict[str, Any]]

    async def run(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


async def run_bounded(bot: Bot, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """`bot.run()` within --timeout-s: a timeout becomes a failed result, never a hang;
    the bot leaves the room either way."""
    try:
        return await asyncio.wait_for(bot.run(), args.timeout_s)
    except TimeoutError:
        return {"trace_id": args.trace_id, "case_id": args.case_id, "ok": False,
                "error": f"{name} timed out after {args.timeout_s:.0f} s", "agent_events": bot.events}
    finally:
        await bot.close()


def agent_event(topic: str, data: bytes, args: argparse.Namespace) -> dict[str, Any] | None:
    """An `autortc.agent` packet of this case (trace_id and case_id both match: stale events
    of an earlier process are dropped), stamped with its arrival time; else None."""
    if topic != TOPIC_AGENT:
        return None
    try:
        msg = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (not isinstance(msg, dict) or msg.get("trace_id") != args.trace_id
            or msg.get("case_id") != args.case_id):
        return None
    msg["t_recv_wall_ms"] = time.time() * 1000
    return msg
