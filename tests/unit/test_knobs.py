"""The env-knob tables (streamtalk_common/knobs.py): parsing, checking, old and removed names,
and the docs' tables, which must match every package's table."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamtalk_common.errors import ConfigError
from streamtalk_common.knobs import KnobTable, constant, documented_modules, knob, stale_docs

log = logging.getLogger("test_knobs")


class DemoError(ConfigError):
    pass


@dataclass(frozen=True)
class Demo:
    rate: float = knob("DEMO_RATE", 2.0, "per second", lo=0, lo_open=True, hi=10, flag="--rate")
    count: int = knob("DEMO_COUNT", 3, "how many", lo=1)
    mode: str = knob("DEMO_MODE", "fast", "how", choices=("fast", "slow"))
    on: bool = knob("DEMO_ON", False, "switch")
    name: str = knob("DEMO_NAME", "x", "a name", fallback=("OTHER_NAME",))
    path: Path | None = knob("DEMO_PATH", None, "a folder", kind=Path)

    def __post_init__(self) -> None:
        DEMO.check(self)


DEMO = KnobTable(Demo, DemoError, log, renamed={"OLD_RATE": "DEMO_RATE", "OLDER_RATE": "DEMO_RATE"},
                 removed={"DEMO_GONE": "nothing reads it"},
                 constants=(constant("DEMO_FIXED", "0", "one value only"),))


def demo(env: dict[str, str], **overrides: object) -> Demo:
    return Demo(**DEMO.values(env, overrides))


def test_values_are_parsed_by_kind_and_blank_is_unset() -> None:
    assert demo({}) == Demo()
    d = demo({"DEMO_RATE": " 0.5 ", "DEMO_COUNT": "7", "DEMO_MODE": "SLOW", "DEMO_ON": "yes",
              "DEMO_PATH": "/tmp/x", "DEMO_NAME": "  "})
    assert (d.rate, d.count, d.mode, d.on, d.path,
            d.name) == (0.5, 7, "slow", True, Path("/tmp/x"), "x")
    assert demo({"DEMO_ON": "off"}).on is False
    assert demo({"OTHER_NAME": "b"}).name == "b" \
        and demo({"OTHER_NAME": "b", "DEMO_NAME": "a"}).name == "a"
    assert demo({"DEMO_COUNT": "7"}, count=9, mode=None) == Demo(count=9)  # None: no override


@pytest.mark.parametrize("env, overrides, said", [
    ({"DEMO_COUNT": "many"}, {}, "DEMO_COUNT='many' is not an integer"),
    ({"DEMO_RATE": "fast"}, {}, "DEMO_RATE='fast' is not a number"),
    ({"DEMO_ON": "maybe"}, {}, "DEMO_ON='maybe' is not a boolean (use 1/0)"),
    ({"DEMO_MODE": "medium"}, {}, "DEMO_MODE='medium'; valid: fast, slow"),
    ({"DEMO_COUNT": "0"}, {}, "DEMO_COUNT=0 is out of range [1, inf)"),
    ({"DEMO_RATE": "0"}, {}, "DEMO_RATE=0.0 is out of range (0, 10] (the flag --rate sets it too)"),
    ({}, {"rate": 11.0}, "DEMO_RATE=11.0 is out of range (0, 10]"),  # an override is checked too
    ({"DEMO_FIXED": "1"}, {}, "DEMO_FIXED='1'; valid: only 0 (one value only)"),
    ({"OLD_RATE": "1", "OLDER_RATE": "2"}, {},
     "OLD_RATE=1 and OLDER_RATE=2 disagree; they are old names of DEMO_RATE"),
])
def test_bad_values_name_the_variable_and_what_is_valid(env: dict[str, str],
                                                        overrides: dict[str, object],
                                                          said: str) -> None:
    with pytest.raises(DemoError) as caught:
        demo(env, **overrides)
    assert str(caught.value).startswith(said)


def test_old_names_are_read_as_the_new_one_and_removed_names_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="test_knobs"):
        assert demo({"OLD_RATE": "4", "OLDER_RATE": "4.0",
                     "DEMO_GONE": "1", "DEMO_FIXED": "0"}).rate == 4.0
    assert caplog.messages == [
        "DEMO_GONE does nothing and was removed (nothing reads it); ignored",
        "OLD_RATE is deprecated: it is read as DEMO_RATE, set that instead",
        "OLDER_RATE is deprecated: it is read as DEMO_RATE, set that instead"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="test_knobs"):
        assert demo({"OLD_RATE": "4", "DEMO_RATE": "5"}).rate == 5.0
    assert caplog.messages == ["OLD_RATE is deprecated and ignored: DEMO_RATE is set"]


def test_a_knob_with_a_flag_gets_a_command_line_flag_that_wins() -> None:
    parser = argparse.ArgumentParser()
    DEMO.add_flags(parser)
    assert demo({"DEMO_RATE": "3"}, **vars(parser.parse_args([]))).rate == 3.0
    assert demo({"DEMO_RATE": "3"}, **vars(parser.parse_args(["--rate", "4"]))).rate == 4.0
    assert "per second (env DEMO_RATE; default 2.0)" in " ".join(parser.format_help().split())


def test_every_field_must_be_a_knob() -> None:
    @dataclass
    class Loose:
        a: int = knob("A", 1, "a")
        b: int = 2

    with pytest.raises(TypeError, match=r"fields \['b'\] are not knobs"):
        KnobTable(Loose, DemoError, log)


def test_the_markdown_table_has_a_row_per_name() -> None:
    rows = DEMO.markdown().splitlines()
    assert rows[:3] == ["| variable | default | valid | meaning |", "|---|---|---|---|",
                        "| `DEMO_RATE` (`--rate`) | `2.0` | `(0, 10]` | per second |"]
    assert "| `DEMO_ON` | `0` | `1`, `0` | switch |" in rows
    assert "| `DEMO_NAME`, else `OTHER_NAME` | `x` |  | a name |" in rows
    assert "| `DEMO_PATH` | unset |  | a folder |" in rows
    assert "| `DEMO_FIXED` | `0` | only `0` | a constant, kept for its name: one value only |" \
        in rows
    assert "| `OLD_RATE` | | | old name of `DEMO_RATE` (a deprecation warning) |" in rows
    assert "| `DEMO_GONE` | | | removed, ignored with a warning: nothing reads it |" in rows


def test_the_docs_hold_every_package_table_as_generated() -> None:
    assert documented_modules() >= {"tts_engine.config", "agent.config", "token_server.config",
                                    "tools.omni_dev.config"}
    assert stale_docs() == [], "run: python -m streamtalk_common.knobs"


# --------------------------------------------------------------------------- the packages' tables


def test_the_engine_refuses_its_constants_and_ignores_removed_knobs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tts_engine.config import ConfigValueError, EngineConfig

    for name in ("TTS_DEEP_STREAM_PROCESS", "TTS_CODEGEN_GROUP_PARALLEL"):
        assert EngineConfig.from_env({name: "0"}) == EngineConfig()
        with pytest.raises(ConfigValueError, match=f"{name}='1'; valid: only 0"):
            EngineConfig.from_env({name: "1"})
    with caplog.at_level(logging.WARNING, logger="tts_engine.config"):
        config = EngineConfig.from_env({"TTS_DEEP_STREAM_CODEGEN_DEVICE": "cuda:1",
                                        "TTS_DEEP_STREAM_DETERMINISTIC": "0"})
    assert config == EngineConfig()
    assert [m.split(" (")[0] for m in caplog.messages] == [
        "TTS_DEEP_STREAM_CODEGEN_DEVICE does nothing and was removed",
        "TTS_DEEP_STREAM_DETERMINISTIC does nothing and was removed"]


def test_the_old_cuda_graph_switches_set_tts_cuda_graphs(caplog: pytest.LogCaptureFixture) -> None:
    from tts_engine.config import ConfigValueError, EngineConfig

    assert EngineConfig.from_env({}).cuda_graphs is True
    assert EngineConfig.from_env({"TTS_CUDA_GRAPHS": "0"}).cuda_graphs is False
    with caplog.at_level(logging.WARNING, logger="tts_engine.config"):
        assert EngineConfig.from_env({"TTS_CODEGEN_CUDAGRAPH_TALKER": "0"}).cuda_graphs is False
        assert EngineConfig.from_env({"TTS_CODEGEN_CUDAGRAPH_CP": "1",
                                      "TTS_DECODER_CUDAGRAPH": "1"}).cuda_graphs
    assert caplog.messages == [
        f"{old} is deprecated: it is read as TTS_CUDA_GRAPHS, set that instead"
        for old in ("TTS_CODEGEN_CUDAGRAPH_TALKER", "TTS_CODEGEN_CUDAGRAPH_CP",
                    "TTS_DECODER_CUDAGRAPH")]
    with pytest.raises(ConfigValueError,
                       match="TTS_CODEGEN_CUDAGRAPH_TALKER=0 and TTS_DECODER_CUDAGRAPH=1 disagree"):
        EngineConfig.from_env({"TTS_CODEGEN_CUDAGRAPH_TALKER": "0", "TTS_DECODER_CUDAGRAPH": "1"})
    with pytest.raises(ConfigValueError, match="TTS_CUDA_GRAPHS='2' is not a boolean"):
        EngineConfig.from_env({"TTS_CUDA_GRAPHS": "2"})
