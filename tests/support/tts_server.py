"""`python -m tts_engine serve` as a child process, on a free port and the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from streamtalk_common.net import free_port
from streamtalk_common.paths import REPO_ROOT


class TTSServer:
    def __init__(self, model_dir: Path, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TTS_DEEP_STREAM_DEVICE": "cpu", **(extra_env or {})}
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tts_engine", "serve", "--model-dir", str(model_dir),
             "--port", str(self.port)],
            cwd=REPO_ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"TTS server exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                body = exc.read().decode(errors="replace")
                if "load_failed" in body:  # it will not get ready: say why now
                    raise RuntimeError(f"TTS server failed to load: {body}\n{self.log()}") from None
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"TTS server not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """The server's log without its access lines (the readiness polls would bury the rest)."""
        lines = [ln for ln in self.log_path.read_text().splitlines() if "aiohttp.access" not in ln]
        return "\n".join(lines)[-4000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
