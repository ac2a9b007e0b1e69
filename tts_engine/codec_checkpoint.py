"""Random-weight speech tokenizers in the official `speech_tokenizer/` layout.

`write_speech_tokenizer(model_dir, preset, seed)` writes
`model_dir/speech_tokenizer/{config.json, configuration.json, model.safetensors,
preprocessor_config.json}` so that both our `load_codec_decoder` and the official
`Qwen3TTSTokenizer.from_pretrained` load it. The file holds the decoder (random, scaled
to give audible, unclipped audio) and the Mimi encoder (random; the official model
keeps Mimi's SEANet encoder, encoder transformer, downsample conv and all 32 quantizers,
and drops Mimi's decoder side).

Presets (`SPEECH_TOKENIZER_PRESETS`):
* `tiny`: decodes faster than real time on 2 CPU cores; keeps the real interface
  (16 codebooks of 2048, 1920x upsampling, 24 kHz, sliding window 72).
* `mid`: wider and deeper than tiny, grouped-query attention, head_dim != hidden/heads;
  still decodes 300 frames in seconds on CPU (parity tests).
* `full`: the released Qwen3-TTS-Tokenizer-12Hz geometry (~170M parameters, ~680 MB).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tts_engine.model.codec_decoder import (
    DECODER_PREFIX,
    ENCODER_PREFIX,
    MODEL_TYPE,
    Codebook,
    CodecDecoder,
    CodecDecoderConfig,
    ConvNeXtBlock,
    LayerScale,
    ResidualUnit,
    ResidualVQ,
    RMSNorm,
    SnakeBeta,
)

# decoder_config overrides of CodecDecoderConfig's (released) defaults.
DECODER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "codebook_dim": 32,
        "vector_quantization_hidden_dimension": 32,
        "latent_dim": 48,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "decoder_dim": 64,  # channels 64 -> 32 -> 16 -> 8 -> 4 -> 1
    },
    "mid": {
        "codebook_dim": 128,
        "vector_quantization_hidden_dimension": 128,
        "latent_dim": 192,
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,  # q width 128 != hidden 96, as in the released model (1024 vs 512)
        "decoder_dim": 256,
    },
    "full": {},
}

# The released encoder_config: Mimi with 32 quantizers at 12.5 Hz.
_FULL_ENCODER: dict[str, Any] = {
    "model_type": "mimi",
    "sampling_rate": 24000,
    "_frame_rate": 12.5,
    "audio_channels": 1,
    "hidden_size": 512,
    "num_filters": 64,
    "num_residual_layers": 1,
    "upsampling_ratios": [8, 6, 5, 4],
    "kernel_size": 7,
    "last_kernel_size": 3,
    "residual_kernel_size": 3,
    "dilation_growth_rate": 2,
    "use_causal_conv": True,
    "pad_mode": "constant",
    "compress": 2,
    "trim_right_ratio": 1.0,
    "codebook_size": 2048,
    "codebook_dim": 256,
    "num_quantizers": 32,
    "num_semantic_quantizers": 1,
    "use_conv_shortcut": False,
    "vector_quantization_hidden_dimension": 256,
    "upsample_groups": 512,
    "num_hidden_layers": 8,
    "intermediate_size": 2048,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "hidden_act": "gelu",
    "max_position_embeddings": 8000,
    "initializer_range": 0.02,
    "norm_eps": 1e-05,
    "use_cache": False,
    "use_streaming": False,
    "rope_theta": 10000.0,
    "sliding_window": 250,
    "attention_dropout": 0.0,
    "attention_bias": False,
    "layer_scale_initial_scale": 0.01,
}
_SMALL_ENCODER = {
    "hidden_size": 32,
    "num_filters": 4,
    "num_hidden_layers": 1,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "codebook_dim": 16,
    "vector_quantization_hidden_dimension": 16,
    "upsample_groups": 32,
}
ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {**_FULL_ENCODER, **_SMALL_ENCODER},
    "mid": {**_FULL_ENCODER, **_SMALL_ENCODER},
    "full": _FULL_ENCODER,
}
SPEECH_TOKENIZER_PRESETS = tuple(DECODER_PRESETS)

# preprocessor_config.json: Mimi's feature extractor (mono, 24 kHz, with padding mask).
PREPROCESSOR_CONFIG: dict[str, Any] = {
    "chunk_length_s": None,
    "feature_extractor_type": "EncodecFeatureExtractor",
    "feature_size": 1,
    "overlap": None,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": 24000,
}
# configuration.json is ModelScope metadata that no loader reads; its exact released
# content is not known to us, so this is a plausible stand-in.
MODELSCOPE_CONFIGURATION: dict[str, Any] = {"framework": "pytorch", "task": "text-to-speech"}

OUTPUT_RMS = 0.1  # target RMS of random weights decoding random codes


def _check_preset(preset: str) -> None:
    if preset not in DECODER_PRESETS:
        raise ValueError(
            f"unknown speech tokenizer preset {preset!r}; valid: {', '.join(DECODER_PRESETS)} "
            "(the 0.6B and 1.7B models share 'full')"
        )


def decoder_config(preset: str) -> CodecDecoderConfig:
    _check_preset(preset)
    return CodecDecoderConfig.from_dict({**CodecDecoderConfig().to_dict(),
                                         **DECODER_PRESETS[preset]})


def speech_tokenizer_config(preset: str) -> dict[str, Any]:
    """The whole `speech_tokenizer/config.json` for a preset."""
    cfg = decoder_config(preset)
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "model_type": MODEL_TYPE,
        "encoder_valid_num_quantizers": cfg.num_quantizers,
        "input_sample_rate": 24000,
        "output_sample_rate": 24000,
        "decode_upsample_rate": cfg.total_upsample,
        "encode_downsample_rate": cfg.total_upsample,
        "encoder_config": dict(ENCODER_PRESETS[preset]),
        "decoder_config": cfg.to_dict(),
        "dtype": "float32",
        "transformers_version": "4.57.3",
    }


# ----------------------------------------------------------------------------------
# Encoder (Mimi) tensors, named as transformers 4.57's MimiModel names them, minus the
# decoder-side modules the official encoder drops (upsample, decoder_transformer, decoder).


def encoder_tensor_shapes(enc: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Names (without the `encoder.` prefix) and shapes of the official encoder tensors."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, c_out: int, c_in: int, k: int, bias: bool = True) -> None:
        shapes[f"{name}.conv.weight"] = (c_out, c_in, k)
        if bias:
            shapes[f"{name}.conv.bias"] = (c_out,)

    # SEANet encoder: conv, then per ratio [residual blocks, ELU, strided conv], ELU, conv.
    nf, idx, scale = enc["num_filters"], 0, 1
    conv(f"encoder.layers.{idx}", nf, enc["audio_channels"], enc["kernel_size"])
    idx += 1
    for ratio in reversed(enc["upsampling_ratios"]):
        dim = scale * nf
        for _ in range(enc["num_residual_layers"]):
            conv(f"encoder.layers.{idx}.block.1", dim // enc["compress"], dim,
                 enc["residual_kernel_size"])
            conv(f"encoder.layers.{idx}.block.3", dim, dim // enc["compress"], 1)
            if enc["use_conv_shortcut"]:
                conv(f"encoder.layers.{idx}.shortcut", dim, dim, 1)
            idx += 1
        idx += 1  # ELU
        conv(f"encoder.layers.{idx}", 2 * dim, dim, 2 * ratio)
        idx += 1
        scale *= 2
    idx += 1  # ELU
    conv(f"encoder.layers.{idx}", enc["hidden_size"], scale * nf, enc["last_kernel_size"])

    hidden, hd = enc["hidden_size"], enc["head_dim"]
    for i in range(enc["num_hidden_layers"]):
        p = f"encoder_transformer.layers.{i}"
        q_out, kv_out = enc["num_attention_heads"] * hd, enc["num_key_value_heads"] * hd
        for proj, out_dim, in_dim in (
            ("q_proj", q_out, hidden),
            ("k_proj", kv_out, hidden),
            ("v_proj", kv_out, hidden),
            ("o_proj", hidden, q_out),
        ):
            shapes[f"{p}.self_attn.{proj}.weight"] = (out_dim, in_dim)
            if enc["attention_bias"]:
                shapes[f"{p}.self_attn.{proj}.bias"] = (out_dim,)
        shapes[f"{p}.mlp.fc1.weight"] = (enc["intermediate_size"], hidden)
        shapes[f"{p}.mlp.fc2.weight"] = (hidden, enc["intermediate_size"])
        for norm in ("input_layernorm", "post_attention_layernorm"):
            shapes[f"{p}.{norm}.weight"] = (hidden,)
            shapes[f"{p}.{norm}.bias"] = (hidden,)
        shapes[f"{p}.self_attn_layer_scale.scale"] = (hidden,)
        shapes[f"{p}.mlp_layer_scale.scale"] = (hidden,)

    hop = math.prod(enc["upsampling_ratios"])
    seanet_rate = math.ceil(enc["sampling_rate"] / hop)
    frame_rate = enc.get("_frame_rate") or enc["sampling_rate"] / (hop * 2)
    if frame_rate != seanet_rate:
        shapes["downsample.conv.weight"] = (hidden, hidden, 2 * int(seanet_rate / frame_rate))

    vq_dim = enc["vector_quantization_hidden_dimension"]
    n_sem = enc["num_semantic_quantizers"]
    for part, n in (("semantic", n_sem), ("acoustic", enc["num_quantizers"] - n_sem)):
        p = f"quantizer.{part}_residual_vector_quantizer"
        for i in range(n):
            shapes[f"{p}.layers.{i}.codebook.initialized"] = (1,)
            shapes[f"{p}.layers.{i}.codebook.cluster_usage"] = (enc["codebook_size"],)
            shapes[f"{p}.layers.{i}.codebook.embed_sum"] = (enc["codebook_size"],
                                                            enc["codebook_dim"])
        if vq_dim != hidden:
            shapes[f"{p}.input_proj.weight"] = (vq_dim, hidden, 1)
            shapes[f"{p}.output_proj.weight"] = (hidden, vq_dim, 1)
    return shapes


def random_encoder_state_dict(enc: dict[str, Any], seed: int) -> dict[str, Tensor]:
    """Random encoder tensors (only loadable, not meaningful: the encoder serves voice
    cloning, which nothing here exercises)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for name, shape in encoder_tensor_shapes(enc).items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "initialized":
            t = torch.ones(shape)
        elif leaf == "cluster_usage":
            t = torch.rand(shape, generator=gen) + 0.5
        elif leaf == "scale":
            t = torch.full(shape, float(enc["layer_scale_initial_scale"]))
        elif "layernorm" in name:
            t = torch.ones(shape) if leaf == "weight" else torch.zeros(shape)
        elif leaf == "bias":
            t = torch.zeros(shape)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            t = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        out[name] = t
    return out


# ----------------------------------------------------------------------------------
# Decoder random weights.


def _fan_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.ConvTranspose1d):
        # each output sample sums kernel_size / stride input steps
        return module.in_channels * module.kernel_size[0] // module.stride[0]
    assert isinstance(module, nn.Conv1d)
    return module.in_channels // module.groups * module.kernel_size[0]


@torch.no_grad()
def _init_decoder_(model: CodecDecoder, gen: torch.Generator) -> None:
    """Variance-preserving random init, with the residual branches (LayerScale,
    ConvNeXt gamma) large enough that every part of the network visibly shapes the
    output: streaming tests then notice any wrongly carried state."""

    def normal_(t: Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=gen) * std + mean)

    for module_name, module in model.named_modules():
        if isinstance(module, Codebook):
            module.cluster_usage.copy_(torch.rand(module.cluster_usage.shape, generator=gen) * 1.5
                                       + 0.5)
            normal_(module.embedding_sum, 1.0)
            module.embedding_sum.mul_(module.cluster_usage[:, None])  # entries ~ N(0, 1)
        elif isinstance(module, SnakeBeta):
            # Frequencies e^alpha around 0.5: a gentler nonlinearity than e^0 = 1 keeps
            # float32 rounding from being amplified ~10x through the 30 SnakeBeta layers.
            normal_(module.alpha, 0.2, mean=-0.7)
            normal_(module.beta, 0.2)
        elif isinstance(module, (RMSNorm, nn.LayerNorm)):
            normal_(module.weight, 0.1, mean=1.0)
            if getattr(module, "bias", None) is not None:
                normal_(module.bias, 0.1)
        elif isinstance(module, LayerScale):
            normal_(module.scale, 0.05, mean=0.5)
        elif isinstance(module, ConvNeXtBlock):
            normal_(module.gamma, 0.05, mean=0.5)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d)):
            fan_in = _fan_in(module)
            parent = (model.get_submodule(module_name.rsplit(".", 1)[0]) if "." in module_name
                      else model)
            if isinstance(parent, ResidualVQ) and module is parent.output_proj:
                fan_in *= len(parent.vq.layers)  # input is a sum of that many unit vectors
            in_residual_unit = isinstance(model.get_submodule(module_name.rsplit(".", 2)[0]),
                                          ResidualUnit)
            gain = 0.25 if in_residual_unit and module_name.endswith("conv2.conv") else 1.0
            normal_(module.weight, gain / math.sqrt(fan_in))
            if module.bias is not None:
                normal_(module.bias, 0.02)


@torch.no_grad()
def _calibrate_output_(model: CodecDecoder, gen: torch.Generator, frames: int = 24) -> None:
    """Rescale the final conv so random codes decode to RMS `OUTPUT_RMS` with zero mean
    (the last layer is linear before the clamp, so this is exact on the calibration codes)."""
    cfg = model.config
    codes = torch.randint(0, cfg.codebook_size, (2, cfg.num_quantizers, frames), generator=gen)
    captured: list[Tensor] = []
    handle = model.final_conv.register_forward_hook(lambda m, i, o: captured.append(o))
    model(codes)
    handle.remove()
    z = captured[0].double()  # [B, 1, samples], pre-clamp
    mean, std = z.mean().item(), z.std().item()
    gain = OUTPUT_RMS / std
    conv = model.final_conv.conv
    conv.weight.mul_(gain)
    conv.bias.copy_((conv.bias - mean) * gain)


def build_random_codec_decoder(preset: str | CodecDecoderConfig, seed: int = 0) -> CodecDecoder:
    """A float32 CPU `CodecDecoder` with the writer's random weights."""
    cfg = preset if isinstance(preset, CodecDecoderConfig) else decoder_config(preset)
    model = CodecDecoder(cfg).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    _init_decoder_(model, gen)
    _calibrate_output_(model, gen)
    return model


def write_speech_tokenizer(model_dir: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write `model_dir/speech_tokenizer/` (official layout, random weights). Returns
    the speech tokenizer directory."""
    from safetensors.torch import save_file

    _check_preset(preset)
    out = Path(model_dir) / "speech_tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    config = speech_tokenizer_config(preset)
    decoder = build_random_codec_decoder(preset, seed)
    tensors = {DECODER_PREFIX + k: v.contiguous() for k, v in decoder.state_dict().items()}
    encoder = random_encoder_state_dict(config["encoder_config"], seed + 1)
    tensors.update({ENCODER_PREFIX + k: v for k, v in encoder.items()})
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", config)
    _write_json(out / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    _write_json(out / "configuration.json", MODELSCOPE_CONFIGURATION)
    return out


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")
