"""The official qwen-tts implementation, driven for parity tests (parity venv only).

    python official_talker.py generate MODEL_DIR CASES_JSON OUT_JSON [--device cpu|cuda]
            [--dtype float32|bfloat16]
        CASES_JSON: [{"ids": [...], "speaker", "language", "max_new_tokens"}, ...]
        -> [{"codes": [[16 ints] per frame]}, ...] from Qwen3TTSForConditionalGeneration.generate
           (default float32 on CPU; float32 on CUDA runs with TF32 off)
    python official_talker.py e2e MODEL_DIR CASES_JSON OUT_DIR
        CASES_JSON: [{"text", "speaker", "language", "max_new_tokens"}, ...]
        -> OUT_DIR/case_N.npz with `wav` and `codes`, through Qwen3TTSModel.from_pretrained
           and generate_custom_voice, the public API a user calls
    python official_talker.py save-random CONFIG_JSON OUT_DIR SEED
        -> the official classes' own random init, written with save_pretrained
    python official_talker.py env OUT_JSON
        -> the versions this side runs (python, torch, transformers,
           qwen-tts and where qwen_tts was imported from) and the CUDA device, if any

Greedy everywhere: do_sample=False, subtalker_dosample=False; every other
processor as generation_config.json implies. Float32 on CPU unless `generate`
is told otherwise.
"""

import argparse
import json
import platform
from importlib.metadata import version
from pathlib import Path

import numpy as np
import qwen_tts
import torch
import transformers
from qwen_tts import Qwen3TTSModel
from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration
from safetensors.torch import load_file
from transformers import AutoConfig

GREEDY = {"do_sample": False, "subtalker_dosample": False}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def generate(model_dir: str, cases_path: str, out_path: str, device: str = "cpu",
             dtype: str = "float32") -> None:
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device on this side")
        # true float32 matmuls (and convolutions), as the float32 side of ours runs
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    AutoConfig.register("qwen3_tts", Qwen3TTSConfig)
    # Built under the dtype as the default, as from_pretrained(dtype=...) builds it: the
    # rotary tables, made in float32 explicitly, stay float32 (a cast of the whole model
    # would round them to the dtype).
    torch.set_default_dtype(DTYPES[dtype])
    try:
        model = Qwen3TTSForConditionalGeneration(Qwen3TTSConfig.from_pretrained(model_dir))
    finally:
        torch.set_default_dtype(torch.float32)
    missing, unexpected = model.load_state_dict(load_file(f"{model_dir}/model.safetensors"),
                                                strict=False)
    if missing or unexpected:
        raise SystemExit(f"official model refuses the checkpoint: missing={missing[:5]} "
                         f"unexpected={unexpected[:5]}")
    model = model.to(device).eval()
    results = []
    for case in json.loads(Path(cases_path).read_text()):
        with torch.no_grad():
            codes, _ = model.generate(
                input_ids=[torch.tensor([case["ids"]], device=device)], instruct_ids=[None],
                languages=[case["language"]], speakers=[case["speaker"]], non_streaming_mode=True,
                max_new_tokens=case["max_new_tokens"], **GREEDY,
            )
        results.append({"codes": codes[0].cpu().tolist()})
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
        np.savez(out / f"case_{i}.npz", wav=np.asarray(wavs[0], dtype=np.float32),
                 codes=captured[-1].numpy())


def save_random(config_path: str, out_dir: str, seed: str) -> None:
    AutoConfig.register("qwen3_tts", Qwen3TTSConfig)
    torch.manual_seed(int(seed))
    config = Qwen3TTSConfig(**json.loads(Path(config_path).read_text()))
    model = Qwen3TTSForConditionalGeneration(config)
    model.save_pretrained(out_dir, safe_serialization=True)


def env(out_path: str) -> None:
    cuda = torch.cuda.is_available()
    Path(out_path).write_text(json.dumps({
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "qwen_tts": version("qwen-tts"),
        "qwen_tts_path": str(Path(qwen_tts.__file__).parent),
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
    }))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate")
    p.add_argument("model_dir")
    p.add_argument("cases_path")
    p.add_argument("out_path")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.set_defaults(run=generate)
    p = sub.add_parser("e2e")
    p.add_argument("model_dir")
    p.add_argument("cases_path")
    p.add_argument("out_dir")
    p.set_defaults(run=e2e)
    p = sub.add_parser("save-random")
    p.add_argument("config_path")
    p.add_argument("out_dir")
    p.add_argument("seed")
    p.set_defaults(run=save_random)
    p = sub.add_parser("env")
    p.add_argument("out_path")
    p.set_defaults(run=env)
    return parser.parse_args()


if __name__ == "__main__":
    args = vars(parse_args())
    run = args.pop("run")
    del args["command"]
    run(**args)
