"""Tokenize texts with the OFFICIAL Qwen3-TTS processor (run with the parity venv).

Loads the processor the way `qwen_tts.inference.qwen3_tts_model.Qwen3TTSModel`
does (register `Qwen3TTSConfig` / `Qwen3TTSProcessor`, then
`AutoProcessor.from_pretrained(model_dir, fix_mistral_regex=True)`) and calls
it like `Qwen3TTSModel._tokenize_texts` (one text at a time,
`return_tensors="pt", padding=True`).

    python official_tokenize.py MODEL_DIR [MODEL_DIR ...] < texts.json > ids.json

stdin: a JSON list of strings. stdout: one JSON object mapping each MODEL_DIR
to {"ids": [[int, ...] per text], "processor": str, "tokenizer": str,
"transformers": str, "pre_tokenizer_regex": str | null}. Anything the
official package prints goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys


def _split_regex(tokenizer) -> str | None:
    """The split regex the loaded tokenizer really uses (the loader may patch it)."""
    try:
        state = json.loads(tokenizer.backend_tokenizer.pre_tokenizer.__getstate__())
    except Exception:  # reporting only
        return None
    for p in state.get("pretokenizers", [state]):
        if p.get("type") == "Split":
            return p.get("pattern", {}).get("Regex")
    return None


def _tokenize(model_dir: str, texts: list[str]) -> dict:
    import transformers
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, fix_mistral_regex=True)
    ids = []
    for text in texts:
        input_ids = processor(text=text, return_tensors="pt", padding=True)["input_ids"]
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise SystemExit(f"unexpected input_ids shape {tuple(input_ids.shape)}")
        ids.append(input_ids[0].tolist())
    return {
        "ids": ids,
        "processor": type(processor).__name__,
        "tokenizer": type(processor.tokenizer).__name__,
        "transformers": transformers.__version__,
        "pre_tokenizer_regex": _split_regex(processor.tokenizer),
    }


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    texts = json.load(sys.stdin)
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        print("stdin must be a JSON list of strings", file=sys.stderr)
        return 2
    out = {}
    # qwen_tts prints notices on stdout; keep stdout for the JSON result.
    with contextlib.redirect_stdout(sys.stderr):
        from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSProcessor
        from transformers import AutoConfig, AutoProcessor

        AutoConfig.register("qwen3_tts", Qwen3TTSConfig)
        AutoProcessor.register(Qwen3TTSConfig, Qwen3TTSProcessor)
        for model_dir in sys.argv[1:]:
            out[model_dir] = _tokenize(model_dir, texts)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
