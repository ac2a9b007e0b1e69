"""The worker process's shared services: one TTS engine, one Silero VAD, one GPU scheduler,
and the end-of-turn model (agent/turn_detection.py) unless AGENT_TURN_DETECTION=vad.

Loaded once, before the worker registers (so the first room never waits for a
model load), and shared by every room the process serves: rooms run as
threads of this process (the thread job executor), each with its own event
loop, and all of them call the same `TTSEngine` (thread-safe: its worker
thread owns the model and round-robins concurrent streams) and the same VAD
model (one ONNX session; each room opens its own streams on it) and the same
end-of-turn model (a native singleton; each room's detector opens streams on it).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from livekit.agents import vad as lk_vad

from streamtalk_common.audio import INPUT_SAMPLE_RATE
from tts_engine import EngineConfig, TTSEngine
from tts_engine.config import default_model_dir
from tts_engine.heap import freeze_startup_heap

from .config import AgentConfig
from .gpu_scheduler import GpuScheduler
from .turn_detection import load_turn_model

log = logging.getLogger("streamtalk.agent")


@dataclass
class SharedServices:
    engine: TTSEngine
    vad: lk_vad.VAD
    scheduler: GpuScheduler
    engine_config: EngineConfig
    load_s: float
    turn_model_ready: bool = False  # the end-of-turn model loaded (else rooms use VAD alone)


_lock = threading.Lock()
_services: SharedServices | None = None


def load_vad(config: AgentConfig) -> lk_vad.VAD:
    from livekit.plugins import silero

    return silero.VAD.load(
        min_silence_duration=config.vad_silence_ms / 1000.0,
        activation_threshold=config.vad_threshold,
        sample_rate=INPUT_SAMPLE_RATE,
        force_cpu=True,
    )


def load_engine(engine_config: EngineConfig | None = None) -> TTSEngine:
    """The engine of TTS_DEEP_STREAM_* settings; the default tiny checkpoint is
    written if missing."""
    cfg = engine_config or EngineConfig.from_env()
    if not cfg.model_dir and not (default_model_dir() / "config.json").is_file():
        from tts_engine.checkpoint import ensure_checkpoint

        log.warning("no TTS checkpoint configured (TTS_DEEP_STREAM_MODEL_DIR): writing the tiny "
                    "random test checkpoint to %s; it sounds like noise", default_model_dir())
        ensure_checkpoint(default_model_dir(), "tiny", seed=0)
    return TTSEngine(cfg)


def get_services(config: AgentConfig | None = None) -> SharedServices:
    """The process's services, loading them on first use (thread-safe; later calls are free)."""
    global _services
    with _lock:
        if _services is not None:
            return _services
        config = config or AgentConfig.from_env()
        t0 = time.monotonic()
        if config.torch_threads:
            import torch

            torch.set_num_threads(config.torch_threads)
        engine_config = EngineConfig.from_env()
        vad = load_vad(config)
        turn_model_s = load_turn_model() if config.turn_detection == "model" else None
        engine = load_engine(engine_config)
        _services = SharedServices(
            engine=engine, vad=vad, scheduler=GpuScheduler(), engine_config=engine_config,
            load_s=time.monotonic() - t0, turn_model_ready=turn_model_s is not None,
        )
        freeze_startup_heap()  # full GC passes over this heap stalled turns by ~200 ms
        if turn_model_s is not None:
            end_of_turn = f"VAD + model (loaded in {turn_model_s:.1f} s)"
        else:
            end_of_turn = "VAD alone" + (" (the model did not load)"
                                         if config.turn_detection == "model" else "")
        log.info(
            "shared services ready in %.1f s: TTS engine on %s (model %s, load %.1f s, "
            "warm-up %.1f s, speakers %s), Silero VAD, end of turn: %s",
            _services.load_s, engine_config.torch_device, engine_config.resolved_model_dir,
            engine.load_s, engine.warmup_s, ", ".join(engine.speakers), end_of_turn,
        )
        return _services


def loaded() -> SharedServices | None:
    return _services
