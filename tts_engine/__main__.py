"""Command line: python -m tts_engine {make-checkpoint, synthesize, config, ...}."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default=None, help="auto (default), float32, bfloat16, float16")


def cmd_make_checkpoint(args: argparse.Namespace) -> int:
    from .checkpoint import ensure_checkpoint, write_checkpoint

    start = time.perf_counter()
    print(f"writing random-init '{args.preset}' checkpoint (seed {args.seed}) to {args.dir} ...",
          flush=True)
    if args.reuse:
        root = ensure_checkpoint(args.dir, args.preset, args.seed)
    else:
        root = write_checkpoint(args.dir, args.preset, args.seed)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    print(f"done in {time.perf_counter() - start:.1f} s: {root} ({size / 2**20:.1f} MiB)")
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    from .config import EngineConfig
    from .synthesis import TTSModel, write_wav

    cfg = EngineConfig.from_env(device=args.device, dtype=args.dtype, model_dir=args.model_dir)
    load_start = time.perf_counter()
    model = TTSModel(cfg.resolved_model_dir, cfg.torch_device, cfg.torch_dtype, cfg.max_text_chars)
    print(f"loaded {cfg.resolved_model_dir} on {cfg.torch_device} ({cfg.torch_dtype}) "
          f"in {time.perf_counter() - load_start:.1f} s", flush=True)
    req = model.make_request(args.text, args.speaker, args.language, sample=args.sample,
                             seed=args.seed)
    result = model.synthesize(req, cfg.max_new_tokens)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out, result.pcm)
    print(f"frames {result.codes.shape[0]} ({result.stop_reason}), audio {result.audio_s:.2f} s, "
          f"wall {result.wall_s:.2f} s, RTF {result.rtf:.3f} -> {out}")
    if args.dump_codes:
        from .runtime.code_dump import dump_codes

        dump = dump_codes(Path(args.dump_codes), out.stem, result.codes.numpy(), text=req.text,
                          speaker=req.speaker, language=req.language,
                          model_dir=str(model.model_dir), stop_reason=result.stop_reason,
                          text_tokens=model.prompt(req).text_token_count)
        print(f"codes dump -> {dump}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from .config import EngineConfig
    from .server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(EngineConfig.from_env(model_dir=args.model_dir, host=args.host, port=args.port,
                                device=args.device, dtype=args.dtype))
    return 0


def cmd_decode_codes(args: argparse.Namespace) -> int:
    from .config import EngineConfig
    from .runtime import load_codes
    from .synthesis import SAMPLE_RATE, TTSModel, write_wav

    cfg = EngineConfig.from_env(device=args.device, dtype=args.dtype, model_dir=args.model_dir)
    codes = load_codes(args.file)
    model = TTSModel(cfg.resolved_model_dir, cfg.torch_device, cfg.torch_dtype)
    pcm = model.decode(codes)
    write_wav(args.out, pcm)
    print(f"decoded {codes.shape[0]} frames ({len(pcm) / SAMPLE_RATE:.2f} s) -> {args.out}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import EngineConfig, markdown_table

    print(markdown_table() if args.markdown else EngineConfig.from_env())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tts_engine",
                                     description="Qwen3-TTS deep-streaming engine")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-checkpoint",
                       help="write a random-init checkpoint in the official layout")
    p.add_argument("dir")
    p.add_argument("--preset", default="tiny", choices=["tiny", "0.6b", "1.7b"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", action="store_true", help="keep an existing identical checkpoint")
    p.set_defaults(func=cmd_make_checkpoint)

    p = sub.add_parser("synthesize", help="text -> WAV (offline: all codes, then one decode)")
    p.add_argument("--model-dir", default=None,
                   help="default: TTS_DEEP_STREAM_MODEL_DIR or the tiny checkpoint")
    p.add_argument("--text", required=True)
    p.add_argument("--speaker", default="serena")
    p.add_argument("--language", default="auto")
    p.add_argument("--out", required=True)
    p.add_argument("--sample", action="store_true", help="seeded sampling instead of greedy")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dump-codes", default=None, metavar="DIR",
                   help="also write the codes dump DIR/<out stem>.npy + .json "
                        "(python -m tools.codes_eval)")
    _add_device_flags(p)
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("serve",
                       help="run the HTTP server (/tts/stream, /synthesize, /v1/audio/speech, ...)")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--host", default=None, help="default: TTS_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: TTS_PORT or 9000")
    _add_device_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("decode-codes",
                       help="replay a codes dump (.npy [frames, 16]) through the decoder")
    p.add_argument("file")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--out", required=True)
    _add_device_flags(p)
    p.set_defaults(func=cmd_decode_codes)

    from .bench import add_parser as add_bench_parser

    add_bench_parser(sub)

    p = sub.add_parser("config", help="print the effective configuration")
    p.add_argument("--markdown", action="store_true", help="print the README's configuration table")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
