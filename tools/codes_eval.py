"""Codes evaluation: statistics of TTS codes dumps, and where two dumps part, for regression triage.

    python -m tools.codes_eval stats DUMP|DIR ... [--min-run N] [--out FILE.json]
    python -m tools.codes_eval diff A.npy B.npy [--out FILE.json]

A dump is the engine's `<id>.npy` [frames, 16] with its `<id>.json` (format in
`tts_engine/runtime/code_dump.py`); the server writes one per request with
TTS_CODE_DUMP_ENABLE=1, `python -m tts_engine synthesize ... --dump-codes DIR` one per call.

`stats`, per dump: frames, stop reason, the EOS position (the frame at which codebook 0 gave
EOS: the frame count when the reply stopped at EOS, none when it was cut), frames per text
token (the runaway guard allows 64 + 24 per token), runs of at least --min-run identical
consecutive frames (a stuck decoder repeats frames), and per codebook the distinct codes,
the entropy in bits and the most frequent code with its share.
`diff`: the first frame where the dumps differ and the codebooks that differ there (codebook
0 comes from the talker, 1-15 from the code predictor), and how many frames differ.

A table is printed last; the JSON goes to `--out` (default
`${STREAMTALK_OUTPUT:-output}/codes_eval/<command>.json`). Exit status: 0, or for `diff` 1
when the dumps differ; 2 on a bad argument or a file that is not a codes dump.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from streamtalk_common.paths import output_root
from streamtalk_common.tables import format_table
from tools.autortc.common import write_json
from tts_engine.runtime.code_dump import read_codes, read_dump_meta

TALKER_CODEBOOK = 0  # codebooks 1-15 come from the code predictor


def codebook_stats(column: np.ndarray) -> dict[str, Any]:
    """Distinct codes, entropy (bits) and the most frequent code of one codebook's codes."""
    if column.size == 0:
        return {"unique": 0, "entropy_bits": 0.0, "top_code": None, "top_share": None}
    values, counts = np.unique(column, return_counts=True)
    p = counts / counts.sum()
    top = int(np.argmax(counts))
    return {"unique": int(values.size), "entropy_bits": round(float(-(p * np.log2(p)).sum()), 3),
            "top_code": int(values[top]), "top_share": round(float(p[top]), 3)}


def frame_runs(codes: np.ndarray, min_run: int) -> list[dict[str, int]]:
    """Runs of at least `min_run` identical consecutive frames, as {start, length}."""
    if len(codes) == 0:
        return []
    same = np.all(codes[1:] == codes[:-1], axis=1)  # same[i]: frame i+1 repeats frame i
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    lengths = np.diff(np.concatenate([starts, [len(codes)]]))
    return [{"start": int(s), "length": int(n)} for s, n in zip(starts, lengths, strict=True)
            if n >= min_run]


def dump_stats(path: Path, min_run: int) -> dict[str, Any]:
    codes, meta = read_codes(path), read_dump_meta(path)
    frames = len(codes)
    stop = meta.get("stop_reason")
    text_tokens = meta.get("text_tokens")
    runs = frame_runs(codes, min_run)
    return {
        "dump": str(path), "text": meta.get("text"), "frames": frames, "stop_reason": stop,
        "eos_frame": frames if stop == "eos" else None,
        "text_tokens": text_tokens,
        "frames_per_text_token": round(frames / text_tokens, 2) if text_tokens else None,
        "repeat_runs": runs, "longest_run": max((r["length"] for r in runs), default=0),
        "codebooks": [codebook_stats(codes[:, k]) for k in range(codes.shape[1])],
    }


def first_divergence(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Where two dumps part: the first differing frame and its differing codebooks."""
    common = min(len(a), len(b))
    differs = np.any(a[:common] != b[:common], axis=1)
    out: dict[str, Any] = {"frames_a": len(a), "frames_b": len(b),
                           "differing_frames": int(differs.sum()), "first_frame": None,
                           "codebooks": [], "first_codebook_source": None, "codes_a": None,
                           "codes_b": None}
    if differs.any():
        f = int(np.argmax(differs))
        books = [int(k) for k in np.flatnonzero(a[f] != b[f])]
        out.update(first_frame=f, codebooks=books, codes_a=[int(a[f, k]) for k in books],
                   codes_b=[int(b[f, k]) for k in books],
                   first_codebook_source=("talker" if books[0] == TALKER_CODEBOOK
                                          else "code predictor"))
    elif len(a) != len(b):
        out.update(first_frame=common, first_codebook_source="length (one dump stops earlier)")
    out["identical"] = out["first_frame"] is None
    return out


def dump_paths(args: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for p in args:
        if p.is_dir():
            found = sorted(p.glob("*.npy"))
            if not found:
                raise ValueError(f"{p}: no codes dumps (*.npy) in this folder")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder "
                             "(give .npy codes dumps or folders of them)")
    return paths


def cmd_stats(args: argparse.Namespace) -> tuple[dict[str, Any], str, int]:
    dumps = [dump_stats(p, args.min_run) for p in dump_paths(args.dumps)]
    summary = [{"dump": Path(d["dump"]).stem, "frames": d["frames"], "stop": d["stop_reason"],
                "eos_frame": d["eos_frame"], "text_tokens": d["text_tokens"],
                "frames_per_token": d["frames_per_text_token"],
                f"runs>={args.min_run}": len(d["repeat_runs"]),
                "longest_run": d["longest_run"]} for d in dumps]
    tables = [format_table(f"codebooks of {Path(d['dump']).stem}",
                           [{"codebook": k, **cb} for k, cb in enumerate(d["codebooks"])])
              for d in dumps]
    tables.append(format_table("codes dumps", summary))
    return {"dumps": dumps, "min_run": args.min_run}, "\n\n".join(tables), 0


def cmd_diff(args: argparse.Namespace) -> tuple[dict[str, Any], str, int]:
    d = first_divergence(read_codes(args.a), read_codes(args.b))
    row = {"a": args.a.stem, "b": args.b.stem, **{k: d[k] for k in (
        "frames_a", "frames_b", "identical", "first_frame", "first_codebook_source",
        "differing_frames")},
        "codebooks": ",".join(map(str, d["codebooks"])) or None}
    return {"a": str(args.a), "b": str(args.b), **d}, format_table("first divergence", [row]), \
        0 if d["identical"] else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.codes_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("stats", help="per-dump and per-codebook statistics")
    q.add_argument("dumps", type=Path, nargs="+", help=".npy codes dumps or folders of them")
    q.add_argument("--min-run", type=int, default=3,
                   help="shortest run of identical frames reported (>= 2)")
    q.set_defaults(func=cmd_stats)
    q = sub.add_parser("diff", help="the first divergent frame and codebook of two dumps")
    q.add_argument("a", type=Path)
    q.add_argument("b", type=Path)
    q.set_defaults(func=cmd_diff)
    for q in sub.choices.values():
        q.add_argument("--out", type=Path, default=None, help="result JSON path")
    args = p.parse_args(argv)
    if args.command == "stats" and args.min_run < 2:
        p.error(f"--min-run {args.min_run}: a run has at least 2 frames")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report, table, status = args.func(args)
    except ValueError as exc:
        print(f"codes_eval: {exc}", file=sys.stderr)
        return 2
    out = write_json(args.out or output_root() / "codes_eval" / f"{args.command}.json",
                     {"command": args.command, **report})
    print(f"wrote {out}", file=sys.stderr)
    print(table)
    return status


if __name__ == "__main__":
    sys.exit(main())
