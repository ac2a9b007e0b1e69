"""Error of the windowed codec decode mode against one full offline decode.

The windowed mode (approximate, kept for comparison) re-decodes the last `left_context`
frames plus each new packet from scratch and keeps the new samples; the exact incremental
decoder carries every layer's state instead. This prints, per (left_context, packet size),
the max abs error and the SNR of the windowed PCM against `CodecDecoder.forward` of all
codes, plus the exact decoder's row for reference, and writes the numbers as JSON.

    python -m tools.measure_windowed_codec --preset tiny --frames 200
    python -m tools.measure_windowed_codec --speech-tokenizer MODEL/speech_tokenizer

Random codes; weights random (preset) or from a checkpoint directory.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

import torch

from streamtalk_common.paths import output_root
from streamtalk_common.tables import write_json
from tts_engine.codec_checkpoint import SPEECH_TOKENIZER_PRESETS, build_random_codec_decoder
from tts_engine.codec_stream import CodecStreamDecoder, WindowedCodecDecoder, decode_in_packets
from tts_engine.model.codec_decoder import CodecDecoder, load_codec_decoder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def snr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    noise = (got.double() - ref.double()).pow(2).sum().item()
    return (float("inf") if noise == 0
            else 10 * torch.log10(ref.double().pow(2).sum() / noise).item())


def row(mode: str, left_context: int | None, packet: int, ref: torch.Tensor, got: torch.Tensor,
        samples_per_frame: int, wall_s: float) -> dict:
    """Errors of `got` against `ref` [B, samples]: max abs and SNR over everything, and SNR
    past the first left_context + 1 frames (the windowed mode is exact before that)."""
    skip = 0 if left_context is None else (left_context + 1) * samples_per_frame
    return {"mode": mode, "left_context": left_context, "packet": packet,
            "max_abs_err": (got.double() - ref.double()).abs().max().item(),
            "snr_db": snr_db(ref, got), "snr_db_past_context": snr_db(ref[:, skip:], got[:, skip:]),
            "wall_s": wall_s}


def measure(
    model: CodecDecoder, frames: int, streams: int, left_contexts: list[int],
    packets: list[int], seed: int
) -> list[dict]:
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    codes = torch.randint(0, cfg.codebook_size,
                          (streams, cfg.num_quantizers, frames), generator=gen).to(device)
    with torch.no_grad():
        ref = model(codes)
    rows = []
    spf = model.samples_per_frame
    for packet in packets:
        start = time.perf_counter()
        got = decode_in_packets(CodecStreamDecoder(model), codes, packet)
        rows.append(row("exact", None, packet, ref, got, spf, time.perf_counter() - start))
    for left_context in left_contexts:
        if left_context + 1 >= frames:
            raise SystemExit(f"--frames {frames} must exceed left_context + 1 = {left_context + 1}")
        for packet in packets:
            start = time.perf_counter()
            got = decode_in_packets(WindowedCodecDecoder(model, left_context), codes, packet)
            rows.append(row("windowed", left_context, packet, ref, got, spf,
                            time.perf_counter() - start))
    return rows


def print_table(rows: list[dict]) -> None:
    print("| mode | left_context | packet | max abs err | "
          "SNR dB vs offline | SNR dB past context |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        lc = "-" if r["left_context"] is None else r["left_context"]
        print(f"| {r['mode']} | {lc} | {r['packet']} | {r['max_abs_err']:.2e} | {r['snr_db']:.1f} "
              f"| {r['snr_db_past_context']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=SPEECH_TOKENIZER_PRESETS, default="tiny")
    source.add_argument("--speech-tokenizer", type=Path,
                        help="load weights from this directory instead")
    parser.add_argument("--seed", type=int, default=0, help="weights (preset) and codes")
    parser.add_argument("--frames", type=int, default=200,
                        help="frames per utterance (12.5 per second)")
    parser.add_argument("--streams", type=int, default=2, help="utterances, decoded as one batch")
    parser.add_argument("--left-context", type=int, nargs="+", default=[25, 72])
    parser.add_argument("--packets", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--json", type=Path,
                        help="default: $STREAMTALK_OUTPUT/bench/windowed_codec.json")
    args = parser.parse_args()

    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if args.speech_tokenizer:
        model = load_codec_decoder(args.speech_tokenizer, args.device, DTYPES[args.dtype])
        geometry = str(args.speech_tokenizer)
    else:
        model = build_random_codec_decoder(args.preset, args.seed).to(args.device,
                                                                      DTYPES[args.dtype])
        geometry = f"preset {args.preset} (random weights, seed {args.seed})"
    rows = measure(model, args.frames, args.streams, args.left_context, args.packets, args.seed)
    device = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
              else platform.processor() or "cpu")
    meta = {"date": date.today().isoformat(), "geometry": geometry, "frames": args.frames,
            "streams": args.streams, "device": device, "dtype": args.dtype,
            "torch": torch.__version__}
    print(f"{geometry}; {args.streams} x {args.frames} frames of random codes; {device}, "
          f"{args.dtype}; {meta['date']}")
    print_table(rows)
    out = args.json or output_root() / "bench" / "windowed_codec.json"
    write_json(out, {"meta": meta, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
