"""LLM smoke test: one text turn and one audio turn against the configured Omni backend.

`python -m tools.llm_smoke [--base-url URL] [--model M] [--text T] [--audio WAV] [--out FILE.json]`

The backend is the agent's (OMNI_BASE_URL, OMNI_MODEL, OMNI_API_KEY and the OMNI_* timeouts:
`agent/config.py`), asked through the agent's own client (`agent/omni_client.py`) with the
agent's system prompt, LLM_MAX_TOKENS and LLM_TEMPERATURE: the dev backend
(`python -m tools.omni_dev`) and vLLM serving Qwen3-Omni answer the same requests. The audio
turn sends a WAV as an `audio_url` data URI, as the agent's speech recognition does; without
`--audio` an espeak-ng question is rendered once into `${STREAMTALK_OUTPUT:-output}/llm_smoke/`.

For each turn: time to first token (request sent -> first text delta), tokens per second
after the first token (the backend's usage count, else the deltas), the reply. The table is
printed last, the JSON goes to `--out` (default `${STREAMTALK_OUTPUT:-output}/llm_smoke.json`).
Exit status 0 when both turns answered, 1 when the backend is unreachable, does not serve
the model, fails or replies with nothing, 2 on a bad argument or setting.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import AgentConfig, AgentConfigError
from agent.omni_client import BackendError, OmniClient, wav_data_uri
from streamtalk_common.paths import output_root
from streamtalk_common.tables import format_table
from tools.autortc.common import read_wav, write_json

DEFAULT_TEXT = "What is the weather like today?"
# rendered when no --audio is given (tools/autortc/make_cases.py recipe fields)
AUDIO_RECIPE = {"id": "llm_smoke_question", "text": "What is the weather?", "voice": "en-us",
                "wpm": 150, "lead_s": 0.2, "tail_s": 0.3}


class SmokeError(Exception):
    """The backend cannot serve the smoke test at all (unreachable, model missing)."""


@dataclass
class TurnResult:
    turn: str
    ok: bool
    ttft_ms: float | None = None
    tokens: int = 0
    tokens_source: str = ""  # usage (the backend's count) or deltas (text chunks received)
    tokens_per_s: float | None = None
    total_ms: float | None = None
    finish_reason: str | None = None
    reply: str = ""
    error: str = ""


def question_wav(path: Path | None) -> Path:
    if path is not None:
        if not path.is_file():
            raise SmokeError(f"--audio {path}: no such file")
        return path
    from tools.autortc.make_cases import make_case

    return make_case(AUDIO_RECIPE, output_root() / "llm_smoke")["wav"]


def audio_content(path: Path) -> list[dict[str, Any]]:
    try:
        samples, rate = read_wav(path)
    except (ValueError, OSError, EOFError) as exc:
        raise SmokeError(f"--audio {path}: {exc} (a 16-bit mono WAV is needed)") from None
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
    return [{"type": "audio_url", "audio_url": {"url": wav_data_uri(pcm, rate)}}]


async def run_turn(client: OmniClient, config: AgentConfig, turn: str, content: Any) -> TurnResult:
    """One streamed completion; a failure or an empty reply is a failed TurnResult."""
    messages = [{"role": "system", "content": config.system_prompt},
                {"role": "user", "content": content}]
    result = TurnResult(turn=turn, ok=False)
    deltas: list[str] = []
    usage_tokens: int | None = None
    t0 = time.monotonic()
    first = last = None
    try:
        async for d in client.stream_chat(
            messages, max_tokens=config.llm_max_tokens, temperature=config.llm_temperature,
            first_token_timeout_s=config.llm_first_token_timeout_s,
            idle_timeout_s=config.llm_idle_timeout_s,
        ):
            if d.content:
                last = time.monotonic()
                first = first or last
                deltas.append(d.content)
            if d.finish_reason:
                result.finish_reason = d.finish_reason
                usage_tokens = d.completion_tokens
    except BackendError as exc:
        result.error = str(exc)
    result.total_ms = round((time.monotonic() - t0) * 1000, 1)
    result.reply = "".join(deltas).strip()
    result.tokens, result.tokens_source = ((usage_tokens, "usage") if usage_tokens
                                           else (len(deltas), "deltas"))
    if first is not None:
        result.ttft_ms = round((first - t0) * 1000, 1)
        if result.tokens > 1 and last > first:  # decode rate: the tokens after the first
            result.tokens_per_s = round((result.tokens - 1) / (last - first), 1)
    if not result.error and not result.reply:
        result.error = f"empty reply (finish_reason {result.finish_reason})"
    result.ok = not result.error
    return result


async def check_backend(client: OmniClient, report: dict[str, Any]) -> None:
    """Fill report's `served` and `model`; SmokeError when the backend cannot serve the turns."""
    try:
        report["served"] = await client.list_models()
    except BackendError as exc:
        raise SmokeError(f"backend unreachable or broken: {exc}") from None
    if not report["served"]:
        raise SmokeError(f"{client.base_url}/models lists no model: is the model still loading?")
    model = await client.model()
    if model not in report["served"]:
        raise SmokeError(f"model {model!r} is not served at {client.base_url}; served: "
                         f"{', '.join(report['served'])} "
                         "(set OMNI_MODEL or --model to one of them)")
    report["model"] = model


async def smoke(config: AgentConfig, text: str, audio: Path) -> dict[str, Any]:
    # no retries: a smoke test reports the backend's first failure, and fails fast
    client = OmniClient(config.omni_base_url, api_key=config.omni_api_key, model=config.omni_model,
                        connect_timeout_s=config.connect_timeout_s, max_retries=0)
    report: dict[str, Any] = {"base_url": config.omni_base_url, "model": None, "served": [],
                              "turns": []}
    try:
        await check_backend(client, report)
        content = await asyncio.to_thread(audio_content, audio)
        for turn, body in (("text", text), ("audio", content)):
            report["turns"].append(asdict(await run_turn(client, config, turn, body)))
    except SmokeError as exc:
        report["error"] = str(exc)
    finally:
        await client.aclose()
    report["ok"] = "error" not in report and all(t["ok"] for t in report["turns"])
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.llm_smoke", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default=None,
                   help="default: OMNI_BASE_URL or http://127.0.0.1:8000/v1")
    p.add_argument("--model", default=None,
                   help="default: OMNI_MODEL, else the first model the backend lists")
    p.add_argument("--text", default=DEFAULT_TEXT, help="the text turn's user message")
    p.add_argument("--audio", type=Path, default=None, help="16-bit mono WAV for the audio turn")
    p.add_argument("--out", type=Path, default=None,
                   help="result JSON (default: $STREAMTALK_OUTPUT/llm_smoke.json)")
    args = p.parse_args(argv)
    if not args.text.strip():
        p.error("--text must not be empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in (("omni_base_url", args.base_url and args.base_url.rstrip("/")),
                                   ("omni_model", args.model)) if v}
    try:
        config = AgentConfig.from_env(**overrides)
        audio = question_wav(args.audio)
    except (AgentConfigError, SmokeError, RuntimeError) as exc:
        print(f"llm_smoke: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(smoke(config, args.text, audio))
    report.update(date=time.strftime("%Y-%m-%d"), audio=str(audio), text=args.text)
    out = write_json(args.out or output_root() / "llm_smoke.json", report)
    rows = [{k: t[k] for k in ("turn", "ok", "ttft_ms", "tokens", "tokens_per_s", "total_ms",
                               "finish_reason")}
            | {"reply": t["reply"][:60] or t["error"][:120]} for t in report["turns"]]
    verdict = "PASS" if report["ok"] else "FAIL"
    print(f"wrote {out}", file=sys.stderr)
    title = f"LLM smoke test: {report['base_url']} model {report['model']}: {verdict}"
    print("\n" + (format_table(title, rows) if rows else title))
    if "error" in report:
        print(f"llm_smoke: {report['error']}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
