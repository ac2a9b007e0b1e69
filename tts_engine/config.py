"""EngineConfig: every engine knob in one place, read from TTS_* environment variables.

Defaults are the golden configuration (seed-digest section 4), except that the
device defaults to `auto` (cuda:0 when present, else cpu) and the dtype to
bfloat16 on CUDA, float32 on CPU. The README's configuration table is
generated from FIELDS below (`python -m tts_engine config --markdown`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from streamtalk_common.paths import cache_root, output_root

log = logging.getLogger("tts_engine.config")


def default_model_dir() -> Path:
    return cache_root() / "checkpoints" / "tiny"


class ConfigValueError(ValueError):
    pass


@dataclass(frozen=True)
class Knob:
    env: str
    attr: str
    help: str


FIELDS: tuple[Knob, ...] = (
    Knob("TTS_DEEP_STREAM_MODEL_DIR", "model_dir", "model directory (official layout); empty = the tiny checkpoint in the cache root"),
    Knob("TTS_DEEP_STREAM_DEVICE", "device", "auto, cpu, cuda, cuda:N"),
    Knob("TTS_DEEP_STREAM_CODEGEN_DEVICE", "codegen_device", "device of talker + code predictor (auto = TTS_DEEP_STREAM_DEVICE)"),
    Knob("TTS_DEEP_STREAM_DTYPE", "dtype", "auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16"),
    Knob("TTS_DECODER_DTYPE", "decoder_dtype", "codec decoder precision: tf32 (float32 weights, TF32 convs and matmuls on CUDA: 57 dB vs the float32 offline decode, the step at 256 streams 1.7x faster; true float32 on a CPU), float32 (> 100 dB) or bfloat16 (33 dB)"),
    Knob("TTS_DEEP_STREAM_DECODE_MODE", "decode_mode", "incremental (exact stateful decoder), windowed (re-decode left_context frames)"),
    Knob("TTS_DEEP_STREAM_PACKET_TOKENS", "packet_tokens", "codec frames per streamed packet (80 ms each)"),
    Knob("TTS_DEEP_STREAM_FIRST_PACKET_TOKENS", "first_packet_tokens", "frames in a reply's first packet (then packet_tokens); 1 = audio after one frame"),
    Knob("TTS_DEEP_STREAM_LEFT_CONTEXT", "left_context", "frames of left context in windowed decode mode"),
    Knob("TTS_DEEP_STREAM_PROCESS", "process", "0 = codegen and decode in one process (the only mode)"),
    Knob("TTS_CODEGEN_GROUP_PARALLEL", "group_parallel", "must be 0: parallel codebook prediction ruins audio"),
    Knob("TTS_DEEP_STREAM_DETERMINISTIC", "deterministic", "1 = requests without an explicit sample flag decode by the policy below"),
    Knob("TTS_DEEP_STREAM_DETERMINISTIC_POLICY", "deterministic_policy", "greedy, sample (seeded sampling with the official defaults)"),
    Knob("TTS_DEEP_STREAM_SEED_MODE", "seed_mode", "fixed (every request uses TTS_DEEP_STREAM_SEED unless it sends one), request"),
    Knob("TTS_DEEP_STREAM_SEED", "seed", "seed for sampled decoding"),
    Knob("TTS_CODEGEN_CUDAGRAPH_TALKER", "cudagraph_talker", "frame graph (talker step + predictor loop); 0 with the next = same static step, eager"),
    Knob("TTS_CODEGEN_CUDAGRAPH_CP", "cudagraph_cp", "the predictor loop runs inside the frame graph; both must be 1 for graphs"),
    Knob("TTS_MAX_BATCH", "max_batch", "batch rows (streams that can hold state at once); 0 = as many as free GPU memory allows (up to 256), 32 on CPU"),
    Knob("TTS_ROW_POSITIONS", "row_positions", "talker positions per row (prompt + frames): 1024 holds about 75 s of speech"),
    Knob("TTS_MAX_ACTIVE_STREAMS", "max_active_streams", "hand cap on streams in the batch (0 = the measured real-time capacity)"),
    Knob("TTS_ADMISSION", "admission", "realtime (admit while every stream stays real time at the measured step times), rows (fill every row; streams may fall behind: offline batch work)"),
    Knob("TTS_QUEUE_TIMEOUT_S", "queue_timeout_s", "how long a request waits for room before 503 over_capacity"),
    Knob("TTS_BATCH_INVARIANT", "batch_invariant", "1 = a stream's output is bit-identical to its solo run whatever the batch: on a GPU the batched steps and graphs run batch-invariant Triton kernels (not with TTS_COMPILE=1; its cost: docs/PERFORMANCE.md), on a CPU every stream steps alone (slower)"),
    Knob("TTS_COMPILE", "compile_steps", "1 = torch.compile the decoder layers before graph capture (faster steps); the first start compiles, later ones load the compile cache in $STREAMTALK_HOME/compile-cache (docs/PERFORMANCE.md); auto = 1 on CUDA, 0 on a CPU"),
    Knob("TTS_DECODER_CUDAGRAPH", "cudagraph_decoder", "CUDA graph for the incremental codec decoder step"),
    Knob("TTS_DEEP_STREAM_SILENCE_PACKETS", "silence_packets", "stop after N consecutive silent packets (0 = off)"),
    Knob("TTS_DEEP_STREAM_METRICS", "packet_metrics", "per-packet timing metrics: a line per packet in its request's packet_log (GET /tts/requests/{id}); their cost: `bench metrics`"),
    Knob("TTS_DEEP_STREAM_PACKET_TRACE", "packet_trace", "log one line per packet"),
    Knob("TTS_CODE_DUMP_ENABLE", "code_dump", "write each request's codes to TTS_CODE_DUMP_DIR"),
    Knob("TTS_CODE_DUMP_DIR", "code_dump_dir", "codes dump folder (default: $STREAMTALK_OUTPUT/code_dumps)"),
    Knob("TTS_MAX_NEW_TOKENS", "max_new_tokens", "hard cap on frames per request (2048 = 164 s)"),
    Knob("TTS_MAX_TEXT_CHARS", "max_text_chars", "longest accepted text, in characters"),
    Knob("TTS_MIN_FREE_GPU_MIB", "min_free_gpu_mib", "start-up refuses a GPU with less free memory than this"),
    Knob("TTS_HOST", "host", "HTTP server address"),
    Knob("TTS_PORT", "port", "HTTP server port"),
    Knob("TTS_API_KEY", "api_key", "when set, every route but health needs `Authorization: Bearer <key>`"),
)

_INT_ATTRS = {
    "packet_tokens", "first_packet_tokens", "left_context", "process", "group_parallel", "deterministic", "seed",
    "cudagraph_talker", "cudagraph_cp", "cudagraph_decoder", "max_batch", "row_positions", "max_active_streams",
    "batch_invariant", "silence_packets", "packet_metrics",
    "packet_trace", "code_dump", "max_new_tokens", "max_text_chars", "min_free_gpu_mib", "port",
}
_FLOAT_ATTRS = {"queue_timeout_s"}
# Knobs of the engine before continuous batching: the new name, or None when it has no successor.
_RENAMED = {
    "TTS_GRAPH_MAX_POSITIONS": "TTS_ROW_POSITIONS",
    "TTS_GRAPH_SLOTS": "TTS_MAX_BATCH",
    "TTS_DECODE_OVERLAP": None,
}
DECODER_DTYPES = ("float32", "tf32", "bfloat16")
_CHOICES = {
    "decode_mode": ("incremental", "windowed"),
    "deterministic_policy": ("greedy", "sample"),
    "seed_mode": ("fixed", "request"),
    "dtype": ("auto", "float32", "bfloat16", "float16"),
    "decoder_dtype": DECODER_DTYPES,
    "admission": ("realtime", "rows"),
    "compile_steps": ("0", "1", "auto"),
}


@dataclass(frozen=True)
class EngineConfig:
    model_dir: str = ""
    device: str = "auto"
    codegen_device: str = "auto"
    dtype: str = "auto"
    decoder_dtype: str = "tf32"
    decode_mode: str = "incremental"
    packet_tokens: int = 2
    first_packet_tokens: int = 1
    left_context: int = 72
    process: int = 0
    group_parallel: int = 0
    deterministic: int = 1
    deterministic_policy: str = "greedy"
    seed_mode: str = "fixed"
    seed: int = 42
    cudagraph_talker: int = 1
    cudagraph_cp: int = 1
    cudagraph_decoder: int = 1
    compile_steps: str = "0"
    max_batch: int = 0
    row_positions: int = 1024
    max_active_streams: int = 0
    admission: str = "realtime"
    queue_timeout_s: float = 2.0
    batch_invariant: int = 0
    silence_packets: int = 0
    packet_metrics: int = 1
    packet_trace: int = 0
    code_dump: int = 0
    code_dump_dir: str = ""
    max_new_tokens: int = 2048
    max_text_chars: int = 2000
    min_free_gpu_mib: int = 8000
    host: str = "127.0.0.1"
    port: int = 9000
    api_key: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> EngineConfig:
        env = _renamed(dict(os.environ if env is None else env))
        values: dict[str, object] = {}
        for knob in FIELDS:
            raw = env.get(knob.env, "").strip()
            if not raw:
                continue
            kind = int if knob.attr in _INT_ATTRS else float if knob.attr in _FLOAT_ATTRS else str
            try:
                values[knob.attr] = kind(raw)
            except ValueError:
                raise ConfigValueError(f"{knob.env}={raw!r} is not {'an integer' if kind is int else 'a number'} "
                                       f"({knob.help})") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        env_of = {k.attr: k.env for k in FIELDS}
        for attr, choices in _CHOICES.items():
            if getattr(self, attr) not in choices:
                raise ConfigValueError(f"{env_of[attr]}={getattr(self, attr)!r}; valid: {', '.join(choices)}")
        if self.group_parallel != 0:
            raise ConfigValueError("TTS_CODEGEN_GROUP_PARALLEL must be 0: parallel codebook prediction ruins audio")
        if self.process != 0:
            raise ConfigValueError("TTS_DEEP_STREAM_PROCESS must be 0 (codegen and decode share one process)")
        if not 1 <= self.packet_tokens <= 64:
            raise ConfigValueError(f"TTS_DEEP_STREAM_PACKET_TOKENS={self.packet_tokens}; valid: 1..64")
        if not 1 <= self.first_packet_tokens <= 64:
            raise ConfigValueError(f"TTS_DEEP_STREAM_FIRST_PACKET_TOKENS={self.first_packet_tokens}; valid: 1..64")
        if not 1 <= self.left_context <= 512:
            raise ConfigValueError(f"TTS_DEEP_STREAM_LEFT_CONTEXT={self.left_context}; valid: 1..512")
        if not 0 <= self.max_batch <= 256:
            raise ConfigValueError(f"TTS_MAX_BATCH={self.max_batch}; valid: 0 (auto) .. 256")
        if not 64 <= self.row_positions <= 16384:
            raise ConfigValueError(f"TTS_ROW_POSITIONS={self.row_positions}; valid: 64..16384")
        if self.max_active_streams < 0 or not 0 < self.queue_timeout_s <= 600:
            raise ConfigValueError("TTS_MAX_ACTIVE_STREAMS must be >= 0 and TTS_QUEUE_TIMEOUT_S in (0, 600]")
        if self.max_new_tokens < 1 or self.max_text_chars < 1:
            raise ConfigValueError("TTS_MAX_NEW_TOKENS and TTS_MAX_TEXT_CHARS must be positive")

    @property
    def resolved_model_dir(self) -> Path:
        return Path(self.model_dir) if self.model_dir else default_model_dir()

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype, self.torch_device)

    @property
    def compiled(self) -> bool:
        """TTS_COMPILE resolved: `auto` compiles on CUDA only (on a CPU, inductor needs a C++
        compiler and the compile costs more than it saves)."""
        return self.compile_steps == "1" or (self.compile_steps == "auto" and self.torch_device.type == "cuda")

    @property
    def sample_by_default(self) -> bool:
        return self.deterministic_policy == "sample"

    @property
    def resolved_code_dump_dir(self) -> Path:
        if self.code_dump_dir:
            return Path(self.code_dump_dir)
        return output_root() / "code_dumps"


def _renamed(env: dict[str, str]) -> dict[str, str]:
    """Map the old knobs to the new ones, with a warning; the new name wins."""
    for old, new in _RENAMED.items():
        if not env.get(old, "").strip():
            continue
        if new is None:
            log.warning("%s is no longer used (the batched engine decodes every step in line); ignored", old)
        elif env.get(new, "").strip():
            log.warning("%s is replaced by %s, which is set too; %s ignored", old, new, old)
        else:
            log.warning("%s is replaced by %s: using %s=%s", old, new, new, env[old])
            env[new] = env[old]
    return env


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigValueError(f"device {name!r} requested but CUDA is not available; use cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise ConfigValueError(f"device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def markdown_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    defaults = EngineConfig()
    rows += [f"| `{k.env}` | `{getattr(defaults, k.attr)}` | {k.help} |" for k in FIELDS]
    return "\n".join(rows)


assert {f.name for f in fields(EngineConfig)} == {k.attr for k in FIELDS}
