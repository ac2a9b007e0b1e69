"""Shape-static frame steps and their CUDA graphs.

After the prefill (and frame 0, always eager), every frame of a greedy stream
is one call of `StaticFrameStep.run`: talker decode step over a static KV
cache, codebook-0 choice (repetition penalty as a `seen` mask, EOS masked
before min_new_tokens, control tokens suppressed), the whole 15-step code
predictor loop, and the next talker input. Every tensor it touches is a
preallocated buffer and no value crosses to the host, so the same call is
either run eagerly or captured once as a CUDA graph and replayed: the two are
the same kernels on the same buffers, hence the same codes.

Streams own *slots*: one slot = one stream's talker KV cache region plus the
step's input/output buffers. A slot has one captured graph per attention
span bucket (256, 512, ... positions), all captured at start-up. A request
that cannot use a graph (sampling, no free slot, too long) runs the eager
path, and the reason is counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import torch

from .codegen import CodeGenerator, CodegenStream
from .model.layers import KVCache, StaticKVCache
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


@dataclass
class Slot:
    index: int
    step: StaticFrameStep
    graphs: dict[int, torch.cuda.CUDAGraph] = field(default_factory=dict)
    busy: bool = False


class StaticFrameStep:
    """One greedy frame for one stream, on buffers that never move."""

    def __init__(self, codegen: CodeGenerator, capacity: int, params: SamplingParams) -> None:
        talker, cfg = codegen.talker, codegen.config
        g = cfg.talker.geometry
        device, dtype = codegen.device, codegen.dtype
        self.codegen = codegen
        self.capacity = capacity
        self.params = params
        self.kv = KVCache.allocate(g, 1, capacity, device, dtype)  # prefill writes here too
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.seen = torch.zeros(1, g.vocab_size, dtype=torch.bool, device=device)
        self.frames_done = torch.zeros(1, dtype=torch.long, device=device)
        self.min_new_tokens = torch.zeros(1, dtype=torch.long, device=device)
        self.x = torch.zeros(1, 1, g.hidden_size, dtype=dtype, device=device)
        self.tts_pad = torch.zeros(1, g.hidden_size, dtype=dtype, device=device)
        self.codes = torch.zeros(1, cfg.talker.num_code_groups, dtype=torch.long, device=device)
        self.predictor_cache = KVCache.allocate(
            cfg.talker.code_predictor.geometry, 1, cfg.talker.num_code_groups, device, dtype)
        self.talker = talker

    def load(self, s: CodegenStream) -> None:
        """Take over a stream after its eager prefill + frame 0 (which used self.kv)."""
        assert s.talker_cache.k is self.kv.k, "the stream must have been started on this slot's cache"
        self.pos.fill_(s.talker_cache.length)
        self.seen.zero_()
        self.seen.scatter_(1, s.history, True)
        self.frames_done.fill_(s.frames_done)
        self.min_new_tokens.fill_(s.params.min_new_tokens)
        self.x.copy_(s.next_input)
        self.tts_pad.copy_(s.prompt.tts_pad_embed[:, 0])

    def run(self, span: int) -> None:
        """One frame: reads x/pos/seen/frames_done, writes codes and the next x."""
        cache = StaticKVCache(self.kv.k, self.kv.v, self.pos, span)
        hidden, logits = self.talker.step(self.x, cache)
        cb0 = self.codegen.choose_codebook0_static(
            logits, self.seen, self.frames_done, self.min_new_tokens, self.params.repetition_penalty)
        codes = self.codegen.predict_rest(hidden, cb0, self.predictor_cache, self.params, None)
        self.seen.scatter_(1, cb0[:, None], True)
        self.frames_done.add_(1)
        self.x.copy_((self.talker.frame_embedding(codes) + self.tts_pad)[:, None])
        self.codes.copy_(codes)


class GraphedCodegen:
    """Frame generation through per-slot CUDA graphs, with an eager fallback."""

    def __init__(self, codegen: CodeGenerator, slots: int, capacity: int, use_graphs: bool) -> None:
        self.codegen = codegen
        self.capacity = capacity
        self.spans = tuple(b for b in SPAN_BUCKETS if b < capacity) + (capacity,)
        self.use_graphs = use_graphs and codegen.device.type == "cuda"
        greedy = SamplingParams()
        self.slots = [Slot(i, StaticFrameStep(codegen, capacity, greedy)) for i in range(slots)]
        self.fallbacks: Counter[str] = Counter()
        self.pool = None

    def capture(self, warm_prompt: Prompt) -> None:
        """Warm up, then capture every slot's graph for every span (start-up only)."""
        if not self.use_graphs:
            return
        stream = torch.cuda.Stream(device=self.codegen.device)
        for slot in self.slots:
            s = self._start_on(slot, warm_prompt)
            slot.step.load(s)
            for span in self.spans:
                slot.step.load(s)
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):  # warm-up runs initialise cuBLAS/cuDNN workspaces
                    for _ in range(2):
                        slot.step.run(span)
                torch.cuda.current_stream().wait_stream(stream)
                slot.step.load(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self.pool):
                    slot.step.run(span)
                self.pool = graph.pool()
                slot.graphs[span] = graph
        torch.cuda.synchronize()
        log.info("captured %d frame graphs (%d slots x spans %s)", len(self.slots) * len(self.spans),
                 len(self.slots), self.spans)

    def _start_on(self, slot: Slot, prompt: Prompt) -> CodegenStream:
        s = self.codegen.start(prompt, SamplingParams(), self.capacity - prompt.embeds.shape[1],
                               talker_cache=KVCache(slot.step.kv.k, slot.step.kv.v))
        self.codegen.next_frame(s)  # prefill + frame 0, eager
        return s

    # -- per request ---------------------------------------------------------

    def start(self, prompt: Prompt, params: SamplingParams, max_frames: int, seed: int | None):
        """A stream handle: (CodegenStream, slot or None, GraphStats)."""
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
        if gs.slot is None or s.frames_done == 0 or s.finished:
            frame = self.codegen.next_frame(s)  # eager: fallbacks, and the prefill + frame 0
            if frame is not None:
                gs.stats.eager_steps += 1
            if gs.slot is not None and frame is not None:
                gs.slot.step.load(s)
            return frame
        if s.frames_done >= s.max_frames:
            s.finished, s.stop_reason = True, "max_frames"
            return None
        step = gs.slot.step
        span = next(b for b in self.spans if b > s.talker_cache.length)
        graph = gs.slot.graphs.get(span) if self.use_graphs else None
        if graph is not None:
            graph.replay()
            gs.stats.graph_steps += 1
        else:  # graphs off, or the warm-up before capture: the same step, eagerly
            step.run(span)
            gs.stats.eager_steps += 1
        codes = step.codes.clone()
        s.talker_cache.advance(1)
        if int(codes[0, 0]) == self.codegen.eos_id:
            s.finished, s.stop_reason = True, "eos"
            return None
        s.frames_done += 1
        s.codes.append(codes)
        return codes

    def release(self, gs: GraphStream) -> None:
        if gs.slot is not None:
            gs.slot.busy = False
            gs.slot = None


@dataclass
class GraphStream:
    stream: CodegenStream
    slot: Slot | None
    stats: GraphStats
