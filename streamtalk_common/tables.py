"""Plain-text tables for the command-line tools (benchmarks, smoke tests, evaluations)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_table(title: str, rows: list[dict[str, Any]]) -> str:
    """`rows` as aligned columns (the first row's keys, in order) under `title`."""
    if not rows:
        return f"{title}: no rows"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(format_cell(r.get(c))) for r in rows)) for c in cols}
    lines = [title, "  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(format_cell(r.get(c)).ljust(widths[c]) for c in cols).rstrip()
              for r in rows]
    return "\n".join(lines)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print("\n" + format_table(title, rows))


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    """A tool's result as indented JSON at `path` (its folder made first); None: nowhere."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
