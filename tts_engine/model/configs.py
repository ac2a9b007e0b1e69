"""Model geometry and special ids, read from an official Qwen3-TTS `config.json`.

The official checkpoint nests the code predictor's config inside the talker's,
and the talker's inside the top-level config:

    config.json
      talker_config
        code_predictor_config

Only the fields the 12 Hz CustomVoice path uses are kept here. The presets at
the bottom write config.json files in the same shape (official keys only), so
the official `qwen-tts` package loads our random checkpoints too.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelConfigError

CONFIG_JSON_TRANSFORMERS_VERSION = "5.24.0"
MODEL_TYPE = "qwen3_tts"
TOKENIZER_TYPE = "qwen3_tts_tokenizer_12hz"
SUPPORTED_MODEL_KINDS = ("custom_voice",)


@dataclass(frozen=True)
class TransformerGeometry:
    """One decoder-only transformer stack (talker or code predictor)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    vocab_size: int


@dataclass(frozen=True)
class CodePredictorConfig:
    geometry: TransformerGeometry
    num_code_groups: int  # 16: codebook 0 from the talker + 15 predicted here


@dataclass(frozen=True)
class TalkerConfig:
    geometry: TransformerGeometry
    text_vocab_size: int
    text_hidden_size: int
    num_code_groups: int
    codec_pad_id: int
    codec_bos_id: int
    codec_eos_id: int
    codec_think_id: int
    codec_nothink_id: int
    codec_think_bos_id: int
    codec_think_eos_id: int
    speaker_ids: dict[str, int]  # name -> codec-vocab token
    speaker_dialect: dict[str, str | None]  # name -> dialect language or None
    language_ids: dict[str, int]  # name -> codec-vocab token
    code_predictor: CodePredictorConfig


@dataclass(frozen=True)
class TTSModelConfig:
    talker: TalkerConfig
    tts_model_type: str
    tts_model_size: str
    im_start_token_id: int
    im_end_token_id: int
    tts_pad_token_id: int
    tts_bos_token_id: int
    tts_eos_token_id: int
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def speakers(self) -> list[str]:
        return sorted(self.talker.speaker_ids)

    @property
    def languages(self) -> list[str]:
        """'auto' plus every non-dialect language, as the official wrapper lists them."""
        named = [lang for lang in self.talker.language_ids if "dialect" not in lang]
        return ["auto", *sorted(named)]


def _geometry(cfg: dict[str, Any], default_head_dim: int | None = None) -> TransformerGeometry:
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    return TransformerGeometry(
        hidden_size=hidden,
        num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or default_head_dim or hidden // heads),
        intermediate_size=int(cfg["intermediate_size"]),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        vocab_size=int(cfg["vocab_size"]),
    )


def parse_model_config(raw: dict[str, Any]) -> TTSModelConfig:
    """Validate and parse a top-level config.json dict."""
    model_type = raw.get("model_type")
    if model_type != MODEL_TYPE:
        raise ModelConfigError(
            f"config.json has model_type {model_type!r}; this engine loads {MODEL_TYPE!r} "
            "(Qwen3-TTS-12Hz-*-CustomVoice)"
        )
    tokenizer_type = raw.get("tokenizer_type")
    if tokenizer_type != TOKENIZER_TYPE:
        raise ModelConfigError(
            f"config.json has tokenizer_type {tokenizer_type!r}; this engine supports "
            f"{TOKENIZER_TYPE!r} only (the 12 Hz speech tokenizer)"
        )
    kind = raw.get("tts_model_type")
    if kind not in SUPPORTED_MODEL_KINDS:
        raise ModelConfigError(
            f"config.json has tts_model_type {kind!r}; supported: {list(SUPPORTED_MODEL_KINDS)} "
            "(voice-clone 'base' and 'voice_design' models are not served)"
        )
    try:
        t = raw["talker_config"]
        cp = t["code_predictor_config"]
        cp_config = CodePredictorConfig(
            geometry=_geometry(cp), num_code_groups=int(cp.get("num_code_groups", 16))
        )
        dialects = t.get("spk_is_dialect") or {}
        talker = TalkerConfig(
            geometry=_geometry(t),
            text_vocab_size=int(t["text_vocab_size"]),
            text_hidden_size=int(t["text_hidden_size"]),
            num_code_groups=int(t["num_code_groups"]),
            codec_pad_id=int(t["codec_pad_id"]),
            codec_bos_id=int(t["codec_bos_id"]),
            codec_eos_id=int(t["codec_eos_token_id"]),
            codec_think_id=int(t["codec_think_id"]),
            codec_nothink_id=int(t["codec_nothink_id"]),
            codec_think_bos_id=int(t["codec_think_bos_id"]),
            codec_think_eos_id=int(t["codec_think_eos_id"]),
            speaker_ids={k.lower(): int(v) for k, v in (t.get("spk_id") or {}).items()},
            speaker_dialect={k.lower(): (v or None) for k, v in dialects.items()},
            language_ids={k.lower(): int(v) for k, v in (t.get("codec_language_id") or {}).items()},
            code_predictor=cp_config,
        )
    except KeyError as exc:
        raise ModelConfigError(f"config.json is missing key {exc.args[0]!r}") from exc
    if talker.num_code_groups != cp_config.num_code_groups:
        raise ModelConfigError("talker and code predictor disagree on num_code_groups")
    if not talker.speaker_ids:
        raise ModelConfigError("config.json defines no speakers (talker_config.spk_id is empty)")
    return TTSModelConfig(
        talker=talker,
        tts_model_type=kind,
        tts_model_size=str(raw.get("tts_model_size", "")),
        im_start_token_id=int(raw.get("im_start_token_id", 151644)),
        im_end_token_id=int(raw.get("im_end_token_id", 151645)),
        tts_pad_token_id=int(raw.get("tts_pad_token_id", 151671)),
        tts_bos_token_id=int(raw.get("tts_bos_token_id", 151672)),
        tts_eos_token_id=int(raw.get("tts_eos_token_id", 151673)),
        raw=copy.deepcopy(raw),
    )


# ---------------------------------------------------------------------------
# Presets for random-init checkpoints. Values of 0.6b/1.7b are the geometry of the released
# Qwen3-TTS-12Hz-0.6B/1.7B-CustomVoice config.json files (so benchmarks on random weights
# cost what the real model costs); `tiny` keeps every id and vocabulary
# size but shrinks widths and depths so it runs faster than real time on CPU.

SPEAKERS = {
    "serena": 3066, "vivian": 3065, "uncle_fu": 3010, "ryan": 3061, "aiden": 2861,
    "ono_anna": 2873, "sohee": 2864, "eric": 2875, "dylan": 2878,
}
SPEAKER_DIALECTS = {name: False for name in SPEAKERS} | {
    "eric": "sichuan_dialect", "dylan": "beijing_dialect",
}
LANGUAGES = {
    "chinese": 2055, "english": 2050, "german": 2053, "italian": 2070, "portuguese": 2071,
    "spanish": 2054, "japanese": 2058, "korean": 2064, "french": 2061, "russian": 2069,
    "beijing_dialect": 2074, "sichuan_dialect": 2062,
}


def _stack(hidden, layers, heads, kv_heads, head_dim, inter, vocab, theta, max_pos, **extra):
    return {
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": head_dim, "intermediate_size": inter,
        "vocab_size": vocab, "rope_theta": theta, "max_position_embeddings": max_pos,
        "hidden_act": "silu", "rms_norm_eps": 1e-6, "attention_bias": False,
        "initializer_range": 0.02, "use_cache": True, **extra,
    }


def preset_config(preset: str) -> dict[str, Any]:
    """A config.json dict for a named geometry: 'tiny', '0.6b' or '1.7b'."""
    if preset == "tiny":
        size, talker_dims, cp_dims, text_hidden = ("0b6", (64, 3, 4, 2, 16, 128),
                                                   (64, 2, 4, 2, 16, 128), 64)
    elif preset == "0.6b":
        size, talker_dims, cp_dims, text_hidden = ("0b6", (1024, 28, 16, 8, 128, 3072),
                                                   (1024, 5, 16, 8, 128, 3072), 2048)
    elif preset == "1.7b":
        size, talker_dims, cp_dims, text_hidden = ("1b7", (2048, 28, 16, 8, 128, 6144),
                                                   (1024, 5, 16, 8, 128, 3072), 2048)
    elif preset.startswith("custom:"):
        # custom:H,L,CP_H,CP_L — mid-size geometries for tests ("custom:256,4,128,2")
        h, n, cph, cpn = (int(x) for x in preset.split(":", 1)[1].split(","))
        size, talker_dims, cp_dims, text_hidden = ("0b6", (h, n, 4, 2, h // 4, 2 * h),
                                                   (cph, cpn, 4, 2, cph // 4, 2 * cph), h)
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: tiny, 0.6b, 1.7b")
    code_predictor = _stack(
        *cp_dims, vocab=2048, theta=1_000_000, max_pos=65536,
        num_code_groups=16, layer_types=["full_attention"] * cp_dims[1],
        use_sliding_window=False, max_window_layers=cp_dims[1],
    )
    talker = _stack(
        *talker_dims, vocab=3072, theta=1_000_000, max_pos=32768,
        rope_scaling={"interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
        code_predictor_config=code_predictor,
        text_vocab_size=151936, text_hidden_size=text_hidden, num_code_groups=16,
        position_id_per_seconds=13, use_sliding_window=False,
        codec_pad_id=2148, codec_bos_id=2149, codec_eos_token_id=2150,
        codec_think_id=2154, codec_nothink_id=2155, codec_think_bos_id=2156,
        codec_think_eos_id=2157, spk_id=dict(SPEAKERS), spk_is_dialect=dict(SPEAKER_DIALECTS),
        codec_language_id=dict(LANGUAGES),
    )
    return {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "model_type": MODEL_TYPE,
        "tokenizer_type": TOKENIZER_TYPE,
        "tts_model_size": size,
        "tts_model_type": "custom_voice",
        "im_start_token_id": 151644, "im_end_token_id": 151645, "assistant_token_id": 77091,
        "tts_pad_token_id": 151671, "tts_bos_token_id": 151672, "tts_eos_token_id": 151673,
        "talker_config": talker,
        "speaker_encoder_config": {"enc_dim": talker_dims[0], "sample_rate": 24000},
        "torch_dtype": "bfloat16" if preset in ("0.6b", "1.7b") else "float32",
        # transformers 4.57.3 swaps in a Mistral pre-tokenizer regex under
        # fix_mistral_regex=True unless the version recorded here is >= 5.0.0;
        # with it, the official processor tokenizes exactly like Qwen's BPE.
        "transformers_version": CONFIG_JSON_TRANSFORMERS_VERSION,
    }


GENERATION_CONFIG = {
    "do_sample": True, "repetition_penalty": 1.05, "temperature": 0.9, "top_p": 1.0, "top_k": 50,
    "subtalker_dosample": True, "subtalker_temperature": 0.9, "subtalker_top_p": 1.0,
    "subtalker_top_k": 50, "max_new_tokens": 8192,
}
