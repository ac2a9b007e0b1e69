"""The persistent cache of TTS_COMPILE=1 (runtime/compiled.py): one folder per key,

    <cache root>/compile-cache/<key>/
        key.json        what the key hashes: both layer geometries, the dtype, the torch,
                        Triton and Python versions and the device (GPU name, or CPU
                        architecture)
        inductor/       TORCHINDUCTOR_CACHE_DIR (FX graph and AOTAutograd caches)
        triton/         TRITON_CACHE_DIR (compiled GPU kernels)
        artefacts.bin   torch.compiler.save_cache_artifacts() of the last start: the
                        portable copy of the compiled code, loaded before compiling

so a later start compiles from the caches. A variable the user has set is left as it
is. Nothing here may stop a start: an artefacts file that cannot be read, is
truncated, belongs to another key or is refused by torch is removed with a warning
(the engine compiles afresh); a compile that fails while the folder held entries is
retried once with the folder cleared. Clearing by hand: remove the folder, or all
of `<cache root>/compile-cache`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from ..model.configs import TTSModelConfig

log = logging.getLogger("tts_engine.compile_cache")

MAGIC = b"streamtalk compile artefacts 1\n"
ARTEFACTS = "artefacts.bin"
# The cache variables this process has pointed at a key's folder: those a later engine
# (another key) may point elsewhere; any other value is the user's.
_POINTED: dict[str, str] = {}


class InvalidArtefacts(Exception):
    pass


class CompileCache:
    def __init__(self, directory: Path, parts: dict[str, str]) -> None:
        self.dir, self.parts = directory, parts
        self.key = directory.name
        self.artefacts_loaded = False
        self.artefacts_problem: str | None = None  # why a file there was not used
        self.retried = False
        self._counts_at_open = _cache_counts()

    @classmethod
    def open(cls, root: Path, config: TTSModelConfig, dtype: torch.dtype,
             device: torch.device) -> CompileCache:
        """The key's folder under `root`/compile-cache, made current: the cache variables
        point into it and its artefacts are loaded."""
        parts = key_parts(config, dtype, device)
        key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
        cache = cls(root / "compile-cache" / key, parts)
        cache.dir.mkdir(parents=True, exist_ok=True)
        (cache.dir / "key.json").write_text(json.dumps(parts, indent=2, sort_keys=True) + "\n")
        for variable, sub in (("TORCHINDUCTOR_CACHE_DIR", "inductor"),
                              ("TRITON_CACHE_DIR", "triton")):
            _point(variable, cache.dir / sub)
        cache.load()
        return cache

    @property
    def artefacts_path(self) -> Path:
        return self.dir / ARTEFACTS

    def load(self) -> None:
        path = self.artefacts_path
        if not path.exists():
            return
        try:
            info = torch.compiler.load_cache_artifacts(self._verified_payload(path.read_bytes()))
            if info is None:
                raise InvalidArtefacts("torch could not read them")
        except Exception as exc:  # noqa: BLE001 - a bad cache costs a compile, never the start
            self.artefacts_problem = f"{type(exc).__name__}: {exc}"
            log.warning("compile cache: ignoring and removing %s (%s); compiling afresh", path,
                        self.artefacts_problem)
            path.unlink(missing_ok=True)
            return
        self.artefacts_loaded = True
        log.info("compile cache: loaded %s", path)

    def _verified_payload(self, data: bytes) -> bytes:
        if not data.startswith(MAGIC):
            raise InvalidArtefacts("not a streamtalk artefacts file")
        header_line, sep, payload = data[len(MAGIC):].partition(b"\n")
        try:
            header = json.loads(header_line) if sep else None
        except ValueError:
            header = None
        if not isinstance(header, dict):
            raise InvalidArtefacts("unreadable header")
        if header.get("key") != self.key:
            raise InvalidArtefacts(f"written for key {header.get('key')!r} "
                                   f"({header.get('parts')}), this engine's is {self.key!r} "
                                   f"({self.parts})")
        if len(payload) != header.get("bytes"):
            raise InvalidArtefacts(f"truncated or altered: {len(payload)} bytes, "
                                   f"the header says {header.get('bytes')}")
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise InvalidArtefacts("truncated or altered: the checksum differs from the header's")
        return payload

    def compile(self, run: Callable[[], None]) -> None:
        """`run` (which compiles); when it fails while the folder held entries, once more
        after clearing the folder."""
        had_entries = any(p.name != "key.json" for p in self.dir.iterdir())
        try:
            run()
        except Exception as exc:
            if not had_entries:
                raise
            log.warning("compile cache: compiling with %s failed (%s: %s); clearing it and "
                        "compiling afresh", self.dir, type(exc).__name__, exc)
            self.retried = True
            self.clear()
            torch._dynamo.reset()
            run()

    def save(self) -> None:
        """The artefacts of what this process compiled or loaded, written atomically."""
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            return
        payload = saved[0]
        header = {"key": self.key, "parts": self.parts, "bytes": len(payload),
                  "sha256": hashlib.sha256(payload).hexdigest()}
        tmp = self.artefacts_path.with_name(f".{ARTEFACTS}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)
            os.replace(tmp, self.artefacts_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("compile cache: could not write %s (%s); the next start compiles afresh",
                        self.artefacts_path, exc)
            return
        log.info("compile cache: saved %s (%.1f MiB)", self.artefacts_path, len(payload) / 2**20)

    def clear(self) -> None:
        """Everything in the folder but key.json (the user's own cache folders elsewhere stay)."""
        for entry in self.dir.iterdir():
            if entry.name == "key.json":
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def report(self) -> dict:
        """What this start took from the caches (inductor's FX graph cache, AOTAutograd's)."""
        now = _cache_counts()
        counts = {name: now[name] - self._counts_at_open[name] for name in now}
        return {"dir": str(self.dir), "key": self.key, "artefacts_loaded": self.artefacts_loaded,
                "artefacts_problem": self.artefacts_problem, "retried": self.retried, **counts}


def key_parts(config: TTSModelConfig, dtype: torch.dtype, device: torch.device) -> dict[str, str]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"{device.type} {platform.machine()}"
    return {"talker": repr(config.talker.geometry),
            "predictor": repr(config.talker.code_predictor.geometry), "dtype": str(dtype),
            "torch": torch.__version__, "triton": triton_version,
            "python": platform.python_version(), "device": device_name}


def _point(variable: str, path: Path) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get(variable)
    # torch sets the variables to its own defaults (in the temp folder) when it first needs them
    torch_default = current is not None and Path(default_cache_dir()) in (Path(current),
                                                                          *Path(current).parents)
    if current is not None and _POINTED.get(variable) != current and not torch_default:
        log.info("compile cache: %s=%s (set by the user) stays", variable, current)
        return
    os.environ[variable] = _POINTED[variable] = str(path)


def _cache_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"fx_graph_cache_hits": int(counters["inductor"]["fxgraph_cache_hit"]),
            "fx_graph_cache_misses": int(counters["inductor"]["fxgraph_cache_miss"]),
            "aot_autograd_cache_hits": int(counters["aot_autograd"]["autograd_cache_hit"]),
            "aot_autograd_cache_misses": int(counters["aot_autograd"]["autograd_cache_miss"])}
