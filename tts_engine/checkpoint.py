"""Checkpoint I/O in the official Qwen3-TTS directory layout.

A model directory holds:

    config.json  generation_config.json  model.safetensors
    vocab.json  merges.txt  tokenizer_config.json
    speech_tokenizer/{config.json, model.safetensors, preprocessor_config.json}

`load_talker` reads config.json + model.safetensors into our modules; tensor
names match upstream one to one (no renaming table is needed; the layers stack
q/k/v and gate/up into one weight each as they load, model/layers.py). A wrong or
incomplete directory is refused with an error that names what is missing or
unexpected. `write_checkpoint` writes random-init checkpoints of a preset
geometry in the same layout, so loading always goes through the one real path.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import CheckpointError
from .model.configs import GENERATION_CONFIG, TTSModelConfig, parse_model_config, preset_config
from .model.layers import RotaryTable
from .model.talker import Qwen3TTSModel

CHECKPOINT_STAMP = ".streamtalk-checkpoint"  # the writer fingerprint of a generated checkpoint
MODEL_FILES = (
    "config.json", "generation_config.json", "model.safetensors",
    "vocab.json", "merges.txt", "tokenizer_config.json",
)
SPEECH_TOKENIZER_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
PRESETS = ("tiny", "0.6b", "1.7b")


def _require(root: Path, names: list[str]) -> Path:
    if not root.is_dir():
        raise CheckpointError(f"model directory {str(root)!r} does not exist")
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise CheckpointError(
            f"model directory {str(root)!r} is incomplete; missing: {', '.join(missing)} "
            f"(expected the Qwen3-TTS-12Hz CustomVoice layout: {', '.join(MODEL_FILES)}, "
            f"speech_tokenizer/{{{', '.join(SPEECH_TOKENIZER_FILES)}}})"
        )
    return root


def check_model_dir(model_dir: str | Path) -> Path:
    """Refuse a directory that lacks any file of the official layout."""
    names = list(MODEL_FILES) + [f"speech_tokenizer/{n}" for n in SPEECH_TOKENIZER_FILES]
    return _require(Path(model_dir), names)


def read_model_config(model_dir: str | Path) -> TTSModelConfig:
    path = Path(model_dir) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    return parse_model_config(raw)


def _describe_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f" ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_talker(
    model_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Qwen3TTSModel:
    """Build the talker + code predictor from config.json and load model.safetensors."""
    root = _require(Path(model_dir), ["config.json", "model.safetensors"])
    config = read_model_config(root)
    with torch.device("meta"):
        model = Qwen3TTSModel(config)
    expected = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(root / "model.safetensors"), framework="pt", device="cpu") as f:
        found = set(f.keys())
        missing = sorted(set(expected) - found)
        unexpected = sorted(found - set(expected))
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing tensors: {_describe_keys(missing)}")
            if unexpected:
                parts.append(f"unexpected tensors: {_describe_keys(unexpected)}")
            raise CheckpointError(f"{root / 'model.safetensors'} does not match config.json; "
                                  + "; ".join(parts))
        for name, ref in expected.items():
            t = f.get_tensor(name)
            if tuple(t.shape) != tuple(ref.shape):
                raise CheckpointError(f"tensor {name} has shape {tuple(t.shape)}, "
                                      f"config.json implies {tuple(ref.shape)}")
            tensors[name] = t.to(dtype=dtype)
    # Loaded on the host, where loading stacks the projections of each layer
    # (model/layers.py); the device then receives every weight once, in its final form.
    model.load_state_dict(tensors, strict=True, assign=True)
    del tensors
    for module in model.modules():
        if isinstance(module, RotaryTable):
            module.materialize(device)
    return model.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------
# Random-init checkpoints


def random_state_dict(config: TTSModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Upstream's init: N(0, 0.02) for linear and embedding weights, zero biases, unit norms."""
    with torch.device("meta"):
        model = Qwen3TTSModel(config)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, ref in model.state_dict().items():
        if name.endswith("norm.weight"):
            out[name] = torch.ones(ref.shape)
        elif name.endswith(".bias"):
            out[name] = torch.zeros(ref.shape)
        else:
            out[name] = torch.empty(ref.shape).normal_(0.0, 0.02, generator=gen)
    return out


def write_talker_files(
    model_dir: str | Path, preset: str, seed: int = 0, frames_per_text: float | None = None
) -> TTSModelConfig:
    """config.json, generation_config.json and model.safetensors of a preset geometry.

    The tiny preset gets the duration counter of `tiny_shaping` (frames_per_text
    overrides its rate; tests use 0 to make EOS win at min_new_tokens).
    """
    from .tiny_shaping import FRAMES_PER_TEXT, shape_tiny_weights

    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    raw = preset_config(preset)
    config = parse_model_config(raw)
    weights = random_state_dict(config, seed)
    if preset == "tiny":
        shape_tiny_weights(weights, config,
                           FRAMES_PER_TEXT if frames_per_text is None else frames_per_text)
    store_dtype = torch.bfloat16 if preset in ("0.6b", "1.7b") else torch.float32
    save_file({k: v.to(store_dtype).contiguous() for k, v in weights.items()},
              str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    (root / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    return config


def write_checkpoint(model_dir: str | Path, preset: str, seed: int = 0) -> Path:
    """Write a complete random-init model directory of a preset geometry."""
    from .codec_checkpoint import write_speech_tokenizer
    from .text_tokenizer import write_tokenizer_files

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    root = Path(model_dir)
    write_talker_files(root, preset, seed)
    write_tokenizer_files(root)
    write_speech_tokenizer(root, "tiny" if preset == "tiny" else "full", seed)
    return root


def _generator_fingerprint(preset: str, seed: int) -> str:
    """Changes whenever the code that writes checkpoints, or torch's random generator, changes."""
    import hashlib

    here = Path(__file__).parent
    sources = ["checkpoint.py", "tiny_shaping.py", "codec_checkpoint.py", "text_tokenizer.py",
               "model/configs.py", "model/codec_decoder.py"]
    h = hashlib.sha256(f"{preset}:{seed}:torch {torch.__version__}".encode())
    for name in sources:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def ensure_checkpoint(model_dir: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write the checkpoint unless an identical one (same preset, seed and writer) is there.

    A new checkpoint is written into a fresh folder beside the old one and swapped in
    whole, so no file of an older writer survives and a reader never sees half of one.
    """
    import os
    import shutil

    root = Path(model_dir)
    want = _generator_fingerprint(preset, seed)
    if checkpoint_stamp(root) == want:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    fresh = root.with_name(f".{root.name}.new-{os.getpid()}")
    stale = root.with_name(f".{root.name}.old-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    write_checkpoint(fresh, preset, seed)
    (fresh / CHECKPOINT_STAMP).write_text(want + "\n")
    if root.exists():
        root.rename(stale)
    try:
        fresh.rename(root)
    except OSError:  # another process swapped its identical build in first
        shutil.rmtree(fresh)
    shutil.rmtree(stale, ignore_errors=True)
    return root


def checkpoint_stamp(root: Path) -> str | None:
    """The writer fingerprint of a generated checkpoint; None for any other directory."""
    stamp = root / CHECKPOINT_STAMP
    return stamp.read_text().strip() if stamp.is_file() else None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
