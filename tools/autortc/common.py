"""Shared helpers of the AutoRTC tools: float WAV I/O, protocol names, small JSON utilities."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamtalk_common import audio

TOPIC_PROBE = "autortc.probe"
TOPIC_AGENT = "autortc.agent"
SILENCE_RMS = 0.01  # valid capture: max(reply_rms, full_rms) >= this
GAP_RMS = 0.003  # a frame quieter than this is "no audio" inside a reply (-50 dBFS)
FRAME_MS = 10
# AutoRTC measures what LiveKit carries, int16 frames, on the full int16 scale
FULL_SCALE = 32768.0


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit mono WAV -> float32 samples in [-1, 1) and the rate."""
    pcm, rate = audio.read_wav(path)
    return pcm.astype(np.float32) / FULL_SCALE, rate


def write_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    """float samples (clipped to the int16 range) -> 16-bit mono WAV at `path`."""
    pcm = np.clip(np.asarray(x, dtype=np.float64) * FULL_SCALE, -32768, 32767).astype(np.int16)
    audio.write_wav(path, pcm, rate)
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
                "error": f"{name} timed out after {args.timeout_s:.0f} s",
                "agent_events": bot.events}
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
