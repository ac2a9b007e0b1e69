"""The batch stepper: one engine step advances rows 0..n-1 by one frame each.

A step runs three shape-static parts over a bucket of b >= n rows of the pool:

    talker   x, pos -> hidden, logits         each row at its own position; attention
                                               reads a fixed span of positions under a mask
    tail     hidden, logits -> codes, next x  codebook 0 (repetition penalty, EOS rule,
                                               suppression; argmax, or a counter-noise draw
                                               for sampled rows) and the 15-step predictor
    decode   codes -> 1920 samples per row    the exact incremental codec decoder

Rows n..b-1 only pad the bucket: they compute on stale state and nothing reads
their results. No value crosses to the host inside a part, so each part runs
eagerly or as a CUDA graph captured at start-up per bucket (the talker also per
span): the same kernels on the same buffers, hence the same results. With
TTS_COMPILE=1 the decoder layers in them run compiled code (runtime/compiled.py),
which the graphs capture likewise.

Newcomers join between steps on the rows after the batch. One eager prefill
writes the KV of every prompt position but the last, for all of them at once
(right-padded: causal attention keeps a prompt's positions blind to the
padding, and each pad position is written again before anything reads it).
A prompt's last position becomes its row's next talker input, so the next
step computes it and frame 0 with the rest of the batch: a burst of arrivals
costs the batch one short prefill instead of one prefill and first frame each.
The prefill runs in shapes fixed at start-up (newcomers and prompt length
rounded up to PREFILL_GROUPS x PREFILL_LENGTHS) on a staging area, on a GPU
as a CUDA graph per shape, and the staged KV is copied into the rows: an
eager prefill would launch a thousand small kernels one by one. A prompt
longer than the largest shape is prefilled eagerly, straight into its row.

Batch-invariant mode (TTS_BATCH_INVARIANT=1) makes a stream's output bit-identical
to a solo run whatever else is in the batch, in one of two ways (`invariance_for`):

    kernels  (GPU) the path above, graphs and all, with every model call inside
             BatchInvariantMode (model/batch_invariant.py): GEMMs, norms, attention and
             convolutions whose sums per row do not depend on the batch, the staged
             prefill's padding or the talker's span
    rows     (CPU, which has no such kernels) every row steps alone (batch 1, its own
             span) and every prompt is prefilled alone in its own length, eagerly

A step is launched, then collected: `launch` enqueues its parts and the copy of
its codes and PCM to pinned host memory and, on a GPU, returns while the device
still works, so the engine hands the previous step's frames over meanwhile;
`collect` waits for the step and returns its codes and PCM. One step is in
flight at a time (the host buffers serve each step in turn). On a CPU `launch`
computes the step itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..codec_stream import CodecStreamDecoder
from ..codegen import CodeGenerator
from ..model.codec_decoder import float32_numerics
from ..model.layers import KVCache, StaticKVCache
from ..prompt import Prompt
from ..sampling import NoiseKey, SamplingParams, codebook0_logits_masked, sample_tokens
from .rows import PrefillStage, RowPool, RowView

log = logging.getLogger("tts_engine.runtime")

BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
SPANS = (256, 512, 1024, 2048, 4096)
# newcomers per prefill shape; the last is the most admitted at once
PREFILL_GROUPS = (1, 2, 4, 8, 16)
PREFILL_LENGTHS = (16, 32, 64, 128, 256, 512, 1024)  # prompt positions per prefill shape
PREFILL_TOKENS = 4096  # the staging area: no prefill shape is larger
SAMPLED = SamplingParams.sampled()  # the constants of sampled rows (requests cannot change them)


def invariance_for(invariant: bool, device: torch.device) -> str | None:
    """How TTS_BATCH_INVARIANT=1 is kept on `device` (see the module's docstring); None when off."""
    if not invariant:
        return None
    return "kernels" if device.type == "cuda" else "rows"


def buckets_for(rows: int) -> tuple[int, ...]:
    return tuple(b for b in BUCKETS if b < rows) + (rows,)


def spans_for(positions: int) -> tuple[int, ...]:
    return tuple(s for s in SPANS if s < positions) + (positions,)


def prefill_shapes_for(positions: int) -> list[tuple[int, int]]:
    """(newcomers, prompt positions) per prefill graph; a row's prefill writes at most
    positions - 1 of them."""
    longest = positions - 1
    lengths = [n for n in PREFILL_LENGTHS if n < longest] + [min(longest, PREFILL_LENGTHS[-1])]
    return [(g, n) for g in PREFILL_GROUPS for n in lengths if g * n <= PREFILL_TOKENS]


def talker_part(codegen: CodeGenerator, v: RowView, span: int) -> None:
    hidden, logits = codegen.talker.step(v.x, StaticKVCache(v.k, v.v, v.pos, span))
    v.hidden.copy_(hidden)
    v.logits.copy_(logits)


def tail_part(codegen: CodeGenerator, v: RowView, mixed: bool) -> None:
    """Choose the frame's 16 codes and the next talker input. `mixed`: some rows sample."""

    def pick(logits: Tensor, codebook: int) -> Tensor:
        greedy = torch.argmax(logits.float(), dim=-1)
        if not mixed:
            return greedy
        if codebook == 0:
            t, k, p = SAMPLED.temperature, SAMPLED.top_k, SAMPLED.top_p
        else:
            t, k, p = (SAMPLED.subtalker_temperature, SAMPLED.subtalker_top_k,
                       SAMPLED.subtalker_top_p)
        drawn = sample_tokens(logits, t, k, p, NoiseKey(v.seed, v.frames_done, codebook))
        return torch.where(v.sampled, drawn, greedy)

    scores = codebook0_logits_masked(v.logits, v.seen, v.frames_done, v.min_new_tokens,
                                     SAMPLED.repetition_penalty, codegen.suppress_mask,
                                     codegen.eos_id)
    cb0 = pick(scores, 0)
    predictor_cache = KVCache(v.predictor_k, v.predictor_v, written_by_projection=True)
    codes = codegen.predict_rest(v.hidden, cb0, predictor_cache, pick)
    v.seen.scatter_(1, cb0[:, None], True)
    v.frames_done.add_(1)
    v.x.copy_((codegen.talker.frame_embedding(codes) + v.tts_pad)[:, None])
    v.codes.copy_(codes)


def decode_part(decoder: CodecStreamDecoder, v: RowView) -> Tensor:
    # An EOS row's codes are never heard; clamping keeps them valid decoder input.
    codes = v.codes.clamp(max=decoder.model.config.codebook_size - 1)[:, :, None]
    return decoder.step(v.codec, codes, check_codes=False)


@dataclass
class RowStart:
    """What a newcomer's row needs before its first step."""

    prompt: Prompt
    sampled: bool
    seed: int
    min_new_tokens: int

    @property
    def start_position(self) -> int:
        """The talker position of its first step: the prompt's last one."""
        return self.prompt.embeds.shape[1] - 1


@dataclass
class StepResult:
    codes: np.ndarray  # int64 [n, 16]
    pcm: np.ndarray  # float32 [n, 1920]
    codegen_ms: float  # device time (CUDA events; the host clock on a CPU)
    decode_ms: float


@dataclass
class _Launched:
    """A step in flight: where its codes and PCM land on the host, and its clock."""

    codes: Tensor
    pcm: Tensor
    clock: _Clock


class BatchStepper:
    def __init__(self, codegen: CodeGenerator, decoder: CodecStreamDecoder, pool: RowPool,
                 use_graphs: bool, invariance: str | None) -> None:
        if invariance not in (None, "kernels", "rows"):
            raise ValueError(f"invariance {invariance!r}; valid: None, 'kernels', 'rows'")
        self.codegen, self.decoder, self.pool = codegen, decoder, pool
        self.device = codegen.device
        self.buckets = buckets_for(pool.rows)
        self.spans = spans_for(pool.positions)
        self.invariance = invariance
        self.rows_alone = invariance == "rows"
        self.use_graphs = use_graphs and self.device.type == "cuda"
        # a launch returns while the device works; on a CPU it computes the whole step first
        self.launch_returns_early = self.device.type == "cuda"
        self._invariant_mode = None
        if invariance == "kernels":
            from ..model.batch_invariant import BatchInvariantMode  # imports Triton

            self._invariant_mode = BatchInvariantMode
        self._stage = None if self.rows_alone else PrefillStage(codegen, PREFILL_TOKENS)
        self.prefill_shapes = prefill_shapes_for(pool.positions) if self._stage else []
        self._graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self._graph_out: dict[tuple, Tensor] = {}
        self._views = {b: pool.view(0, b) for b in self.buckets}
        self._rows = [pool.row(i) for i in range(pool.rows)]
        self.graph_steps = self.eager_steps = 0
        self.captured = False
        self._launched: _Launched | None = None
        if self.device.type == "cuda":
            self._codes_host = torch.empty(pool.rows, 16, dtype=torch.long, pin_memory=True)
            self._pcm_host = torch.empty(pool.rows, decoder.samples_per_frame, pin_memory=True)

    @property
    def graphed(self) -> bool:
        """Steps replay CUDA graphs (else they run the same parts eagerly)."""
        return self.captured

    @property
    def eager_reason(self) -> str | None:
        if self.device.type != "cuda":
            return "no_cuda"
        if not self.use_graphs:
            return "graphs_disabled"
        if self.rows_alone:
            return "batch_invariant"
        return None if self.captured else "not_captured"

    def numerics(self) -> AbstractContextManager:
        """Where every model call runs: inside BatchInvariantMode with invariant kernels."""
        return self._invariant_mode(self.device.type) if self._invariant_mode else nullcontext()

    def bucket(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n)

    def span(self, position: int) -> int:
        """The attention span for a talker step writing `position`."""
        return next(s for s in self.spans if s > position)

    # -- start-up --------------------------------------------------------------

    def capture(self) -> None:
        """Capture every part's graph per bucket, start-up only; not when rows step alone."""
        if not self.use_graphs or self.rows_alone:
            return
        runs: list[tuple[tuple, Callable[[], Tensor | None]]] = []
        for b, v in self._views.items():
            runs += [(("talker", b, s), lambda v=v, s=s: talker_part(self.codegen, v, s))
                     for s in self.spans]
            runs += [(("tail", b, mixed), lambda v=v, m=mixed: tail_part(self.codegen, v, m))
                     for mixed in (False, True)]
            runs += [(("decode", b), lambda v=v: decode_part(self.decoder, v))]
        runs += [(("prefill", *shape), lambda shape=shape: self._prefill_staged(*shape))
                 for shape in self.prefill_shapes]
        log.info("capturing %d graphs", len(runs))
        side = torch.cuda.Stream(self.device)
        pool = None
        start = time.perf_counter()
        with torch.no_grad(), float32_numerics(), self.numerics():
            for key, run in runs:
                self.reset()  # each run advances its rows; unreset, they would pass the row's end
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):  # initialises cuBLAS/cuDNN workspaces
                    run()
                    run()
                torch.cuda.current_stream(self.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    out = run()
                pool = graph.pool()
                self._graphs[key] = graph
                if out is not None:
                    self._graph_out[key] = out
        torch.cuda.synchronize(self.device)
        self.captured = True
        self.reset()
        log.info("captured %d graphs in %.1f s: buckets %s, talker spans %s, %d prefill shapes",
                 len(self._graphs), time.perf_counter() - start, self.buckets, self.spans,
                 len(self.prefill_shapes))

    def reset(self) -> None:
        """Every row back to position 0 and a fresh decoder (warm-up moved them)."""
        self.pool.park(0, self.pool.rows)
        self.pool.view(0, self.pool.rows).codec.zero_()

    # -- per step ----------------------------------------------------------------

    @torch.no_grad()  # every caller's grad mode alike: the compiled layers guard on it
    def prefill(self, start: int, newcomers: list[RowStart]) -> None:
        """Ready rows start..start+k-1 for newcomers: their prompts' KV but the last
        position, whose embedding becomes the row's next input, and fresh frame state.
        All in one prefill; when rows step alone, one per row, as a solo run does."""
        k = len(newcomers)
        v = self.pool.view(start, start + k)
        with self.numerics():
            if self.rows_alone:
                for i in range(k):
                    self._prefill_rows(start + i, newcomers[i : i + 1])
            else:
                self._prefill_rows(start, newcomers)
        for i, n in enumerate(newcomers):
            v.x[i].copy_(n.prompt.embeds[0, -1:])
            v.tts_pad[i].copy_(n.prompt.tts_pad_embed[0, 0])

        def column(values: list[int], dtype: torch.dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=self.device)

        v.pos.copy_(column([n.start_position for n in newcomers], torch.long))
        v.min_new_tokens.copy_(column([n.min_new_tokens for n in newcomers], torch.long))
        v.seed.copy_(column([n.seed for n in newcomers], torch.long))
        v.sampled.copy_(column([n.sampled for n in newcomers], torch.bool))
        v.seen.zero_()
        v.frames_done.zero_()
        v.codec.zero_()

    def _prefill_rows(self, start: int, newcomers: list[RowStart]) -> None:
        """Positions 0..P-2 of each newcomer's prompt into rows start.., in a staged shape
        when one fits (halving the group until it does), else eagerly into the rows."""
        k, length = len(newcomers), max(n.start_position for n in newcomers)
        if length == 0:
            return
        shape = next(((g, n) for g, n in self.prefill_shapes if g >= k and n >= length), None)
        if shape is None and k > 1 and self.prefill_shapes:
            half = k // 2
            self._prefill_rows(start, newcomers[:half])
            self._prefill_rows(start + half, newcomers[half:])
            return
        rows = self.pool.view(start, start + k)
        if shape is None:
            embeds = newcomers[0].prompt.embeds.new_zeros(k, length,
                                                          newcomers[0].prompt.embeds.shape[2])
            self._copy_prompts(embeds, newcomers)
            self.codegen.talker.model(embeds, KVCache(rows.k, rows.v))
            return
        embeds, staged = self._stage.shape(*shape)
        self._copy_prompts(embeds, newcomers)  # other positions keep stale, finite values
        self._run(("prefill", *shape), lambda: self._prefill_staged(*shape))
        rows.k[:, :, :, :length].copy_(staged.k[:, :k, :, :length])
        rows.v[:, :, :, :length].copy_(staged.v[:, :k, :, :length])

    @staticmethod
    def _copy_prompts(embeds: Tensor, newcomers: list[RowStart]) -> None:
        for i, n in enumerate(newcomers):
            embeds[i, : n.start_position] = n.prompt.embeds[0, : n.start_position]

    def _prefill_staged(self, group: int, length: int) -> None:
        embeds, staged = self._stage.shape(group, length)
        self.codegen.talker.model(embeds, staged)

    def step(self, n: int, positions: list[int], mixed: bool) -> StepResult:
        """Advance rows 0..n-1 by one frame and wait for it; positions[i] is row i's talker
        position."""
        self.launch(n, positions, mixed)
        return self.collect()

    @torch.no_grad()
    def launch(self, n: int, positions: list[int], mixed: bool) -> None:
        """Enqueue a step of rows 0..n-1 and the copy of its codes and PCM to the host."""
        if self._launched is not None:
            raise RuntimeError("a step is in flight: collect() it before launching the next")
        if self.rows_alone:
            self._step_rows_alone(n, positions)
            return
        b = self.bucket(n)
        v = self._views[b]
        self.pool.park(n, b)
        span = self.span(max(positions))
        clock = _Clock(self.device)
        with self.numerics():
            self._run(("talker", b, span), lambda: talker_part(self.codegen, v, span))
            self._run(("tail", b, mixed), lambda: tail_part(self.codegen, v, mixed))
            clock.mark()
            pcm = self._run(("decode", b), lambda: decode_part(self.decoder, v))
        self._to_host(v.codes[:n], pcm[:n], clock)

    def _step_rows_alone(self, n: int, positions: list[int]) -> None:
        clock = _Clock(self.device)
        for i in range(n):
            v = self._rows[i]
            talker_part(self.codegen, v, self.span(positions[i]))
            tail_part(self.codegen, v, mixed=True)
        clock.mark()
        pcm = torch.cat([decode_part(self.decoder, self._rows[i]) for i in range(n)])
        self.eager_steps += 3 * n
        self._to_host(self._views[self.bucket(n)].codes[:n], pcm, clock)

    def _run(self, key: tuple, eager: Callable[[], Tensor | None]) -> Tensor | None:
        graph = self._graphs.get(key)
        if graph is None:
            self.eager_steps += 1
            return eager()
        graph.replay()
        self.graph_steps += 1
        return self._graph_out.get(key)

    def _to_host(self, codes: Tensor, pcm: Tensor, clock: _Clock) -> None:
        """Start the copy of the step's codes and PCM to the host, behind its kernels."""
        n = codes.shape[0]
        if self.device.type == "cuda":
            host_codes, host_pcm = self._codes_host[:n], self._pcm_host[:n]
            host_codes.copy_(codes, non_blocking=True)
            host_pcm.copy_(pcm, non_blocking=True)
        else:
            host_codes, host_pcm = codes, pcm.float()
        clock.mark()
        self._launched = _Launched(host_codes, host_pcm, clock)

    def running(self) -> bool:
        """Whether the launched step is still on the device (never on a CPU, where a launch
        computes the step)."""
        return self._launched is not None and not self._launched.clock.passed()

    def collect(self) -> StepResult:
        """Wait for the step in flight: its codes and PCM (copies, free of the buffers the
        next step fills) and its parts' device times."""
        launched, self._launched = self._launched, None
        if launched is None:
            raise RuntimeError("no step in flight: launch() one first")
        launched.clock.wait()
        codegen_ms, decode_ms = launched.clock.intervals_ms()
        return StepResult(launched.codes.numpy().copy(), launched.pcm.numpy().copy(), codegen_ms,
                          decode_ms)


class _Clock:
    """Marks on the device's timeline: CUDA events on a GPU (kernels run after their
    launch), the host clock on a CPU. Read after the step's synchronisation."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []
        self.mark()

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def passed(self) -> bool:
        """Whether the device has passed the last mark, without waiting."""
        return not self.cuda or self.marks[-1].query()

    def wait(self) -> None:
        """Until the device has passed the last mark (on a CPU it has)."""
        if self.cuda:
            self.marks[-1].synchronize()

    def intervals_ms(self) -> list[float]:
        pairs = zip(self.marks, self.marks[1:])
        if self.cuda:
            return [a.elapsed_time(b) for a, b in pairs]
        return [(b - a) * 1000 for a, b in pairs]
