"""Stands in for `vllm` where no GPU is: takes `vllm serve MODEL --host H --port P
--served-model-name S ...` as scripts/run_llm_server.sh passes it, and by VLLM_STANDIN:

- `serve`: serves the dev backend (python -m tools.omni_dev) on that address, which
  answers /v1/models as vLLM does;
- `orphan`: first starts a child in its own session that ignores SIGTERM and is named like
  vLLM's engine core, as vLLM's EngineCore outlives its parent; then serves as above;
- `never-healthy`: prints loading progress forever and never listens.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ENGINE_CORE = "VLLM::EngineCore"


def engine_core() -> None:
    Path("/proc/self/comm").write_text(ENGINE_CORE[:15])  # the kernel keeps 15 characters
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(60)


def main() -> None:
    if sys.argv[1:] == [ENGINE_CORE]:
        engine_core()
    ap = argparse.ArgumentParser()
    ap.add_argument("serve")
    ap.add_argument("model")
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", required=True)
    ap.add_argument("--served-model-name", required=True)
    args, _vllm_only = ap.parse_known_args()
    mode = os.environ.get("VLLM_STANDIN", "serve")
    if mode == "never-healthy":
        for percent in range(sys.maxsize):
            print(f"Loading safetensors checkpoint shards: {percent % 100}% Completed", flush=True)
            time.sleep(1)
    if mode == "orphan":
        subprocess.Popen([sys.executable, __file__, ENGINE_CORE], start_new_session=True)
    os.execv(sys.executable, [sys.executable, "-m", "tools.omni_dev", "--host", args.host,
                              "--port", args.port, "--model", args.served_model_name])


if __name__ == "__main__":
    main()
