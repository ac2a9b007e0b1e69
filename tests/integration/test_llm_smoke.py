"""`python -m tools.llm_smoke` against the real dev Omni backend (real whisper, scripted replies),
and its failures: an unreachable backend, a model the backend does not serve, an empty reply."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.infra import REPO_ROOT, OmniDevServer, service_env, start_omni_dev_process

from streamtalk_common.net import free_port

pytestmark = pytest.mark.timeout(180)

WEATHER_REPLY_WORD = "sunny"  # tools/omni_dev/responses.json's weather rule


def smoke(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.llm_smoke", *args, "--out", str(out)],
        cwd=REPO_ROOT, env=service_env(STREAMTALK_OUTPUT=str(tmp_path)),
        capture_output=True, text=True, timeout=120,  # a hang fails here
    )
    return proc, json.loads(out.read_text()) if out.exists() else {}


def test_text_and_audio_turns_pass_against_the_dev_backend(
    omni_dev_server: OmniDevServer, tmp_path: Path
) -> None:
    proc, report = smoke(tmp_path, "--base-url", omni_dev_server.base_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["ok"] and report["model"] == omni_dev_server.model
    # rendered with espeak-ng, no --audio given
    assert Path(report["audio"]).is_relative_to(tmp_path)
    text, audio = report["turns"]
    assert (text["turn"], audio["turn"]) == ("text", "audio")
    assert WEATHER_REPLY_WORD in text["reply"]
    for turn in (text, audio):
        assert turn["ok"] and turn["reply"] and turn["finish_reason"] == "stop"
        assert turn["ttft_ms"] > 0 and turn["tokens"] > 1 and turn["tokens_per_s"] > 0
        assert turn["tokens_source"] == "usage"
    assert "PASS" in proc.stdout and "ttft_ms" in proc.stdout


def test_unreachable_backend_fails_with_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    proc, report = smoke(tmp_path, "--base-url", url)
    assert proc.returncode == 1
    assert f"{url} is unreachable" in proc.stderr
    assert report["ok"] is False and report["turns"] == []
    assert "FAIL" in proc.stdout


def test_a_model_the_backend_does_not_serve_is_named(omni_dev_server: OmniDevServer,
                                                     tmp_path: Path) -> None:
    proc, report = smoke(tmp_path, "--base-url", omni_dev_server.base_url, "--model",
                         "no-such-model")
    assert proc.returncode == 1
    assert "'no-such-model' is not served" in proc.stderr
    assert omni_dev_server.model in proc.stderr  # what is valid
    assert report["served"] == [omni_dev_server.model]


def test_an_empty_reply_fails(tmp_path: Path) -> None:
    responses = tmp_path / "silent.json"
    responses.write_text(json.dumps({"default": "", "empty": ""}))
    server = start_omni_dev_process(OMNI_DEV_RESPONSES=str(responses),
                                    OMNI_DEV_FIRST_TOKEN_DELAY_S="0.05")
    try:
        proc, report = smoke(tmp_path, "--base-url", server.base_url, "--text",
                             "Tell me something.")
    finally:
        server.process.stop()
    assert proc.returncode == 1
    assert [t["error"] for t in report["turns"]] == ["empty reply (finish_reason stop)"] * 2


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    proc, _ = smoke(tmp_path, "--audio", str(tmp_path / "missing.wav"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    proc, _ = smoke(tmp_path, "--text", "  ")
    assert proc.returncode == 2 and "--text must not be empty" in proc.stderr
