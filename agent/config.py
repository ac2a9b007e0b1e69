"""Agent configuration: one process-wide AgentConfig (env) and per-room RoomSettings.

AgentConfig is read once per worker process from the environment (the table is in
docs/AGENT.md): AGENT_* for the agent's own knobs, OMNI_* and LLM_* for the backend,
VAD_*, MIN_/MAX_ENDPOINTING and ENABLE_CONTINUATION for turn taking. TTS_* is the
engine's prefix (tts_engine/config.py), so the agent's voice and frame knobs are
AGENT_SPEAKER, AGENT_LANGUAGE and AGENT_FRAME_MS; their old names TTS_SPEAKER,
TTS_LANGUAGE and TTS_FRAME_MS still work, with a deprecation warning. RoomSettings are the
per-conversation choices (system prompt, voice, language, LLM sampling, AutoRTC
ids): dispatch metadata JSON wins over the environment, a bad value falls back
to the default with a warning instead of failing the room.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from streamtalk_common.paths import output_root

from . import AGENT_NAME_DEFAULT
from .errors import AgentConfigError
from .turn_detection import MODEL_MIN_VAD_SILENCE_MS, TURN_DETECTION_MODES

log = logging.getLogger("streamtalk.agent")

DEFAULT_SYSTEM_PROMPT = (
    "You are streamtalk, a friendly voice assistant. You are heard, not read: answer in "
    "short, natural spoken sentences, without markdown, lists, code or emoji."
)
DEFAULT_BACKEND_DOWN_MESSAGE = "Sorry, my language model is not reachable right now. Please try again in a moment."
DEFAULT_STT_DOWN_MESSAGE = "Sorry, I could not reach the speech recognizer. Please try again in a moment."
# the VAD's end-of-speech hangover when VAD alone ends turns; with the end-of-turn model it
# must be at least MODEL_MIN_VAD_SILENCE_MS (250), the default then
VAD_SILENCE_MS_VAD_ONLY = 200
# old name -> new name: knobs that moved off the engine's TTS_ prefix
RENAMED_KNOBS = {"TTS_SPEAKER": "AGENT_SPEAKER", "TTS_LANGUAGE": "AGENT_LANGUAGE",
                 "TTS_FRAME_MS": "AGENT_FRAME_MS"}


def _accept_renamed(env: dict[str, str]) -> None:
    """Give a knob set under its old name to its new name, with a deprecation warning."""
    for old, new in RENAMED_KNOBS.items():
        if _get(env, old) is None:
            continue
        if _get(env, new) is None:
            log.warning("%s is deprecated: it is read as %s, set that instead", old, new)
            env[new] = env[old]
        else:
            log.warning("%s is deprecated and ignored: %s is set", old, new)


def _get(env: dict[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    return raw or None


def _number(env: dict[str, str], name: str, default: float, lo: float, hi: float,
            kind: type[int] | type[float]) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise AgentConfigError(f"{name}={raw!r} is not {what}") from None
    if not lo <= value <= hi:
        raise AgentConfigError(f"{name}={value} is out of range [{lo}, {hi}]")
    return value


def _float(env: dict[str, str], name: str, default: float, lo: float, hi: float) -> float:
    return float(_number(env, name, default, lo, hi, float))


def _int(env: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    return int(_number(env, name, default, lo, hi, int))


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise AgentConfigError(f"{name}={raw!r} is not a boolean (use 1/0)")


@dataclass(frozen=True)
class AgentConfig:
    """Process-wide settings of the worker (see docs/AGENT.md for the table)."""

    agent_name: str = AGENT_NAME_DEFAULT
    # Omni backend (OpenAI-compatible)
    omni_base_url: str = "http://127.0.0.1:8000/v1"
    omni_model: str = ""  # empty: the first model the backend lists, else "qwen3-omni"
    omni_api_key: str = field(default="EMPTY", repr=False)
    stt_mode: str = "chat"  # chat (audio_url in chat completions) | transcriptions
    connect_timeout_s: float = 3.0
    stt_timeout_s: float = 15.0
    llm_first_token_timeout_s: float = 10.0
    llm_idle_timeout_s: float = 10.0
    max_retries: int = 2
    # LLM
    llm_max_tokens: int = 150
    llm_temperature: float = 0.3
    enable_continuation: bool = True
    llm_first_max_tokens: int = 32
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    backend_down_message: str = DEFAULT_BACKEND_DOWN_MESSAGE
    stt_down_message: str = DEFAULT_STT_DOWN_MESSAGE
    greeting: str = ""
    # conversation history kept in the room metadata for a re-dispatched agent (agent/history.py)
    history_turns: int = 8  # 0: off
    history_max_bytes: int = 4096
    # TTS
    tts_speaker: str = "serena"
    tts_language: str = "auto"
    tts_frame_ms: int = 20
    slow_lane_slack_s: float = 1.0
    # turn taking (local only; agent/turn_detection.py)
    turn_detection: str = "model"  # model: VAD + the local end-of-turn model | vad: VAD alone
    vad_silence_ms: int = MODEL_MIN_VAD_SILENCE_MS  # VAD_SILENCE_MS_VAD_ONLY with turn_detection vad
    vad_threshold: float = 0.5
    min_endpointing_s: float = 0.3
    max_endpointing_s: float = 1.2
    min_interruption_s: float = 0.15
    min_interruption_words: int = 0
    false_interruption_timeout_s: float = 1.5
    aec_warmup_s: float = 0.0  # 0: off (clients cancel their own echo)
    # room audio
    audio_queue_ms: int = 200
    # worker
    max_rooms: int = 8
    # full (no new room) at this load; below 1, the engine's reject point (agent/load.py)
    load_threshold: float = 0.9
    idle_jobs: int = 2
    http_port: int = 8081
    metrics_port: int = 8091  # Prometheus /metrics (the load among them); 0: off
    worker_name: str = ""  # this worker in rooms and logs; empty: <host>:<pid>
    drain_timeout_s: int = 60
    empty_room_grace_s: float = 10.0
    torch_threads: int = 0  # 0: leave torch's default
    malloc_arena_max: int = 2  # glibc malloc arenas (agent/allocator.py); 0: glibc's default
    # diagnostics (agent/heap_report.py): a memory report every this many seconds; 0: off
    heap_report_s: float = 0.0
    tracemalloc_frames: int = 0  # > 0: the reports trace Python's allocations (slower)
    # outputs
    output_dir: Path = field(default_factory=output_root)
    save_pre_rtc: bool = False
    # debug: publish silence in place of the TTS audio (pre_rtc.wav keeps the real audio);
    # AutoRTC uses it to prove that a broken agent fails the suite
    debug_mute_tts: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> AgentConfig:
        env = dict(os.environ if env is None else env)
        _accept_renamed(env)
        stt_mode = (_get(env, "OMNI_STT_MODE") or "chat").lower()
        if stt_mode not in ("chat", "transcriptions"):
            raise AgentConfigError(f"OMNI_STT_MODE={stt_mode!r}; valid: chat, transcriptions")
        turn_detection = (_get(env, "AGENT_TURN_DETECTION") or cls.turn_detection).lower()
        if turn_detection not in TURN_DETECTION_MODES:
            raise AgentConfigError(f"AGENT_TURN_DETECTION={turn_detection!r}; valid: "
                                   f"{', '.join(TURN_DETECTION_MODES)}")
        vad_silence_default = cls.vad_silence_ms if turn_detection == "model" else VAD_SILENCE_MS_VAD_ONLY
        values: dict[str, Any] = {
            "agent_name": _get(env, "LIVEKIT_AGENT_NAME") or AGENT_NAME_DEFAULT,
            "omni_base_url": (_get(env, "OMNI_BASE_URL") or cls.omni_base_url).rstrip("/"),
            "omni_model": _get(env, "OMNI_MODEL") or "",
            "omni_api_key": _get(env, "OMNI_API_KEY") or "EMPTY",
            "stt_mode": stt_mode,
            "connect_timeout_s": _float(env, "OMNI_CONNECT_TIMEOUT_S", cls.connect_timeout_s, 0.1, 60),
            "stt_timeout_s": _float(env, "OMNI_STT_TIMEOUT_S", cls.stt_timeout_s, 0.5, 300),
            "llm_first_token_timeout_s": _float(
                env, "OMNI_LLM_FIRST_TOKEN_TIMEOUT_S", cls.llm_first_token_timeout_s, 0.5, 300
            ),
            "llm_idle_timeout_s": _float(env, "OMNI_LLM_IDLE_TIMEOUT_S", cls.llm_idle_timeout_s, 0.5, 300),
            "max_retries": _int(env, "OMNI_MAX_RETRIES", cls.max_retries, 0, 10),
            "llm_max_tokens": _int(env, "LLM_MAX_TOKENS", cls.llm_max_tokens, 1, 4096),
            "llm_temperature": _float(env, "LLM_TEMPERATURE", cls.llm_temperature, 0.0, 2.0),
            "enable_continuation": _bool(env, "ENABLE_CONTINUATION", cls.enable_continuation),
            "llm_first_max_tokens": _int(env, "LLM_FIRST_MAX_TOKENS", cls.llm_first_max_tokens, 1, 4096),
            "system_prompt": _get(env, "AGENT_SYSTEM_PROMPT") or DEFAULT_SYSTEM_PROMPT,
            "backend_down_message": _get(env, "AGENT_BACKEND_DOWN_MESSAGE") or DEFAULT_BACKEND_DOWN_MESSAGE,
            "stt_down_message": _get(env, "AGENT_STT_DOWN_MESSAGE") or DEFAULT_STT_DOWN_MESSAGE,
            "greeting": _get(env, "AGENT_GREETING") or "",
            "history_turns": _int(env, "AGENT_HISTORY_TURNS", cls.history_turns, 0, 100),
            # a few KiB: far below the room metadata size livekit-server accepts
            "history_max_bytes": _int(env, "AGENT_HISTORY_MAX_BYTES", cls.history_max_bytes, 256, 32768),
            "tts_speaker": _get(env, "AGENT_SPEAKER") or cls.tts_speaker,
            "tts_language": _get(env, "AGENT_LANGUAGE") or cls.tts_language,
            "tts_frame_ms": _int(env, "AGENT_FRAME_MS", cls.tts_frame_ms, 10, 100),
            "slow_lane_slack_s": _float(env, "AGENT_SLOW_LANE_SLACK_S", cls.slow_lane_slack_s, 0.0, 60),
            "turn_detection": turn_detection,
            "vad_silence_ms": _int(env, "VAD_SILENCE_MS", vad_silence_default, 32, 5000),
            "vad_threshold": _float(env, "VAD_THRESHOLD", cls.vad_threshold, 0.05, 0.95),
            "min_endpointing_s": _float(env, "MIN_ENDPOINTING", cls.min_endpointing_s, 0.0, 10),
            "max_endpointing_s": _float(env, "MAX_ENDPOINTING", cls.max_endpointing_s, 0.1, 30),
            "min_interruption_s": _float(env, "AGENT_MIN_INTERRUPTION_S", cls.min_interruption_s, 0.05, 5),
            "min_interruption_words": _int(env, "AGENT_MIN_INTERRUPTION_WORDS", cls.min_interruption_words, 0, 10),
            "false_interruption_timeout_s": _float(
                env, "AGENT_FALSE_INTERRUPTION_TIMEOUT_S", cls.false_interruption_timeout_s, 0.2, 30
            ),
            "aec_warmup_s": _float(env, "AGENT_AEC_WARMUP_S", cls.aec_warmup_s, 0.0, 30),
            "audio_queue_ms": _int(env, "AGENT_AUDIO_QUEUE_MS", cls.audio_queue_ms, 20, 2000),
            "max_rooms": _int(env, "AGENT_MAX_ROOMS", cls.max_rooms, 1, 10_000),
            "load_threshold": _float(env, "AGENT_LOAD_THRESHOLD", cls.load_threshold, 0.05, 0.99),
            "idle_jobs": _int(env, "AGENT_IDLE_JOBS", cls.idle_jobs, 0, 64),
            "http_port": _int(env, "AGENT_HTTP_PORT", cls.http_port, 0, 65535),
            "metrics_port": _int(env, "AGENT_METRICS_PORT", cls.metrics_port, 0, 65535),
            "worker_name": _get(env, "AGENT_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}",
            "drain_timeout_s": _int(env, "AGENT_DRAIN_TIMEOUT_S", cls.drain_timeout_s, 0, 86400),
            "empty_room_grace_s": _float(env, "AGENT_EMPTY_ROOM_GRACE_S", cls.empty_room_grace_s, 0, 3600),
            "torch_threads": _int(env, "AGENT_TORCH_THREADS", 0, 0, 256),
            "malloc_arena_max": _int(env, "AGENT_MALLOC_ARENA_MAX", cls.malloc_arena_max, 0, 1024),
            "heap_report_s": _float(env, "AGENT_HEAP_REPORT_S", cls.heap_report_s, 0.0, 86400),
            "tracemalloc_frames": _int(env, "AGENT_TRACEMALLOC_FRAMES", cls.tracemalloc_frames, 0, 64),
            "output_dir": output_root(env),
            "save_pre_rtc": _bool(env, "AGENT_SAVE_PRE_RTC", False),
            "debug_mute_tts": _bool(env, "AGENT_DEBUG_MUTE_TTS", False),
        }
        if values["tts_frame_ms"] % 10:
            raise AgentConfigError(f"AGENT_FRAME_MS={values['tts_frame_ms']} must be a multiple of 10")
        if values["max_endpointing_s"] < values["min_endpointing_s"]:
            raise AgentConfigError("MAX_ENDPOINTING must not be below MIN_ENDPOINTING")
        if turn_detection == "model" and values["vad_silence_ms"] < MODEL_MIN_VAD_SILENCE_MS:
            raise AgentConfigError(
                f"VAD_SILENCE_MS={values['vad_silence_ms']} is below the {MODEL_MIN_VAD_SILENCE_MS} ms "
                "the end-of-turn model needs; raise it, or set AGENT_TURN_DETECTION=vad")
        values.update(overrides)
        return cls(**values)


# Dispatch metadata keys: a short name and the env name are both accepted (an env name of
# RENAMED_KNOBS under its old name too, with a warning).
_META_KEYS: dict[str, tuple[str, ...]] = {
    "system_prompt": ("system_prompt", "AGENT_SYSTEM_PROMPT"),
    "speaker": ("speaker", "AGENT_SPEAKER", "TTS_SPEAKER"),
    "language": ("language", "AGENT_LANGUAGE", "TTS_LANGUAGE"),
    "max_tokens": ("max_tokens", "LLM_MAX_TOKENS"),
    "temperature": ("temperature", "LLM_TEMPERATURE"),
    "trace_id": ("trace_id",),
    "case_id": ("case_id",),
    "user_identity": ("user_identity",),
    "save_pre_rtc": ("save_pre_rtc", "AGENT_SAVE_PRE_RTC"),
}
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True)
class RoomSettings:
    """What one conversation uses; `warnings` lists metadata values that were ignored."""

    room: str
    system_prompt: str
    speaker: str
    language: str
    max_tokens: int
    temperature: float
    trace_id: str
    case_id: str = ""
    user_identity: str = ""
    save_pre_rtc: bool = False
    trace_id_from_metadata: bool = False
    warnings: tuple[str, ...] = ()

    @classmethod
    def resolve(
        cls,
        room: str,
        metadata: str | None,
        config: AgentConfig,
        *,
        speakers: list[str] | None = None,
        languages: list[str] | None = None,
    ) -> RoomSettings:
        warnings: list[str] = []
        meta: dict[str, Any] = {}
        if metadata and metadata.strip():
            try:
                parsed = json.loads(metadata)
            except json.JSONDecodeError as exc:
                warnings.append(f"dispatch metadata is not JSON ({exc}); using defaults")
            else:
                if isinstance(parsed, dict):
                    meta = parsed
                else:
                    warnings.append("dispatch metadata is not a JSON object; using defaults")

        def pick(name: str) -> Any:
            for key in _META_KEYS[name]:
                if key in meta and meta[key] is not None:
                    if key in RENAMED_KNOBS:
                        warnings.append(f"metadata key {key} is deprecated; use {name} "
                                        f"or {RENAMED_KNOBS[key]}")
                    return meta[key]
            return None

        def text(name: str, default: str, limit: int = 8000) -> str:
            value = pick(name)
            if value is None:
                return default
            if not isinstance(value, str) or not value.strip() or len(value) > limit:
                warnings.append(f"metadata {name}={value!r:.80} ignored (a non-empty string of at most {limit} chars)")
                return default
            return value.strip()

        def ident(name: str) -> str:
            value = pick(name)
            if value is None:
                return ""
            value = str(value)
            if not value or len(value) > 128 or not set(value) <= _ID_CHARS:
                warnings.append(f"metadata {name}={value!r:.80} ignored (1-128 of [A-Za-z0-9_.-])")
                return ""
            return value

        speaker = text("speaker", config.tts_speaker, 64).lower()
        if speakers and speaker not in speakers:
            fallback = config.tts_speaker if config.tts_speaker in speakers else speakers[0]
            warnings.append(f"unknown speaker {speaker!r}; valid: {', '.join(speakers)}; using {fallback!r}")
            speaker = fallback
        language = text("language", config.tts_language, 32).lower()
        if languages and language not in languages:
            warnings.append(f"unknown language {language!r}; valid: {', '.join(languages)}; using 'auto'")
            language = "auto" if "auto" in languages else languages[0]

        max_tokens = config.llm_max_tokens
        raw = pick("max_tokens")
        if raw is not None:
            if isinstance(raw, int | str) and str(raw).strip().isdigit() and 1 <= int(raw) <= 4096:
                max_tokens = int(raw)
            else:
                warnings.append(f"metadata max_tokens={raw!r:.40} ignored (an integer 1..4096)")
        temperature = config.llm_temperature
        raw = pick("temperature")
        if raw is not None:
            try:
                value = float(raw)
                if not 0.0 <= value <= 2.0:
                    raise ValueError
                temperature = value
            except (TypeError, ValueError):
                warnings.append(f"metadata temperature={raw!r:.40} ignored (a number 0..2)")

        trace_id = ident("trace_id")
        from_meta = bool(trace_id)
        if not trace_id:
            safe_room = "".join(c if c in _ID_CHARS else "_" for c in room)[:80] or "room"
            trace_id = f"{safe_room}-{uuid.uuid4().hex[:8]}"
        save = config.save_pre_rtc
        raw = pick("save_pre_rtc")
        if raw is not None:
            save = str(raw).strip().lower() in ("1", "true", "yes", "on")
        return cls(
            room=room,
            system_prompt=text("system_prompt", config.system_prompt),
            speaker=speaker,
            language=language,
            max_tokens=max_tokens,
            temperature=temperature,
            trace_id=trace_id,
            case_id=ident("case_id"),
            user_identity=ident("user_identity"),
            save_pre_rtc=save or from_meta,
            trace_id_from_metadata=from_meta,
            warnings=tuple(warnings),
        )

    def public_dict(self) -> dict[str, Any]:
        """For logs: everything but the (possibly long) prompt."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("system_prompt", "warnings")
        }
