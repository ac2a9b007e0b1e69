"""Codes dumps: each request's codes on disk, to replay the decoder offline and to triage
regressions (`python -m tools.codes_eval`).

A dump is two files with one stem: `<id>.npy`, the codes as an integer array [frames, 16]
(codebook 0 from the talker, 1-15 from the code predictor; the EOS frame is not stored),
and `<id>.json`, what produced them: request_id, text, speaker, language, model_dir,
frames, stop_reason (eos, max_frames, row_full, cancelled, error ...) and text_tokens (the
prompt's text tokens, which the runaway guard counts frames against).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

CODEBOOKS = 16


def dump_codes(folder: Path, request_id: str, codes: np.ndarray, *, text: str, speaker: str,
               language: str, model_dir: str, stop_reason: str, text_tokens: int) -> Path:
    """Write `<folder>/<request_id>.npy` and its `.json`; returns the .npy path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{request_id}.npy"
    np.save(path, codes)
    meta = {"request_id": request_id, "text": text, "speaker": speaker, "language": language,
            "model_dir": model_dir, "frames": int(codes.shape[0]), "stop_reason": stop_reason,
            "text_tokens": int(text_tokens)}
    path.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False, indent=2))
    return path


def read_codes(path: str | Path) -> np.ndarray:
    """A codes dump's array [frames, 16] as int64; ValueError when it is not one."""
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a codes dump (.npy [frames, {CODEBOOKS}]): {exc}") from None
    if codes.ndim != 2 or codes.shape[1] != CODEBOOKS or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{path}: expected an integer array of shape [frames, {CODEBOOKS}], "
                         f"got {codes.dtype} {codes.shape}")
    return codes.astype(np.int64)


def read_dump_meta(path: str | Path) -> dict[str, Any]:
    """The `.json` beside a dump's `.npy`, or {} when there is none."""
    meta = Path(path).with_suffix(".json")
    return json.loads(meta.read_text()) if meta.is_file() else {}


def load_codes(path: str | Path) -> torch.Tensor:
    """A codes dump ([frames, 16] .npy) as a LongTensor."""
    return torch.from_numpy(read_codes(path))
