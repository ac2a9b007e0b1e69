"""Shape-static frame steps and their CUDA graphs.

A greedy stream's frame is two shape-static steps on preallocated buffers:

    talker step   x, pos -> hidden, logits        (talker decode over a static KV cache)
    tail step     hidden, logits -> codes, next x (codebook-0 choice with the repetition
                                                   penalty as a `seen` mask, EOS masked before
                                                   min_new_tokens, control tokens suppressed;
                                                   the whole 15-step predictor loop; the next
                                                   talker input)

Frame 0 takes its hidden/logits from the eager prefill and then replays the
tail graph, so the first frame costs one prefill plus one graph. No value
crosses to the host inside a step, so each step runs either eagerly or as a
captured CUDA graph; both are the same kernels on the same buffers, hence the
same codes. With `compile_steps` the two steps are first fused by
torch.compile (its kernels are then captured the same way).

Streams own *slots*: one slot = one stream's talker KV cache region plus the
steps' buffers, with one talker graph per attention-span bucket (256, 512, ...
positions) and one tail graph, all captured at start-up. A request that
cannot use a slot (sampling, no free slot, too long) runs the eager exact
path, and the reason is counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import torch

from .codegen import CodeGenerator, CodegenStream
from .model.layers import KVCache, StaticKVCache
from .model.talker import Talker
from .prompt import Prompt
from .sampling import SamplingParams

log = logging.getLogger("tts_engine.graphs")

SPAN_BUCKETS = (256, 512, 1024, 2048, 4096)


@dataclass
class GraphStats:
    """Per-request accounting, the seed's `cudagraph_cp_used` / `decoder_graph_stats` style."""

    codegen_graph_used: bool = False
    graph_steps: int = 0
    eager_steps: int = 0
    fallback_reason: str | None = None

    def to_dict(self) -> dict:
        return {"codegen_graph_used": self.codegen_graph_used, "graph_steps": self.graph_steps,
                "eager_steps": self.eager_steps, "fallback_reason": self.fallback_reason}


def talker_step(talker: Talker, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                span: int, hidden_out: torch.Tensor, logits_out: torch.Tensor) -> None:
    hidden, logits = talker.step(x, StaticKVCache(k, v, pos, span))
    hidden_out.copy_(hidden)
    logits_out.copy_(logits)


def tail_step(codegen: CodeGenerator, params: SamplingParams, hidden: torch.Tensor, logits: torch.Tensor,
              seen: torch.Tensor, frames_done: torch.Tensor, min_new_tokens: torch.Tensor, tts_pad: torch.Tensor,
              predictor_k: torch.Tensor, predictor_v: torch.Tensor, x_out: torch.Tensor, codes_out: torch.Tensor) -> None:
    cb0 = codegen.choose_codebook0_static(logits, seen, frames_done, min_new_tokens, params.repetition_penalty)
    codes = codegen.predict_rest(hidden, cb0, KVCache(predictor_k, predictor_v), params, None)
    seen.scatter_(1, cb0[:, None], True)
    frames_done.add_(1)
    x_out.copy_((codegen.talker.frame_embedding(codes) + tts_pad)[:, None])
    codes_out.copy_(codes)


class StaticFrameStep:
    """The buffers of one slot and its two steps."""

    def __init__(self, codegen: CodeGenerator, capacity: int, params: SamplingParams, compiled: dict) -> None:
        cfg = codegen.config
        g = cfg.talker.geometry
        device, dtype = codegen.device, codegen.dtype
        self.codegen, self.params, self.fns = codegen, params, compiled
        self.kv = KVCache.allocate(g, 1, capacity, device, dtype)  # the prefill writes here too
        self.predictor = KVCache.allocate(cfg.talker.code_predictor.geometry, 1, cfg.talker.num_code_groups,
                                          device, dtype)
        zeros = dict(device=device)
        self.pos = torch.zeros(1, dtype=torch.long, **zeros)
        self.seen = torch.zeros(1, g.vocab_size, dtype=torch.bool, **zeros)
        self.frames_done = torch.zeros(1, dtype=torch.long, **zeros)
        self.min_new_tokens = torch.zeros(1, dtype=torch.long, **zeros)
        self.x = torch.zeros(1, 1, g.hidden_size, dtype=dtype, **zeros)
        self.tts_pad = torch.zeros(1, g.hidden_size, dtype=dtype, **zeros)
        self.hidden = torch.zeros(1, g.hidden_size, dtype=dtype, **zeros)
        self.logits = torch.zeros(1, g.vocab_size, dtype=dtype, **zeros)
        self.codes = torch.zeros(1, cfg.talker.num_code_groups, dtype=torch.long, **zeros)

    def load_prefill(self, s: CodegenStream, hidden: torch.Tensor, logits: torch.Tensor) -> None:
        """Take over a stream right after its eager prefill (which wrote self.kv)."""
        self.pos.fill_(s.talker_cache.length)
        self.seen.zero_()
        self.frames_done.zero_()
        self.min_new_tokens.fill_(s.params.min_new_tokens)
        self.tts_pad.copy_(s.prompt.tts_pad_embed[:, 0])
        self.hidden.copy_(hidden)
        self.logits.copy_(logits)

    def talker(self, span: int) -> None:
        self.fns["talker"](self.codegen.talker, self.x, self.kv.k, self.kv.v, self.pos, span,
                           self.hidden, self.logits)

    def tail(self) -> None:
        self.fns["tail"](self.codegen, self.params, self.hidden, self.logits, self.seen, self.frames_done,
                         self.min_new_tokens, self.tts_pad, self.predictor.k, self.predictor.v, self.x, self.codes)


@dataclass
class Slot:
    index: int
    step: StaticFrameStep
    talker_graphs: dict[int, torch.cuda.CUDAGraph] = field(default_factory=dict)
    tail_graph: torch.cuda.CUDAGraph | None = None
    busy: bool = False


@dataclass
class GraphStream:
    stream: CodegenStream
    slot: Slot | None
    stats: GraphStats


class GraphedCodegen:
    """Frame generation through per-slot static steps (CUDA graphs when enabled), with eager fallback."""

    def __init__(self, codegen: CodeGenerator, slots: int, capacity: int, use_graphs: bool,
                 compile_steps: bool = False) -> None:
        self.codegen = codegen
        self.capacity = capacity
        self.spans = tuple(b for b in SPAN_BUCKETS if b < capacity) + (capacity,)
        self.use_graphs = use_graphs and codegen.device.type == "cuda"
        fns = {"talker": talker_step, "tail": tail_step}
        if compile_steps:
            fns = {name: torch.compile(fn, dynamic=False) for name, fn in fns.items()}
        greedy = SamplingParams()
        self.slots = [Slot(i, StaticFrameStep(codegen, capacity, greedy, fns)) for i in range(slots)]
        self.fallbacks: Counter[str] = Counter()
        self._pool = None

    def capture(self, warm_prompt: Prompt) -> None:
        """Warm up every step on a side stream, then capture each slot's graphs (start-up only)."""
        if not self.use_graphs or not self.slots:
            return
        side = torch.cuda.Stream(device=self.codegen.device)
        for slot in self.slots:
            step = slot.step
            self._prefill_on(slot, warm_prompt)
            runs = [(span, lambda sp=span, st=step: st.talker(sp)) for span in self.spans] + [(None, step.tail)]
            for key, run in runs:
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # initialises cuBLAS/cuDNN workspaces (and compiles)
                    run()
                    run()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self._pool):
                    run()
                self._pool = graph.pool()
                if key is None:
                    slot.tail_graph = graph
                else:
                    slot.talker_graphs[key] = graph
        torch.cuda.synchronize()
        log.info("captured %d graphs (%d slots x (talker spans %s + tail))",
                 len(self.slots) * (len(self.spans) + 1), len(self.slots), self.spans)

    def _prefill_on(self, slot: Slot, prompt: Prompt) -> CodegenStream:
        s = self.codegen.start(prompt, SamplingParams(), self.capacity - prompt.embeds.shape[1],
                               talker_cache=KVCache(slot.step.kv.k, slot.step.kv.v))
        hidden, logits = self.codegen.prefill(s)
        slot.step.load_prefill(s, hidden, logits)
        return s

    # -- per request ---------------------------------------------------------

    def start(self, prompt: Prompt, params: SamplingParams, max_frames: int, seed: int | None) -> GraphStream:
        stats = GraphStats()
        reason = None
        if not self.slots:
            reason = "no_graph_slots"
        elif params.do_sample or params.subtalker_do_sample:
            reason = "sampling"
        elif params.repetition_penalty != self.slots[0].step.params.repetition_penalty:
            reason = "repetition_penalty"
        elif prompt.embeds.shape[1] + max_frames > self.capacity:
            reason = "too_long"
        slot = None
        if reason is None:
            slot = next((sl for sl in self.slots if not sl.busy), None)
            if slot is None:
                reason = "no_free_slot"
        if slot is None:
            stats.fallback_reason = reason
            self.fallbacks[reason] += 1
            return GraphStream(self.codegen.start(prompt, params, max_frames, seed), None, stats)
        slot.busy = True
        s = self.codegen.start(prompt, params, max_frames, seed, talker_cache=KVCache(slot.step.kv.k, slot.step.kv.v))
        stats.codegen_graph_used = self.use_graphs
        return GraphStream(s, slot, stats)

    def next_frame(self, gs: GraphStream) -> torch.Tensor | None:
        s = gs.stream
        if gs.slot is None:
            frame = self.codegen.next_frame(s)
            gs.stats.eager_steps += frame is not None
            return frame
        if s.finished:
            return None
        if s.frames_done >= s.max_frames:
            s.finished, s.stop_reason = True, "max_frames"
            return None
        step, slot = gs.slot.step, gs.slot
        if s.next_input is None:  # frame 0: eager prefill, then the tail step
            hidden, logits = self.codegen.prefill(s)
            step.load_prefill(s, hidden, logits)
            s.next_input = step.x  # marks the prefill as done
        else:
            span = next(b for b in self.spans if b > s.talker_cache.length)
            self._run(slot.talker_graphs.get(span), lambda: step.talker(span), gs.stats)
            s.talker_cache.advance(1)
        self._run(slot.tail_graph, step.tail, gs.stats)
        codes = step.codes.clone()
        if int(codes[0, 0]) == self.codegen.eos_id:
            s.finished, s.stop_reason = True, "eos"
            return None
        s.frames_done += 1
        s.codes.append(codes)
        return codes

    def _run(self, graph: torch.cuda.CUDAGraph | None, eager, stats: GraphStats) -> None:
        if graph is not None and self.use_graphs:
            graph.replay()
            stats.graph_steps += 1
        else:  # graphs off, or the warm-up before capture: the same step, eagerly
            eager()
            stats.eager_steps += 1

    def release(self, gs: GraphStream) -> None:
        if gs.slot is not None:
            gs.slot.busy = False
            gs.slot = None
