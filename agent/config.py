"""Agent configuration: one process-wide AgentConfig (env) and per-room RoomSettings.

AgentConfig is read once per worker process from the environment; each of its fields is a
knob, defined here only (docs/AGENT.md's table is generated from them): AGENT_* for the
agent's own knobs, OMNI_* and LLM_* for the backend, VAD_*, MIN_/MAX_ENDPOINTING and
ENABLE_CONTINUATION for turn taking. TTS_* is the
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
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from streamtalk_common.knobs import PORT_RANGE, KnobTable, knob
from streamtalk_common.paths import output_root

from . import AGENT_NAME_DEFAULT
from .errors import AgentConfigError
from .turn_detection import MODEL_MIN_VAD_SILENCE_MS, TURN_DETECTION_MODES

log = logging.getLogger("streamtalk.agent")

DEFAULT_SYSTEM_PROMPT = (
    "You are streamtalk, a friendly voice assistant. You are heard, not read: answer in "
    "short, natural spoken sentences, without markdown, lists, code or emoji."
)
DEFAULT_BACKEND_DOWN_MESSAGE = (
    "Sorry, my language model is not reachable right now. Please try again in a moment."
)
DEFAULT_STT_DOWN_MESSAGE = (
    "Sorry, I could not reach the speech recognizer. Please try again in a moment."
)
# the VAD's end-of-speech hangover when VAD alone ends turns; with the end-of-turn model it
# must be at least MODEL_MIN_VAD_SILENCE_MS (250), the default then
VAD_SILENCE_MS_VAD_ONLY = 200
# old name -> new name: knobs that moved off the engine's TTS_ prefix
RENAMED_KNOBS = {"TTS_SPEAKER": "AGENT_SPEAKER", "TTS_LANGUAGE": "AGENT_LANGUAGE",
                 "TTS_FRAME_MS": "AGENT_FRAME_MS"}


def _without_trailing_slash(url: str) -> str:
    return url.rstrip("/")


@dataclass(frozen=True)
class AgentConfig:
    """Process-wide settings of the worker: every field is a knob (its variable, default,
    what is valid, its meaning in docs/AGENT.md's generated table)."""

    agent_name: str = knob("LIVEKIT_AGENT_NAME", AGENT_NAME_DEFAULT, "explicit-dispatch agent name")
    # Omni backend (OpenAI-compatible)
    omni_base_url: str = knob("OMNI_BASE_URL", "http://127.0.0.1:8000/v1",
                              "OpenAI-compatible backend", kind=_without_trailing_slash)
    omni_model: str = knob("OMNI_MODEL", "", "model name sent",
                           shown_default="first model of `GET /models`, else `qwen3-omni`")
    omni_api_key: str = knob("OMNI_API_KEY", "EMPTY", "bearer key", repr=False)
    stt_mode: str = knob("OMNI_STT_MODE", "chat",
                         "`chat`: `audio_url` data-URI WAV in chat completions (Qwen3-Omni); "
                         "`transcriptions`: `/audio/transcriptions`",
                         choices=("chat", "transcriptions"))
    connect_timeout_s: float = knob("OMNI_CONNECT_TIMEOUT_S", 3.0, "TCP connect (s)", lo=0.1, hi=60)
    stt_timeout_s: float = knob("OMNI_STT_TIMEOUT_S", 15.0, "one recognition (s)", lo=0.5, hi=300)
    llm_first_token_timeout_s: float = knob("OMNI_LLM_FIRST_TOKEN_TIMEOUT_S", 10.0,
                                            "wait for a reply's first token (s)", lo=0.5, hi=300)
    llm_idle_timeout_s: float = knob("OMNI_LLM_IDLE_TIMEOUT_S", 10.0, "gap between tokens (s)",
                                     lo=0.5, hi=300)
    max_retries: int = knob("OMNI_MAX_RETRIES", 2,
                            "retries (backoff 0.3 s × 2ⁿ) before any text was produced",
                            lo=0, hi=10)
    # LLM
    llm_max_tokens: int = knob("LLM_MAX_TOKENS", 150, "tokens per reply", lo=1, hi=4096)
    llm_temperature: float = knob("LLM_TEMPERATURE", 0.3, "sampling temperature", lo=0.0, hi=2.0)
    enable_continuation: bool = knob("ENABLE_CONTINUATION", True,
                                     "short answer first, then its continuation (below)")
    llm_first_max_tokens: int = knob("LLM_FIRST_MAX_TOKENS", 32,
                                     "tokens of that short first answer", lo=1, hi=4096)
    system_prompt: str = knob("AGENT_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT, "system message",
                              shown_default="a short spoken-style prompt")
    backend_down_message: str = knob("AGENT_BACKEND_DOWN_MESSAGE", DEFAULT_BACKEND_DOWN_MESSAGE,
                                     "spoken when the LLM backend fails",
                                     shown_default="a short apology")
    stt_down_message: str = knob("AGENT_STT_DOWN_MESSAGE", DEFAULT_STT_DOWN_MESSAGE,
                                 "spoken when speech recognition fails",
                                 shown_default="a short apology")
    greeting: str = knob("AGENT_GREETING", "",
                         "said when the agent joins (off by default: AutoRTC timing); "
                         "not said by an agent that picks up a conversation (below)")
    # conversation history kept in the room metadata for a re-dispatched agent (agent/history.py)
    history_turns: int = knob("AGENT_HISTORY_TURNS", 8,
                              "user turns (with the replies to them) kept in the room metadata "
                              "for a re-dispatched agent; 0 = none kept, none picked up",
                              lo=0, hi=100)
    history_max_bytes: int = knob("AGENT_HISTORY_MAX_BYTES", 4096,
                                  "at most this much of that history in the room metadata "
                                  "(JSON; far below what livekit-server accepts); "
                                  "the oldest messages go first",
                                  lo=256, hi=32768)
    # TTS
    tts_speaker: str = knob("AGENT_SPEAKER", "serena",
                            "voice; an invalid name falls back with a warning that lists "
                            "the valid ones")
    tts_language: str = knob("AGENT_LANGUAGE", "auto",
                             "language; an invalid one falls back likewise")
    tts_frame_ms: int = knob("AGENT_FRAME_MS", 20,
                             "audio frame size into the room, a multiple of 10", lo=10, hi=100)
    slow_lane_slack_s: float = knob("AGENT_SLOW_LANE_SLACK_S", 1.0,
                                    "playback slack above which a segment takes the slow lane (s)",
                                    lo=0.0, hi=60)
    # turn taking (local only; agent/turn_detection.py)
    turn_detection: str = knob("AGENT_TURN_DETECTION", "model",
                               "`model`: end of turn by the VAD and the local end-of-turn model; "
                               "`vad`: by VAD silence alone (below)",
                               choices=TURN_DETECTION_MODES)
    vad_silence_ms: int = knob("VAD_SILENCE_MS", MODEL_MIN_VAD_SILENCE_MS,
                               "Silero hangover; with `model` at least "
                               f"{MODEL_MIN_VAD_SILENCE_MS} (the framework refuses a quicker VAD)",
                               lo=32, hi=5000,
                               shown_default=f"`{MODEL_MIN_VAD_SILENCE_MS}` (`model`), "
                                             f"`{VAD_SILENCE_MS_VAD_ONLY}` (`vad`)")
    vad_threshold: float = knob("VAD_THRESHOLD", 0.5, "Silero activation", lo=0.05, hi=0.95)
    min_endpointing_s: float = knob("MIN_ENDPOINTING", 0.3,
                                    "end-of-turn delay after the user's last speech when the turn "
                                    "is over (s)", lo=0.0, hi=10)
    max_endpointing_s: float = knob("MAX_ENDPOINTING", 1.2,
                                    "the delay when the model says the user is mid-thought (s); "
                                    "not below `MIN_ENDPOINTING`", lo=0.1, hi=30)
    min_interruption_s: float = knob("AGENT_MIN_INTERRUPTION_S", 0.06,
                                     "speech over the agent needed to pause it (s)", lo=0.05, hi=5)
    min_interruption_words: int = knob("AGENT_MIN_INTERRUPTION_WORDS", 0,
                                       "words the STT must have recognised before speech over "
                                       "the agent pauses or interrupts it; 0 = the VAD decides "
                                       "alone (why: below)", lo=0, hi=10)
    false_interruption_timeout_s: float = knob("AGENT_FALSE_INTERRUPTION_TIMEOUT_S", 1.5,
                                               "wait for words after a pause before resuming (s); "
                                               "keep it above the STT's P95", lo=0.2, hi=30)
    aec_warmup_s: float = knob("AGENT_AEC_WARMUP_S", 0.0,
                               "the framework's echo warm-up (s); 0 = off "
                               "(clients cancel their own echo)", lo=0.0, hi=30)
    # room audio
    audio_queue_ms: int = knob("AGENT_AUDIO_QUEUE_MS", 200,
                               "audio held inside the WebRTC source (the rest waits in the sink, "
                               "where it can be dropped)", lo=20, hi=2000)
    # worker
    max_rooms: int = knob("AGENT_MAX_ROOMS", 8,
                          "rooms at which the rooms' share of the load is 1 "
                          "(and past which a job is declined)", lo=1, hi=10_000)
    load_threshold: float = knob("AGENT_LOAD_THRESHOLD", 0.9,
                                 "the worker takes no new room at this load (above); "
                                 "below the engine's reject point (agent/load.py)",
                                 lo=0.05, hi=0.99)
    idle_jobs: int = knob("AGENT_IDLE_JOBS", 2, "pre-initialised job threads", lo=0, hi=64)
    http_port: int = knob("AGENT_HTTP_PORT", 8081, "health server (127.0.0.1)", **PORT_RANGE)
    metrics_port: int = knob("AGENT_METRICS_PORT", 8091,
                             "Prometheus `/metrics` (127.0.0.1): the load and its parts; 0 = off",
                             **PORT_RANGE)
    worker_name: str = knob("AGENT_WORKER_NAME", "",
                            "the worker's name in its agents' `streamtalk.worker` attribute and "
                            "in logs (`start_all.sh` names it `agent`, or `agent-1` .. `agent-N` "
                            "with `AGENT_WORKERS=N`)",
                            shown_default="`<host>:<pid>`")
    drain_timeout_s: int = knob("AGENT_DRAIN_TIMEOUT_S", 60,
                                "on SIGTERM the worker takes no new room and each room leaves once "
                                "the turn under way has ended; the process exits when its rooms "
                                "are gone, or after this many seconds at most (the rooms still "
                                "held are then closed); `0` = no bound",
                                lo=0, hi=86400)
    empty_room_grace_s: float = knob("AGENT_EMPTY_ROOM_GRACE_S", 10.0,
                                     "end a job once only agents have been in the room "
                                     "this long (s)",
                                     lo=0, hi=3600)
    torch_threads: int = knob("AGENT_TORCH_THREADS", 0,
                              "CPU threads for torch (1 on small CPU hosts); 0 = torch's default",
                              lo=0, hi=256)
    malloc_arena_max: int = knob("AGENT_MALLOC_ARENA_MAX", 2,
                                 "glibc malloc arenas the worker's threads share (set as the "
                                 "worker starts, `agent/allocator.py`); more arenas keep more "
                                 "freed memory each (docs/RELIABILITY.md, \"Stress and soak\"); "
                                 "`0` = glibc's default (8 per core, or `MALLOC_ARENA_MAX`)",
                                 lo=0, hi=1024)
    recycle_growth_mib: int = knob("AGENT_RECYCLE_GROWTH_MIB", 1024,
                                   "once the worker's resident memory has grown this much since "
                                   "it was ready, it exits at its first moment without rooms "
                                   "and its supervisor starts a fresh one; at twice this with "
                                   "rooms open it drains them as on SIGTERM "
                                   "(`agent/recycle.py`); `0` = never",
                                   lo=0, hi=1_048_576)
    heap_report_s: float = knob("AGENT_HEAP_REPORT_S", 0.0,
                                "diagnostics: log a memory report this often (`streamtalk.heap`, "
                                "`agent/heap_report.py`): RSS, malloc in use / freed but kept / "
                                "arenas, Python objects and the types that grew; 0 = off",
                                lo=0, hi=86400)
    tracemalloc_frames: int = knob("AGENT_TRACEMALLOC_FRAMES", 0,
                                   "with the report: trace Python's allocations (tracemalloc, this "
                                   "many frames; slower) and list the tracebacks that grew most",
                                   lo=0, hi=64)
    # outputs
    output_dir: Path = knob("STREAMTALK_OUTPUT", None, "traces and pre_rtc files",
                            kind=Path, factory=output_root, shown_default="`output`")
    save_pre_rtc: bool = knob("AGENT_SAVE_PRE_RTC", False,
                              "save pre_rtc.wav even without a trace_id")
    debug_mute_tts: bool = knob("AGENT_DEBUG_MUTE_TTS", False,
                                "debug only: the room hears silence of the same length instead of "
                                "the reply, while pre_rtc.wav keeps the real audio (AutoRTC's "
                                "broken-agent check); logged as a warning per room")

    def __post_init__(self) -> None:
        KNOBS.check(self)
        if self.tts_frame_ms % 10:
            raise AgentConfigError(f"AGENT_FRAME_MS={self.tts_frame_ms} must be a multiple of 10")
        if self.max_endpointing_s < self.min_endpointing_s:
            raise AgentConfigError("MAX_ENDPOINTING must not be below MIN_ENDPOINTING")
        if self.turn_detection == "model" and self.vad_silence_ms < MODEL_MIN_VAD_SILENCE_MS:
            raise AgentConfigError(
                f"VAD_SILENCE_MS={self.vad_silence_ms} is below the {MODEL_MIN_VAD_SILENCE_MS} ms "
                "the end-of-turn model needs; raise it, or set AGENT_TURN_DETECTION=vad")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> AgentConfig:
        env = os.environ if env is None else env
        values = KNOBS.values(env, overrides)
        if values.get("turn_detection") == "vad":
            values.setdefault("vad_silence_ms", VAD_SILENCE_MS_VAD_ONLY)
        values.setdefault("worker_name", f"{socket.gethostname()}:{os.getpid()}")
        values.setdefault("output_dir", output_root(env))
        return cls(**values)


KNOBS = KnobTable(AgentConfig, AgentConfigError, log, renamed=RENAMED_KNOBS)


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
                warnings.append(f"metadata {name}={value!r:.80} ignored (a non-empty string "
                                f"of at most {limit} chars)")
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
            warnings.append(f"unknown speaker {speaker!r}; valid: {', '.join(speakers)}; "
                            f"using {fallback!r}")
            speaker = fallback
        language = text("language", config.tts_language, 32).lower()
        if languages and language not in languages:
            warnings.append(f"unknown language {language!r}; valid: {', '.join(languages)}; "
                            "using 'auto'")
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
