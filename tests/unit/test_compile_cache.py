"""The compile cache (tts_engine/runtime/compile_cache.py) without compiling: an unusable
artefacts file is removed with a warning, and a compile that fails is retried once from an
empty cache. Compiled engine starts: integration/test_compile.py."""

from __future__ import annotations

import json
import logging

import pytest

from tts_engine.runtime import compile_cache
from tts_engine.runtime.compile_cache import CompileCache


@pytest.fixture
def cache(tmp_path) -> CompileCache:
    folder = tmp_path / "compile-cache" / "0123456789abcdef"
    folder.mkdir(parents=True)
    return CompileCache(folder, {"device": "cpu test"})


def write_artefacts(cache: CompileCache, payload: bytes, key: str | None = None) -> None:
    import hashlib

    header = {"key": key or cache.key, "parts": cache.parts, "bytes": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest()}
    cache.artefacts_path.write_bytes(compile_cache.MAGIC + json.dumps(header).encode() + b"\n"
                                     + payload)


@pytest.mark.parametrize("damage, problem", [
    (lambda c: c.artefacts_path.write_bytes(b"\x00\x01garbage"), "not a streamtalk artefacts file"),
    (lambda c: c.artefacts_path.write_bytes(compile_cache.MAGIC + b"{half a header"),
     "unreadable header"),
    (lambda c: write_artefacts(c, b"payload", key="fedcba9876543210"),
     "written for key 'fedcba9876543210'"),
    (lambda c: c.artefacts_path.write_bytes(c.artefacts_path.read_bytes()[:-3]),
     "truncated or altered"),
    (lambda c: None, "torch could not read them"),  # a well-formed file of bytes torch cannot read
])
def test_an_unusable_artefacts_file_is_removed_with_a_warning(cache, caplog, damage, problem):
    write_artefacts(cache, b"not torch's serialisation")
    damage(cache)
    with caplog.at_level(logging.WARNING, logger="tts_engine.compile_cache"):
        cache.load()
    assert problem in cache.artefacts_problem and not cache.artefacts_loaded
    assert not cache.artefacts_path.exists()
    assert any("ignoring and removing" in r.getMessage() for r in caplog.records)


def test_a_compile_that_fails_with_a_warm_cache_is_retried_once_from_an_empty_one(cache, caplog):
    (cache.dir / "key.json").write_text("{}")
    (cache.dir / "inductor").mkdir()
    (cache.dir / "inductor" / "entry").write_text("stale")
    runs = []

    def run() -> None:
        runs.append(sorted(p.name for p in cache.dir.iterdir()))
        if len(runs) == 1:
            raise RuntimeError("a broken cache entry")

    with caplog.at_level(logging.WARNING, logger="tts_engine.compile_cache"):
        cache.compile(run)
    assert runs == [["inductor", "key.json"], ["key.json"]] and cache.retried
    assert any("clearing it and compiling afresh" in r.getMessage() for r in caplog.records)


def test_a_compile_that_fails_with_an_empty_cache_fails(cache):
    def run() -> None:
        raise RuntimeError("no C++ compiler")

    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        cache.compile(run)
    assert not cache.retried
