"""The official qwen-tts implementation, driven for parity tests (parity venv only).

    python official_talker.py generate MODEL_DIR CASES_JSON OUT_JSON
        CASES_JSON: [{"ids": [...], "speaker", "language", "max_new_tokens"}, ...]
        -> [{"codes": [[16 ints] per frame]}, ...] from Qwen3TTSForConditionalGeneration.generate
    python official_talker.py e2e MODEL_DIR CASES_JSON OUT_DIR
        CASES_JSON: [{"text", "speaker", "language", "max_new_tokens"}, ...]
        -> OUT_DIR/case_N.npz with `wav` and `codes`, through Qwen3TTSModel.from_pretrained
           and generate_custom_voice, the public API a user calls
    python official_talker.py save-random CONFIG_JSON OUT_DIR SEED
        -> the official classes' own random init, written with save_pretrained

Greedy everywhere: do_sample=False, subtalker_dosample=False; every other
processor as generation_config.json implies. Float32 on CPU.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from qwen_tts import Qwen3TTSModel
from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration
from safetensors.torch import load_file
from transformers import AutoConfig

GREEDY = {"do_sample": False, "subtalker_dosample": False}


def generate(model_dir: str, cases_path: str, out_path: str) -> None:
    AutoConfig.register("qwen3_tts", Qwen3TTSConfig)
    model = Qwen3TTSForConditionalGeneration(Qwen3TTSConfig.from_pretrained(model_dir))
    missing, unexpected = model.load_state_dict(load_file(f"{model_dir}/model.safetensors"), strict=False)
    if missing or unexpected:
        raise SystemExit(f"official model refuses the checkpoint: missing={missing[:5]} unexpected={unexpected[:5]}")
    model = model.float().eval()
    results = []
    for case in json.loads(Path(cases_path).read_text()):
        with torch.no_grad():
            codes, _ = model.generate(
                input_ids=[torch.tensor([case["ids"]])], instruct_ids=[None], languages=[case["language"]],
                speakers=[case["speaker"]], non_streaming_mode=True, max_new_tokens=case["max_new_tokens"], **GREEDY,
            )
        results.append({"codes": codes[0].tolist()})
    Path(out_path).write_text(json.dumps(results))


def e2e(model_dir: str, cases_path: str, out_dir: str) -> None:
    tts = Qwen3TTSModel.from_pretrained(model_dir, dtype=torch.float32, device_map="cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    captured = []
    original = tts.model.speech_tokenizer.decode

    def capture(items):
        captured.append(items[0]["audio_codes"].clone())
        return original(items)

    tts.model.speech_tokenizer.decode = capture
    for i, case in enumerate(json.loads(Path(cases_path).read_text())):
        wavs, sr = tts.generate_custom_voice(
            text=case["text"], speaker=case["speaker"], language=case["language"],
            max_new_tokens=case["max_new_tokens"], **GREEDY,
        )
        assert sr == 24000, sr
        np.savez(out / f"case_{i}.npz", wav=np.asarray(wavs[0], dtype=np.float32), codes=captured[-1].numpy())


def save_random(config_path: str, out_dir: str, seed: str) -> None:
    AutoConfig.register("qwen3_tts", Qwen3TTSConfig)
    torch.manual_seed(int(seed))
    config = Qwen3TTSConfig(**json.loads(Path(config_path).read_text()))
    model = Qwen3TTSForConditionalGeneration(config)
    model.save_pretrained(out_dir, safe_serialization=True)


if __name__ == "__main__":
    commands = {"generate": generate, "e2e": e2e, "save-random": save_random}
    commands[sys.argv[1]](*sys.argv[2:])
