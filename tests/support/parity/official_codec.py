"""The official qwen-tts speech tokenizer, driven for codec parity tests (parity venv only).

    python official_codec.py SPEECH_TOKENIZER_DIR CODES_NPZ OUT_DIR

CODES_NPZ holds arrays of shape [frames, 16] (int64). For each array NAME this writes
OUT_DIR/NAME.npy, the float32 waveform from the public API
`Qwen3TTSTokenizer.from_pretrained(dir).decode([{"audio_codes": codes}])`, and
OUT_DIR/load_info.json, what transformers reports when loading the checkpoint
(missing, unexpected and mismatched tensors: all must be empty). Float32 on CPU.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from qwen_tts import Qwen3TTSTokenizer
from transformers import AutoModel


def main(checkpoint: str, codes_path: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Qwen3TTSTokenizer.from_pretrained(checkpoint, dtype=torch.float32, device_map="cpu")
    # Registered by the call above; load again only to read the loading report.
    _, info = AutoModel.from_pretrained(checkpoint, output_loading_info=True)
    report = {k: [str(x) for x in v] for k, v in info.items()}
    report["feature_extractor"] = type(tokenizer.feature_extractor).__name__
    report["sampling_rate"] = int(tokenizer.feature_extractor.sampling_rate)
    (out / "load_info.json").write_text(json.dumps(report, indent=1))

    cases = np.load(codes_path)
    for name in cases.files:
        codes = torch.from_numpy(cases[name]).long()  # [frames, 16]
        wavs, sample_rate = tokenizer.decode([{"audio_codes": codes}])
        assert sample_rate == 24000, sample_rate
        np.save(out / f"{name}.npy", np.asarray(wavs[0], dtype=np.float32))


if __name__ == "__main__":
    main(*sys.argv[1:])
