"""`python -m tts_engine serve` (streamtalk_common/stack.py) as a child process, on a free
port and the CPU."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from streamtalk_common import stack
from streamtalk_common.net import free_port


class TTSServer:
    def __init__(self, model_dir: Path, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = {"TTS_DEEP_STREAM_DEVICE": "cpu", **(extra_env or {})}
        service = stack.tts_server(self.port, model_dir, **settings)
        self.log_path = log_path
        self.process = stack.ServiceProcess(service, log_path, base_env=os.environ)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
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
        lines = [ln for ln in self.process.log_text().splitlines() if "aiohttp.access" not in ln]
        return "\n".join(lines)[-4000:]

    def stop(self) -> None:
        self.process.stop()
