"""`python -m tools.omni_dev [--host H] [--port P] [--model M] ...`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from aiohttp import web

from .app import create_app
from .asr import Transcriber
from .config import ConfigError, OmniDevConfig
from .responder import ResponsesFileError, ScriptedResponder

log = logging.getLogger("omni_dev")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.omni_dev",
        description="OpenAI-compatible dev stand-in for Qwen3-Omni: real ASR, scripted replies.",
    )
    parser.add_argument("--host", help="bind address (env OMNI_DEV_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env OMNI_DEV_PORT, default 8000)")
    parser.add_argument("--model", help="served model name (env OMNI_DEV_MODEL, else OMNI_MODEL)")
    parser.add_argument("--responses", type=Path, help="rules file (env OMNI_DEV_RESPONSES)")
    parser.add_argument(
        "--first-token-delay", type=float, help="seconds (env OMNI_DEV_FIRST_TOKEN_DELAY_S)"
    )
    parser.add_argument("--token-rate", type=float, help="tokens/s (env OMNI_DEV_TOKENS_PER_S)")
    parser.add_argument(
        "--whisper-model-dir",
        type=Path,
        help="faster-whisper model (env OMNI_DEV_WHISPER_MODEL_DIR)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = OmniDevConfig.from_env(
            host=args.host,
            port=args.port,
            model=args.model,
            responses_path=args.responses,
            first_token_delay_s=args.first_token_delay,
            tokens_per_s=args.token_rate,
            whisper_model_dir=args.whisper_model_dir,
        )
        responder = ScriptedResponder.from_file(config.responses_path)
        model_dir = config.resolved_whisper_dir()
    except (ConfigError, ResponsesFileError) as exc:
        print(f"omni_dev: configuration error: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    transcriber = Transcriber(model_dir, threads=config.asr_threads)
    log.info("loaded faster-whisper from %s in %.1f s", model_dir, time.monotonic() - t0)
    log.info("faster-whisper warmed up in %.2f s", transcriber.warm_up())
    log.info(
        "serving model %r at http://%s:%d/v1 (first token %.3f s, %.0f tokens/s, %d rules)",
        config.model,
        config.host,
        config.port,
        config.first_token_delay_s,
        config.tokens_per_s,
        len(responder.rules),
    )
    try:
        web.run_app(
            create_app(config, transcriber, responder),
            host=config.host,
            port=config.port,
            print=None,
        )
    except OSError as exc:
        print(f"omni_dev: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        transcriber.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
