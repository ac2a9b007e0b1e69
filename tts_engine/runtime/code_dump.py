"""Codes dumps: each request's codes on disk, to replay the decoder offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def dump_codes(folder: Path, request_id: str, codes: np.ndarray, meta: dict) -> None:
    """codes [frames, 16] as <id>.npy, and what produced them as <id>.json."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{request_id}.npy", codes)
    meta = {"request_id": request_id, **meta, "frames": int(codes.shape[0])}
    (folder / f"{request_id}.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2))


def load_codes(path: str | Path) -> torch.Tensor:
    """A codes dump ([frames, 16] .npy) as a LongTensor."""
    codes = np.load(path)
    if codes.ndim != 2 or codes.shape[1] != 16:
        raise ValueError(f"{path}: expected an array of shape [frames, 16], got {codes.shape}")
    return torch.from_numpy(codes.astype(np.int64))
