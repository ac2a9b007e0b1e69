"""Environment knobs: each package defines every one of its knobs once, as a field of its
config dataclass, and everything else (parsing, checking, the docs' table) comes from there.

    @dataclass(frozen=True)
    class AgentConfig:
        llm_max_tokens: int = knob("LLM_MAX_TOKENS", 150, "per reply", lo=1, hi=4096)

    KNOBS = KnobTable(AgentConfig, AgentConfigError, log, renamed={"OLD_NAME": "NEW_NAME"})

- `KNOBS.values(env, overrides)`: the values the variables set, parsed by the field's kind
  (a blank variable is unset and leaves the default; `bool` takes 1/0, true/false, yes/no,
  on/off; a knob with `choices` is read in lower case), then the overrides that are not None
  (command-line flags). A name in `renamed` is read as its new name with a deprecation
  warning; one in `removed` is ignored with a warning; a `constant` must hold its one value.
- `KNOBS.check(config)`: the ranges and choices of a built config (each config's
  `__post_init__` calls it, so flags and direct construction are checked too).
- `KNOBS.markdown()`: the table of the docs. A doc holds it between `<!-- knobs: MODULE -->`
  and `<!-- /knobs -->`; `python -m streamtalk_common.knobs` rewrites every such table from
  MODULE's `KNOBS`, `--check` lists the stale ones (tests/unit/test_knobs.py runs it).

Every error is the table's ConfigError subclass and names the variable and what is valid.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .paths import REPO_ROOT

_KNOB = "streamtalk_knob"  # the field metadata key that holds a field's Knob
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
_WHAT = {int: "an integer", float: "a number"}
PORT_RANGE = {"lo": 0, "hi": 65535}  # knob(..., **PORT_RANGE): a TCP port


@dataclass(frozen=True)
class Knob:
    """One environment variable and the config field it sets (`attr`; "" for a constant)."""

    env: str
    help: str
    kind: Callable[[str], Any] = str  # int, float, bool, str, Path, or a parser raising ValueError
    attr: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is out of range
    choices: tuple[str, ...] = ()
    # read, in order, when `env` is unset: other names of the same setting
    fallback: tuple[str, ...] = ()
    flag: str = ""  # the command-line flag that sets it too
    shown_default: str | None = None  # the docs' default where the field's is computed at run time

    def valid(self) -> str:
        """What is valid, as the errors and the docs say it ("" when anything is)."""
        if self.choices:
            return ", ".join(self.choices)
        if self.kind is bool:
            return "1, 0"
        if self.lo is None and self.hi is None:
            return ""
        lo = "(-inf" if self.lo is None else f"{'(' if self.lo_open else '['}{self.lo}"
        return f"{lo}, {'inf)' if self.hi is None else f'{self.hi}]'}"

    def parse(self, raw: str, name: str, error: type[ConfigError]) -> Any:
        """The value of the variable `name` (this knob's, or a fallback or old name of it)."""
        if self.kind is bool:
            if raw.lower() in TRUE_WORDS:
                return True
            if raw.lower() in FALSE_WORDS:
                return False
            raise error(f"{name}={raw!r} is not a boolean (use 1/0)")
        try:
            return self.kind(raw.lower() if self.choices else raw)
        except ValueError as exc:
            what = _WHAT.get(self.kind)
            raise error(f"{name}={raw!r} "
                        + (f"is not {what}" if what else f"is not valid: {exc}")) from None

    def out_of_bounds(self, value: Any) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return True
        return self.hi is not None and value > self.hi


def knob(env: str, default: Any, help: str, *, kind: Callable[[str], Any] | None = None,
         factory: Callable[[], Any] | None = None, repr: bool = True, **spec: Any) -> Any:
    """A config dataclass field read from `env`: its default (or `factory`), its meaning for the
    docs, and what is valid (Knob's `lo`, `hi`, `lo_open`, `choices`; its `fallback` names,
    `flag`, `shown_default`). The kind is the default's type unless given."""
    spec_knob = Knob(env, help, kind or type(default), **spec)
    metadata = {_KNOB: spec_knob}
    if factory is not None:
        return dataclasses.field(default_factory=factory, repr=repr, metadata=metadata)
    return dataclasses.field(default=default, repr=repr, metadata=metadata)


def constant(env: str, value: str, why: str) -> Knob:
    """A variable of the product's original interface that only ever held one value: still
    accepted with that value, refused with any other."""
    return Knob(env, why, choices=(value,))


class KnobTable:
    """The knobs of one config dataclass, every field of which is a `knob`."""

    def __init__(self, config: type, error: type[ConfigError], log: logging.Logger, *,
                 renamed: Mapping[str, str] | None = None, removed: Mapping[str, str] | None = None,
                 constants: Iterable[Knob] = ()) -> None:
        self.config, self.error, self.log = config, error, log
        fields = dataclasses.fields(config)
        bare = [f.name for f in fields if _KNOB not in f.metadata]
        if bare:
            raise TypeError(f"{config.__name__}: fields {bare} are not knobs; "
                            "declare them with knob()")
        self.knobs = tuple(dataclasses.replace(f.metadata[_KNOB], attr=f.name) for f in fields)
        self.defaults = {f.name: f.default for f in fields}
        unshown = [k.env for k in self.knobs
                   if self.defaults[k.attr] is dataclasses.MISSING and k.shown_default is None]
        if unshown:  # a factory's value depends on the machine: the docs need words for it
            raise TypeError(f"{config.__name__}: knobs {unshown} have a default factory "
                            "but no shown_default")
        self.renamed = dict(renamed or {})  # old name -> new name
        self.removed = dict(removed or {})  # name -> why it does nothing now
        self.constants = tuple(constants)
        by_env = {k.env: k for k in self.knobs}
        unknown = set(self.renamed.values()) - by_env.keys()
        if unknown:
            raise ValueError(f"renamed to knobs that do not exist: {sorted(unknown)}")
        self._by_env = by_env

    def values(self, env: Mapping[str, str],
               overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The fields the variables of `env` set, then the `overrides` that are not None."""
        env = {name: raw.strip() for name, raw in env.items() if raw.strip()}
        for name, why in self.removed.items():
            if name in env:
                self.log.warning("%s does nothing and was removed (%s); ignored", name, why)
        self._read_renamed(env)
        for k in self.constants:
            if k.env in env and env[k.env] != k.choices[0]:
                raise self.error(f"{k.env}={env[k.env]!r}; valid: only {k.choices[0]} ({k.help})")
        values: dict[str, Any] = {}
        for k in self.knobs:
            name = next((n for n in (k.env, *k.fallback) if n in env), None)
            if name is not None:
                values[k.attr] = k.parse(env[name], name, self.error)
        values.update({attr: v for attr, v in (overrides or {}).items() if v is not None})
        return values

    def _read_renamed(self, env: dict[str, str]) -> None:
        """Give each new name its old names' value, with a deprecation warning each."""
        old_names: dict[str, list[str]] = defaultdict(list)
        for old, new in self.renamed.items():
            if old in env:
                old_names[new].append(old)
        for new, olds in old_names.items():
            if new in env:
                for old in olds:
                    self.log.warning("%s is deprecated and ignored: %s is set", old, new)
                continue
            target = self._by_env[new]
            if len({target.parse(env[old], old, self.error) for old in olds}) > 1:
                said = " and ".join(f"{old}={env[old]}" for old in olds)
                raise self.error(f"{said} disagree; they are old names of {new}: set that instead")
            for old in olds:
                self.log.warning("%s is deprecated: it is read as %s, set that instead", old, new)
            env[new] = env[olds[0]]

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        """A command-line flag for each knob that names one; pass the parsed flags to
        `values` as overrides (a flag left out is None: the variable or the default holds)."""
        for k in self.knobs:
            if k.flag:
                parser.add_argument(k.flag, dest=k.attr, type=k.kind, metavar=k.attr.upper(),
                                    help=f"{k.help} (env {', else '.join((k.env, *k.fallback))}; "
                                         f"default {self.shown_default(k)})".replace("`", ""))

    def check(self, config: Any) -> None:
        """Every knob's value in range and among its choices."""
        for k in self.knobs:
            value = getattr(config, k.attr)
            flag = f" (the flag {k.flag} sets it too)" if k.flag else ""
            if k.choices and value not in k.choices:
                raise self.error(f"{k.env}={value!r}; valid: {k.valid()}{flag}")
            if value is not None and k.out_of_bounds(value):
                raise self.error(f"{k.env}={value} is out of range {k.valid()}{flag}")

    def shown_default(self, k: Knob) -> str:
        return k.shown_default if k.shown_default is not None else _shown(self.defaults[k.attr])

    def markdown(self) -> str:
        """The docs' table of these knobs."""
        rows = ["| variable | default | valid | meaning |", "|---|---|---|---|"]
        for k in self.knobs:
            name = f"`{k.env}`" + "".join(f", else `{f}`" for f in k.fallback)
            name += f" (`{k.flag}`)" if k.flag else ""
            rows.append(f"| {name} | {self.shown_default(k)} | "
                        f"{_code_list(k.valid())} | {k.help} |")
        rows += [f"| `{k.env}` | `{k.choices[0]}` | only `{k.choices[0]}` | a constant, "
                 f"kept for its name: {k.help} |"
                 for k in self.constants]
        rows += [f"| `{old}` | | | old name of `{new}` (a deprecation warning) |"
                 for old, new in self.renamed.items()]
        rows += [f"| `{name}` | | | removed, ignored with a warning: {why} |"
                 for name, why in self.removed.items()]
        return "\n".join(rows)


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if value == "":
        return "empty"
    if isinstance(value, tuple):
        return ", ".join(f"`{v}`" for v in value)
    if isinstance(value, Path) and value.is_relative_to(REPO_ROOT):
        return f"`{value.relative_to(REPO_ROOT)}`"
    return f"`{value}`"


def _code_list(valid: str) -> str:
    if not valid or valid[0] in "[(":
        return f"`{valid}`" if valid else ""
    return ", ".join(f"`{v}`" for v in valid.split(", "))


# -- the docs' tables -------------------------------------------------------------------------

_BLOCK = re.compile(r"(<!-- knobs: (?P<module>[\w.]+) -->\n)(?P<table>.*?)(<!-- /knobs -->)", re.S)


def doc_files(root: Path = REPO_ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def refreshed(text: str) -> str:
    """`text` with each knob table regenerated from its module's KNOBS."""
    def table(match: re.Match[str]) -> str:
        knobs: KnobTable = importlib.import_module(match["module"]).KNOBS
        return match.group(1) + knobs.markdown() + "\n" + match.group(4)

    return _BLOCK.sub(table, text)


def documented_modules(root: Path = REPO_ROOT) -> set[str]:
    return {m["module"] for path in doc_files(root) for m in _BLOCK.finditer(path.read_text())}


def stale_docs(root: Path = REPO_ROOT) -> list[Path]:
    """The docs whose knob tables differ from their modules' KNOBS."""
    return [path for path in doc_files(root) if refreshed(text := path.read_text()) != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamtalk_common.knobs",
        description="Rewrite the knob tables of README.md and docs/*.md from the packages' KNOBS.")
    parser.add_argument("--check", action="store_true",
                        help="only list the stale docs (exit 1 if any)")
    args = parser.parse_args(argv)
    stale = stale_docs()
    for path in stale:
        if args.check:
            print(f"{path.relative_to(REPO_ROOT)}: knob table out of date", file=sys.stderr)
        else:
            path.write_text(refreshed(path.read_text()))
            print(f"rewrote {path.relative_to(REPO_ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
