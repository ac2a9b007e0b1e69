"""EngineConfig: every engine knob, defined once as a field, read from TTS_* variables.

Defaults are the golden configuration (seed-digest section 4), except that the
device defaults to `auto` (cuda:0 when present, else cpu) and the dtype to
bfloat16 on CUDA, float32 on CPU. The README's configuration table is generated
from KNOBS (`python -m tts_engine config --markdown` prints it,
`python -m streamtalk_common.knobs` rewrites it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from streamtalk_common.knobs import PORT_RANGE, KnobTable, constant, knob
from streamtalk_common.paths import cache_root, output_root

from .errors import ConfigValueError

log = logging.getLogger("tts_engine.config")


def default_model_dir() -> Path:
    return cache_root() / "checkpoints" / "tiny"


DECODER_DTYPES = ("float32", "tf32", "bfloat16")


@dataclass(frozen=True)
class EngineConfig:
    """Every engine knob: the field, its TTS_* variable, default, what is valid, what it does."""

    model_dir: str = knob("TTS_DEEP_STREAM_MODEL_DIR", "",
                          "model directory (official layout); "
                          "empty = the tiny checkpoint in the cache root")
    device: str = knob("TTS_DEEP_STREAM_DEVICE", "auto",
                       "auto (cuda:0 when present, else cpu), cpu, cuda, cuda:N")
    dtype: str = knob("TTS_DEEP_STREAM_DTYPE", "auto", "auto = bfloat16 on CUDA, float32 on CPU",
                      choices=("auto", "float32", "bfloat16", "float16"))
    decoder_dtype: str = knob("TTS_DECODER_DTYPE", "tf32",
                              "codec decoder precision: tf32 (float32 weights, TF32 convs and "
                              "matmuls on CUDA: 57 dB vs the float32 offline decode, the step at "
                              "256 streams 1.7x faster; true float32 on a CPU), "
                              "float32 (> 100 dB) or bfloat16 (33 dB)",
                              choices=DECODER_DTYPES)
    decode_mode: str = knob("TTS_DEEP_STREAM_DECODE_MODE", "incremental",
                            "incremental (exact stateful decoder), windowed (re-decode "
                            "left_context frames)",
                            choices=("incremental", "windowed"))
    packet_tokens: int = knob("TTS_DEEP_STREAM_PACKET_TOKENS", 2,
                              "codec frames per streamed packet (80 ms each)", lo=1, hi=64)
    first_packet_tokens: int = knob("TTS_DEEP_STREAM_FIRST_PACKET_TOKENS", 1,
                                    "frames in a reply's first packet; 1 = audio after one "
                                    "frame (the next packets grow to packet_tokens, each at "
                                    "most the frames sent before it)", lo=1, hi=64)
    left_context: int = knob("TTS_DEEP_STREAM_LEFT_CONTEXT", 72,
                             "frames of left context in windowed decode mode", lo=1, hi=512)
    deterministic_policy: str = knob("TTS_DEEP_STREAM_DETERMINISTIC_POLICY", "greedy",
                                     "how a request without a sample flag decodes: greedy, "
                                     "or sample (seeded sampling with the official defaults)",
                                     choices=("greedy", "sample"))
    seed_mode: str = knob("TTS_DEEP_STREAM_SEED_MODE", "fixed",
                          "fixed (every request uses TTS_DEEP_STREAM_SEED unless it sends one), "
                          "request",
                          choices=("fixed", "request"))
    seed: int = knob("TTS_DEEP_STREAM_SEED", 42, "seed for sampled decoding")
    cuda_graphs: bool = knob("TTS_CUDA_GRAPHS", True,
                             "CUDA graphs for the frame step (talker step + code predictor loop) "
                             "and the codec decoder step; 0 = the same static steps, "
                             "eager (on a CPU there are none)")
    max_batch: int = knob("TTS_MAX_BATCH", 0,
                          "batch rows (streams that can hold state at once); "
                          "0 = as many as free GPU memory allows (up to 256), 32 on CPU",
                          lo=0, hi=256)
    row_positions: int = knob("TTS_ROW_POSITIONS", 1024,
                              "talker positions per row (prompt + frames): "
                              "1024 holds about 75 s of speech", lo=64, hi=16384)
    max_active_streams: int = knob("TTS_MAX_ACTIVE_STREAMS", 0,
                                   "hand cap on streams in the batch (0 = the measured "
                                   "real-time capacity, or every row with rows admission)",
                                   lo=0)
    admission: str = knob("TTS_ADMISSION", "auto",
                          "auto = realtime on CUDA, rows on a CPU (whose steps slow down "
                          "whenever the STT or LLM beside the engine runs); realtime (admit "
                          "while every stream stays real time at the measured step times), "
                          "rows (fill every row; streams may fall behind)",
                          choices=("auto", "realtime", "rows"))
    queue_timeout_s: float = knob("TTS_QUEUE_TIMEOUT_S", 2.0,
                                  "how long a request waits for room before 503 over_capacity",
                                  lo=0, lo_open=True, hi=600)
    batch_invariant: int = knob("TTS_BATCH_INVARIANT", 0,
                                "1 = a stream's output is bit-identical to its solo run whatever "
                                "the batch: on a GPU the batched steps and graphs run "
                                "batch-invariant Triton kernels (not with TTS_COMPILE=1; its cost: "
                                "docs/PERFORMANCE.md), on a CPU every stream steps alone (slower)")
    compile_steps: str = knob("TTS_COMPILE", "auto",
                              "auto = 1 on CUDA (not with TTS_BATCH_INVARIANT=1), 0 on a CPU; "
                              "1 = torch.compile the decoder layers (the talker's, the "
                              "predictor's, the codec decoder's) before graph capture (faster "
                              "steps; on an H200 a cold start 73 s, warm 53 s on 2026-12-05; on "
                              "an H100 88 s and 55 s with the codec decoder's layers, "
                              "2026-12-06); "
                              "the first start compiles, later ones load the compile cache in "
                              "$STREAMTALK_HOME/compile-cache (docs/PERFORMANCE.md); 0 = off",
                              choices=("0", "1", "auto"))
    silence_packets: int = knob("TTS_DEEP_STREAM_SILENCE_PACKETS", 0,
                                "stop after N consecutive silent packets (0 = off)")
    packet_metrics: int = knob("TTS_DEEP_STREAM_METRICS", 1,
                               "per-packet timing metrics: a line per packet in its request's "
                               "packet_log (GET /tts/requests/{id}); their cost: `bench metrics`")
    packet_trace: int = knob("TTS_DEEP_STREAM_PACKET_TRACE", 0, "log one line per packet")
    code_dump: int = knob("TTS_CODE_DUMP_ENABLE", 0,
                          "write each request's codes to TTS_CODE_DUMP_DIR")
    code_dump_dir: str = knob("TTS_CODE_DUMP_DIR", "",
                              "codes dump folder (empty = $STREAMTALK_OUTPUT/code_dumps)")
    max_new_tokens: int = knob("TTS_MAX_NEW_TOKENS", 2048,
                               "hard cap on frames per request (2048 = 164 s)", lo=1)
    max_text_chars: int = knob("TTS_MAX_TEXT_CHARS", 2000, "longest accepted text, in characters",
                               lo=1)
    min_free_gpu_mib: int = knob("TTS_MIN_FREE_GPU_MIB", 8000,
                                 "start-up refuses a GPU with less free memory than this")
    host: str = knob("TTS_HOST", "127.0.0.1", "HTTP server address")
    port: int = knob("TTS_PORT", 9000, "HTTP server port", **PORT_RANGE)
    api_key: str = knob("TTS_API_KEY", "",
                        "when set, every route but health needs `Authorization: Bearer <key>`",
                        repr=False)

    def __post_init__(self) -> None:
        KNOBS.check(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> EngineConfig:
        return cls(**KNOBS.values(os.environ if env is None else env, overrides))

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
        return self.compile_steps == "1" or (self.compile_steps == "auto"
                                             and self.torch_device.type == "cuda")

    @property
    def realtime_admission(self) -> bool:
        """TTS_ADMISSION resolved: `auto` gates admissions by real time on CUDA only."""
        return self.admission == "realtime" or (self.admission == "auto"
                                                and self.torch_device.type == "cuda")

    @property
    def sample_by_default(self) -> bool:
        return self.deterministic_policy == "sample"

    @property
    def resolved_code_dump_dir(self) -> Path:
        if self.code_dump_dir:
            return Path(self.code_dump_dir)
        return output_root() / "code_dumps"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigValueError(f"device {name!r} requested but CUDA is not available; "
                               "use cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise ConfigValueError(f"device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16,
            "float16": torch.float16}[name]


KNOBS = KnobTable(
    EngineConfig, ConfigValueError, log,
    constants=(
        constant("TTS_DEEP_STREAM_PROCESS", "0", "codegen and decode always share one process"),
        constant("TTS_CODEGEN_GROUP_PARALLEL", "0",
                 "the code predictor's codebooks always come one after another: "
                 "parallel prediction ruins audio"),
    ),
    renamed={
        # the three switches of the original interface, one switch here
        "TTS_CODEGEN_CUDAGRAPH_TALKER": "TTS_CUDA_GRAPHS",
        "TTS_CODEGEN_CUDAGRAPH_CP": "TTS_CUDA_GRAPHS",
        "TTS_DECODER_CUDAGRAPH": "TTS_CUDA_GRAPHS",
        "TTS_GRAPH_MAX_POSITIONS": "TTS_ROW_POSITIONS",  # the knobs before continuous batching
        "TTS_GRAPH_SLOTS": "TTS_MAX_BATCH",
    },
    removed={
        "TTS_DECODE_OVERLAP": "the batched engine decodes every step in line",
        "TTS_DEEP_STREAM_CODEGEN_DEVICE": "the talker, code predictor and decoder all run on "
                                          "TTS_DEEP_STREAM_DEVICE",
        "TTS_DEEP_STREAM_DETERMINISTIC": "TTS_DEEP_STREAM_DETERMINISTIC_POLICY alone says how a "
                                         "request without a sample flag decodes",
    },
)


def markdown_table() -> str:
    return KNOBS.markdown()
