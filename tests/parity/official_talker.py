"""Run the official qwen-tts talker on pre-tokenized prompts (parity venv only).

Usage: python official_talker.py MODEL_DIR CASES_JSON OUT_JSON
CASES_JSON: [{"ids": [...], "speaker": "serena", "language": "auto", "max_new_tokens": N}, ...]
Writes [{"codes": [[16 ints] per frame]}, ...]. Greedy: do_sample=False,
subtalker_dosample=False, everything else as generation_config.json implies.
"""

import json
import sys

import torch
from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration
from safetensors.torch import load_file
from transformers import AutoConfig


def main() -> None:
    model_dir, cases_path, out_path = sys.argv[1:4]
    AutoConfig.register("qwen3_tts", Qwen3TTSConfig)
    config = Qwen3TTSConfig.from_pretrained(model_dir)
    model = Qwen3TTSForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(load_file(f"{model_dir}/model.safetensors"), strict=False)
    if missing or unexpected:
        raise SystemExit(f"official model does not accept the checkpoint: missing={missing[:5]} unexpected={unexpected[:5]}")
    model = model.float().eval()
    results = []
    for case in json.load(open(cases_path)):
        ids = torch.tensor([case["ids"]])
        with torch.no_grad():
            codes, _ = model.generate(
                input_ids=[ids], instruct_ids=[None], languages=[case["language"]], speakers=[case["speaker"]],
                non_streaming_mode=True, max_new_tokens=case["max_new_tokens"], do_sample=False,
                subtalker_dosample=False,
            )
        results.append({"codes": codes[0].tolist()})
    json.dump(results, open(out_path, "w"))


if __name__ == "__main__":
    main()
