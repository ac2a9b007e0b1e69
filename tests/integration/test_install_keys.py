"""The cache root's keyed artefacts (scripts/common.sh) and the pins they are built from."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from streamtalk_common.paths import REPO_ROOT, cache_root
from tts_engine.checkpoint import CHECKPOINT_STAMP, checkpoint_stamp, ensure_checkpoint

CACHE = cache_root()


def bash(script: str, home: Path, repo: Path = REPO_ROOT) -> str:
    """Run `script` after sourcing common.sh with `home` as the cache root; its stdout."""
    env = {**os.environ, "STREAMTALK_HOME": str(home)}
    env.pop("STREAMTALK_DOWNLOADS", None)
    proc = subprocess.run(["bash", "-c", f'. "{repo}/scripts/common.sh"\n{script}'],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def pins() -> dict[str, str]:
    out = subprocess.run(["bash", "-c",
                          f'. "{REPO_ROOT}/scripts/pins.sh"; '
                          'echo "$TORCH_VERSION $TORCHAUDIO_VERSION"'],
                         capture_output=True, text=True, check=True).stdout.split()
    return {"torch": out[0], "torchaudio": out[1]}


def test_install_key_follows_file_content_and_text(tmp_path):
    f = tmp_path / "recipe.sh"
    f.write_text("one\n")
    first = bash(f'install_key "{f}" "torch==1"', tmp_path)
    assert first == bash(f'install_key "{f}" "torch==1"', tmp_path)
    assert len(first) == 16
    assert bash(f'install_key "{f}" "torch==2"', tmp_path) != first
    f.write_text("two\n")
    assert bash(f'install_key "{f}" "torch==1"', tmp_path) != first


def test_new_key_builds_beside_the_old_then_replaces_it(tmp_path):
    home = tmp_path / "home"
    (home / "thing").mkdir(parents=True)  # a real folder of the layout before keyed builds
    (home / "thing" / "stale").write_text("old layout")
    build = ('d="$(begin_artefact thing {key})"; echo {key} >"$d/payload"; '
             'finish_artefact thing {key}')
    bash(build.format(key="aaaa"), home)
    assert (home / "thing").is_symlink() and os.readlink(home / "thing") == "thing-aaaa"
    assert (home / "thing" / "payload").read_text().strip() == "aaaa"
    assert bash("artefact_ready thing aaaa && echo ready || echo missing", home) == "ready"
    assert bash("artefact_ready thing bbbb && echo ready || echo missing", home) == "missing"

    bash(build.format(key="bbbb"), home)
    assert os.readlink(home / "thing") == "thing-bbbb"
    assert not (home / "thing-aaaa").exists(), "the older build is removed"


def test_half_built_artefact_is_never_ready_and_is_rebuilt_from_scratch(tmp_path):
    home = tmp_path / "home"
    half = home / "thing-cccc"
    half.mkdir(parents=True)
    (half / "partial").write_text("interrupted build")
    assert bash("artefact_ready thing cccc && echo ready || echo missing", home) == "missing"
    bash("begin_artefact thing cccc >/dev/null", home)
    assert half.is_dir() and not any(half.iterdir())


def test_read_only_go_module_files_are_removed(tmp_path):
    home = tmp_path / "home"
    ro = home / "thing-dddd" / "pkg"
    ro.mkdir(parents=True)
    (ro / "mod.go").write_text("package x")
    ro.chmod(0o555)
    bash("begin_artefact thing dddd >/dev/null", home)
    assert not (home / "thing-dddd" / "pkg").exists()


def test_all_install_inputs_key_changes_with_a_pin(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "scripts", repo / "scripts")
    shutil.copytree(REPO_ROOT / ".ci", repo / ".ci")
    shutil.copy(REPO_ROOT / "pyproject.toml", repo / "pyproject.toml")
    before = bash("all_install_inputs_key", tmp_path, repo)
    pins_file = repo / "scripts" / "pins.sh"
    pins_file.write_text(pins_file.read_text().replace("TORCHAUDIO_VERSION=",
                                                       "TORCHAUDIO_VERSION=9"))
    assert bash("all_install_inputs_key", tmp_path, repo) != before


@pytest.mark.parametrize("venv, packages",
                         [("venv", ["torch"]), ("parity-venv", ["torch", "torchaudio"])])
def test_installed_venvs_hold_the_pinned_torch_family(venv, packages):
    python = CACHE / venv / "bin" / "python"
    assert python.exists(), f"{python} missing: scripts/test.sh builds it"
    code = ("import importlib.metadata as m, sys; "
            "print(' '.join(m.version(p) for p in sys.argv[1:]))")
    got = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True,
                         check=True).stdout.split()
    assert dict(zip(packages, got)) == {p: pins()[p] for p in packages}


def test_checkpoint_rewrite_replaces_the_folder_whole(tmp_path):
    root = ensure_checkpoint(tmp_path / "ck", "tiny", seed=0)
    want = checkpoint_stamp(root)
    assert want and (root / "config.json").is_file()
    (root / "left-over-from-an-older-writer").write_text("x")
    (root / CHECKPOINT_STAMP).write_text("an-older-writer\n")
    ensure_checkpoint(root, "tiny", seed=0)
    assert checkpoint_stamp(root) == want
    assert not (root / "left-over-from-an-older-writer").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"], "no temporary folder is left"
