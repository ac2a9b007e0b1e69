"""The 12 Hz codec decoder: geometry, causality, input checks, checkpoint writing and
loading (round trip and clear errors on broken directories), audibility of the tiny
preset's random weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tts_engine.codec_checkpoint import (
    SPEECH_TOKENIZER_PRESETS,
    build_random_codec_decoder,
    decoder_config,
    encoder_tensor_shapes,
    speech_tokenizer_config,
    write_speech_tokenizer,
)
from tts_engine.errors import CodecCheckpointError
from tts_engine.model.codec_decoder import (
    CodecDecoder,
    CodecDecoderConfig,
    load_codec_decoder,
    transposed_conv1d,
)

SPF = 1920  # samples per frame


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_speech_tokenizer(tmp_path_factory.mktemp("model"), "tiny", seed=7)


def random_codes(batch: int, frames: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2048, (batch, 16, frames),
                         generator=torch.Generator().manual_seed(seed))


# --- geometry -------------------------------------------------------------------------


def test_full_preset_is_the_released_geometry() -> None:
    cfg = decoder_config("full")
    assert cfg == CodecDecoderConfig()
    assert (cfg.num_quantizers, cfg.codebook_size, cfg.codebook_dim) == (16, 2048, 512)
    assert (cfg.latent_dim, cfg.decoder_dim) == (1024, 1536)
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (512, 1024, 8)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (16, 16, 64)
    assert (cfg.sliding_window, cfg.rope_theta, cfg.rms_norm_eps) == (72, 10000.0, 1e-5)
    assert cfg.upsampling_ratios == (2, 2) and cfg.upsample_rates == (8, 5, 4, 3)
    assert cfg.total_upsample == SPF


def test_full_geometry_builds_and_decodes_a_short_input_on_cpu() -> None:
    torch.manual_seed(0)
    model = CodecDecoder(decoder_config("full")).eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert 100e6 < n_params < 130e6  # the decoder part of the ~170M-parameter tokenizer
    assert model.pre_transformer.layers[0].self_attn.q_proj.weight.shape == (1024, 512)
    assert model.decoder_blocks[0].upsample.conv.weight.shape == (1536, 768, 16)
    assert model.final_conv.conv.weight.shape == (1, 96, 7)
    with torch.no_grad():
        pcm = model(random_codes(1, 2, seed=1))
    assert pcm.shape == (1, 2 * SPF) and pcm.dtype == torch.float32
    assert torch.isfinite(pcm).all() and pcm.abs().max() <= 1.0


@pytest.mark.parametrize("preset", SPEECH_TOKENIZER_PRESETS)
def test_every_preset_keeps_the_codec_interface(preset: str) -> None:
    cfg = decoder_config(preset)
    assert (cfg.num_quantizers, cfg.codebook_size, cfg.sliding_window) == (16, 2048, 72)
    assert cfg.total_upsample == SPF
    config = speech_tokenizer_config(preset)
    assert config["model_type"] == "qwen3_tts_tokenizer_12hz"
    assert config["output_sample_rate"] == 24000 and config["decode_upsample_rate"] == SPF


def test_config_dict_round_trip_keeps_unknown_keys() -> None:
    d = {**decoder_config("mid").to_dict(), "some_future_key": [1, 2]}
    cfg = CodecDecoderConfig.from_dict(d)
    assert cfg == decoder_config("mid")
    assert cfg.to_dict() == d


def test_missing_head_dim_means_hidden_over_heads() -> None:
    d = decoder_config("tiny").to_dict()
    del d["head_dim"]
    d.update(hidden_size=48, num_attention_heads=4)
    assert CodecDecoderConfig.from_dict(d).head_dim == 12


def test_invalid_configs_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="hidden_act"):
        CodecDecoderConfig(hidden_act="gelu")
    with pytest.raises(ValueError, match="num_key_value_heads"):
        CodecDecoderConfig(num_attention_heads=16, num_key_value_heads=3)
    with pytest.raises(ValueError, match="decoder_dim"):
        CodecDecoderConfig(decoder_dim=100)


# --- forward --------------------------------------------------------------------------


def test_forward_shape_range_and_batch_independence(tiny_codec: CodecDecoder) -> None:
    codes = random_codes(3, 10, seed=2)
    with torch.no_grad():
        pcm = tiny_codec(codes)
        alone = tiny_codec(codes[1:2])
    assert pcm.shape == (3, 10 * SPF) and pcm.dtype == torch.float32
    assert pcm.abs().max() <= 1.0
    assert (pcm[1:2] - alone).abs().max() <= 1e-6


def test_decoding_is_causal(tiny_codec: CodecDecoder) -> None:
    codes = random_codes(1, 12, seed=3)
    changed = codes.clone()
    changed[:, :, 6] = (changed[:, :, 6] + 1000) % 2048
    with torch.no_grad():
        a, b = tiny_codec(codes), tiny_codec(changed)
    assert (a[:, : 6 * SPF] - b[:, : 6 * SPF]).abs().max() <= 1e-7  # the past is untouched
    assert (a[:, 6 * SPF : 7 * SPF] - b[:, 6 * SPF : 7 * SPF]).abs().max() > 1e-2  # frame 6 moves


def test_bad_codes_get_clear_errors(tiny_codec: CodecDecoder) -> None:
    with pytest.raises(ValueError, match=r"\[batch, 16, frames>=1\]"):
        tiny_codec(torch.zeros(1, 15, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[batch, 16, frames>=1\]"):
        tiny_codec(torch.zeros(1, 16, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        tiny_codec(torch.zeros(1, 16, 4))
    too_big = torch.zeros(1, 16, 4, dtype=torch.long)
    too_big[0, 3, 2] = 2150  # the talker's EOS id must never reach the decoder
    with pytest.raises(ValueError, match=r"\[0, 2048\).*2150"):
        tiny_codec(too_big)
    with pytest.raises(ValueError, match=r"\[-1, "):
        tiny_codec(torch.full((1, 16, 4), -1, dtype=torch.long))


def test_bfloat16_decode_runs_and_stays_close(tiny_codec: CodecDecoder) -> None:
    codes = random_codes(1, 25, seed=4)
    bf16 = build_random_codec_decoder("tiny", seed=0).to(torch.bfloat16)
    with torch.no_grad():
        ref, low = tiny_codec(codes), bf16(codes)
    assert low.dtype == torch.bfloat16
    snr = 10 * torch.log10(ref.pow(2).sum() / (ref - low.float()).pow(2).sum())
    assert snr > 10.0, f"bf16 decode SNR {snr:.1f} dB vs float32"


# --- audibility of the tiny preset's random weights -------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", ["random", "constant", "pattern"])
def test_tiny_random_weights_give_audible_unclipped_audio(seed: int, kind: str) -> None:
    model = build_random_codec_decoder("tiny", seed=seed)
    codes = random_codes(1, 100, seed=100 + seed)
    if kind == "constant":
        codes = codes[:, :, :1].repeat(1, 1, 100)
    elif kind == "pattern":
        codes = codes[:, :, :5].repeat(1, 1, 20)
    with torch.no_grad():
        pcm = model(codes)[0].double()
    rms = pcm.pow(2).mean().sqrt().item()
    assert 0.05 <= rms <= 0.3, f"RMS {rms:.3f}"
    assert (pcm.abs() >= 0.999).double().mean().item() < 1e-3, "clipped"
    assert abs(pcm.mean().item()) < 0.1 * rms, "DC offset"
    power = torch.fft.rfft(pcm).abs().pow(2)
    freqs = torch.fft.rfftfreq(pcm.numel(), 1 / 24000)
    assert power[freqs > 100].sum() / power.sum() > 0.9, "energy below 100 Hz: not audible"


# --- checkpoint writing and loading -----------------------------------------------------


def test_written_checkpoint_has_the_official_layout(tiny_dir: Path) -> None:
    assert tiny_dir.name == "speech_tokenizer"
    names = {p.name for p in tiny_dir.iterdir()}
    assert names == {"config.json", "configuration.json", "model.safetensors",
                     "preprocessor_config.json"}
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config == speech_tokenizer_config("tiny")
    pre = json.loads((tiny_dir / "preprocessor_config.json").read_text())
    assert pre["feature_extractor_type"] == "EncodecFeatureExtractor" \
        and pre["sampling_rate"] == 24000

    tensors = load_file(tiny_dir / "model.safetensors")
    encoder = {k[len("encoder.") :]: tuple(v.shape) for k, v in tensors.items()
               if k.startswith("encoder.")}
    assert encoder == encoder_tensor_shapes(config["encoder_config"])
    assert "quantizer.acoustic_residual_vector_quantizer.layers.30.codebook.embed_sum" in encoder
    decoder = {k[len("decoder.") :] for k in tensors if k.startswith("decoder.")}
    assert decoder == set(CodecDecoder(decoder_config("tiny")).state_dict())
    assert len(tensors) == len(encoder) + len(decoder)
    assert all(v.dtype == torch.float32 for v in tensors.values())


def test_round_trip_load_equals_the_written_model(tiny_dir: Path) -> None:
    written = build_random_codec_decoder("tiny", seed=7)
    loaded = load_codec_decoder(tiny_dir)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for name, tensor in written.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    codes = random_codes(1, 9, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded(codes), written(codes))


def test_loader_casts_to_the_requested_dtype(tiny_dir: Path) -> None:
    model = load_codec_decoder(tiny_dir, device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert model(random_codes(1, 2, seed=6)).shape == (1, 2 * SPF)


def test_writing_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = write_speech_tokenizer(tmp_path / "a", "tiny", seed=1) / "model.safetensors"
    b = write_speech_tokenizer(tmp_path / "b", "tiny", seed=1) / "model.safetensors"
    c = write_speech_tokenizer(tmp_path / "c", "tiny", seed=2) / "model.safetensors"
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_unknown_preset_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny, mid, full"):
        write_speech_tokenizer(tmp_path, "0.6b")


# --- broken directories ---------------------------------------------------------------


@pytest.fixture()
def broken(tiny_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint to damage."""
    return Path(shutil.copytree(tiny_dir, tmp_path / "speech_tokenizer"))


def rewrite_tensors(directory: Path, edit) -> None:
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "preprocessor_config.json"])
def test_missing_file_is_named(broken: Path, name: str) -> None:
    (broken / name).unlink()
    with pytest.raises(CodecCheckpointError, match=f"missing {name}"):
        load_codec_decoder(broken)


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(CodecCheckpointError, match="not found"):
        load_codec_decoder(tmp_path / "nowhere")


def test_wrong_model_type_names_what_was_found(broken: Path) -> None:
    config = json.loads((broken / "config.json").read_text())
    config["model_type"] = "qwen3_tts_tokenizer_25hz"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CodecCheckpointError, match="model_type='qwen3_tts_tokenizer_25hz'.*12hz"):
        load_codec_decoder(broken)


def test_model_directory_instead_of_speech_tokenizer_gets_a_hint(broken: Path) -> None:
    model_dir = broken.parent
    (model_dir / "config.json").write_text(json.dumps({"model_type": "qwen3_tts"}))
    (model_dir / "model.safetensors").write_bytes(b"")
    (model_dir / "preprocessor_config.json").write_text("{}")
    with pytest.raises(CodecCheckpointError, match="'qwen3_tts'.*probably .*speech_tokenizer"):
        load_codec_decoder(model_dir)


def test_missing_decoder_tensor_is_named(broken: Path) -> None:
    rewrite_tensors(broken, lambda t: t.pop("decoder.pre_transformer.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CodecCheckpointError,
                       match=r"missing tensors: "
                             r"decoder\.pre_transformer\.layers\.1\.mlp\.up_proj\.weight"):
        load_codec_decoder(broken)


def test_unexpected_decoder_tensor_is_named(broken: Path) -> None:
    def edit(t: dict[str, torch.Tensor]) -> None:
        t["decoder.pre_transformer.layers.2.mlp.up_proj.weight"] = torch.zeros(64, 32)
        t["speaker_encoder.fc.weight"] = torch.zeros(2, 2)

    rewrite_tensors(broken, edit)
    with pytest.raises(CodecCheckpointError,
                       match=r"unexpected tensors: "
                             r".*layers\.2\.mlp\.up_proj.*speaker_encoder\.fc\.weight"):
        load_codec_decoder(broken)


def test_wrong_shape_is_named(broken: Path) -> None:
    rewrite_tensors(broken, lambda t: t.update({"decoder.pre_conv.conv.bias": torch.zeros(5)}))
    with pytest.raises(CodecCheckpointError,
                       match=r"decoder\.pre_conv\.conv\.bias: file \(5,\) vs config \(48,\)"):
        load_codec_decoder(broken)


def test_encoder_tensors_are_ignored(broken: Path) -> None:
    def drop_encoder(t: dict[str, torch.Tensor]) -> None:
        for key in [k for k in t if k.startswith("encoder.")]:
            del t[key]

    rewrite_tensors(broken, drop_encoder)
    assert load_codec_decoder(broken).config == decoder_config("tiny")


@pytest.mark.parametrize("stride,taps", [(4, 4), (4, 6), (4, 8), (2, 2), (5, 10)])
def test_transposed_conv_as_a_gemm_equals_torchs(stride: int, taps: int) -> None:
    g = torch.Generator().manual_seed(taps)
    x = torch.randn(3, 6, 9, generator=g, dtype=torch.float64)
    weight = torch.randn(6, 5, taps, generator=g, dtype=torch.float64)
    got = transposed_conv1d(x, weight, stride)
    want = F.conv_transpose1d(x, weight, stride=stride)
    assert got.shape == want.shape == (3, 5, 9 * stride + taps - stride)
    assert (got - want).abs().max().item() < 1e-12
