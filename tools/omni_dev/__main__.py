"""`python -m tools.omni_dev [--host H] [--port P] [--model M] ...`."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from aiohttp import web

from .app import create_app
from .asr import Transcriber
from .config import KNOBS, ConfigError, OmniDevConfig
from .responder import ResponsesFileError, ScriptedResponder

log = logging.getLogger("omni_dev")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.omni_dev",
        description="OpenAI-compatible dev stand-in for Qwen3-Omni: real ASR, scripted replies.",
    )
    KNOBS.add_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = OmniDevConfig.from_env(**vars(args))
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
