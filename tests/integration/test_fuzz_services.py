"""Each HTTP service, fuzzed from its own OpenAPI document (tools/fuzz_api.py) for
FUZZ_SECONDS (default 45 s): no 5xx but the engine's over_capacity, every error JSON, no
truncated 200, no traceback in the server's log, and afterwards a normal request as fast
as before with resident memory grown by less than 50 MB. Each report is written to
`${STREAMTALK_OUTPUT}/fuzz/<service>.json`; a longer run:
`FUZZ_SECONDS=600 scripts/test.sh tests/integration/test_fuzz_services.py`."""

from __future__ import annotations

import json
import os
import re

import pytest
from support.infra import (
    OUTPUT_ROOT,
    LiveKitServer,
    start_omni_dev_process,
    start_token_server_process,
)
from support.tts_server import TTSServer

from tools.fuzz_api import FuzzReport, fuzz, print_report

FUZZ_SECONDS = float(os.environ.get("FUZZ_SECONDS", "45"))
pytestmark = pytest.mark.timeout(FUZZ_SECONDS + 240)


def _assert_clean(service: str, report: FuzzReport, log_text: str) -> None:
    print_report(report)
    (OUTPUT_ROOT / "fuzz").mkdir(parents=True, exist_ok=True)
    (OUTPUT_ROOT / "fuzz" / f"{service}.json").write_text(json.dumps(report.to_dict(), indent=2))
    assert report.requests > 50, "the fuzzer barely ran"
    assert report.ok, [f"{f.operation}: {f.problem} :: {f.curl}" for f in report.failures[:5]]
    # the statuses show both kinds of request were made: accepted ones and refused ones
    statuses = {s for counts in report.statuses.values() for s in counts}
    assert "200" in statuses and any(s.startswith("4") for s in statuses), statuses
    tracebacks = re.findall(r"Traceback \(most recent call last\)", log_text)
    assert not tracebacks, f"{len(tracebacks)} tracebacks in the server log"


def test_the_tts_server_survives_fuzzing(tiny_model_dir, tmp_path) -> None:
    server = TTSServer(tiny_model_dir, tmp_path / "tts.log", {"TTS_MAX_NEW_TOKENS": "16"})
    try:
        server.wait_ready()
        report = fuzz(server.url, seconds=FUZZ_SECONDS, probe="tts", pid=server.process.proc.pid)
        _assert_clean("tts", report, server.log_path.read_text(errors="replace"))
    finally:
        server.stop()


def test_the_token_server_survives_fuzzing(livekit_server: LiveKitServer) -> None:
    server = start_token_server_process(livekit_server, TOKEN_RATE_LIMIT_PER_MIN="0")
    try:
        report = fuzz(server.base_url, seconds=FUZZ_SECONDS, schema_path="/api/openapi.json",
                      probe="token", pid=server.process.proc.pid)
        _assert_clean("token", report, server.process.log_path.read_text(errors="replace"))
    finally:
        server.process.stop()


def test_the_dev_omni_backend_survives_fuzzing() -> None:
    server = start_omni_dev_process(OMNI_DEV_FIRST_TOKEN_DELAY_S="0.01",
                                    OMNI_DEV_TOKENS_PER_S="1000")
    base = server.base_url.removesuffix("/v1")
    try:
        report = fuzz(base, seconds=FUZZ_SECONDS, probe="omni", pid=server.process.proc.pid)
        _assert_clean("omni", report, server.process.log_path.read_text(errors="replace"))
    finally:
        server.process.stop()
