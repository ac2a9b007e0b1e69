"""CUDA graphs for the exact incremental codec decoder.

`CodecStreamDecoder.step` is shape-static and updates its state in place, so for a
fixed (batch 1, n frames) it is one fixed sequence of kernels on fixed buffers: it is
captured as it is, no second implementation. A *slot* is one stream's static state
plus, per captured packet size n, a static code input [1, 16, n], the graph and its
static PCM output [1, n * 1920]. All graphs are captured at start-up (`capture`),
after warm-up steps on the capture stream (cuBLAS/cuDNN workspaces, the RoPE table),
under `torch.no_grad()` with TF32 off, and share one memory pool.

Per packet: copy the codes into the slot's input, replay, copy the output out. A
packet of a size that was not captured is split into captured sizes (3 = 2 + 1 with
{1, 2}), which is exact because the incremental decoder is exact for any split. A
stream without a slot (no CUDA, graphs off, none free, not captured yet) or a packet
that cannot be split runs the same step eagerly, and the reason is counted; on CPU
every stream takes that path, so callers have one code path.

    runner = CodecGraphRunner(model, slots=4, packet_frames=(1, 2))
    runner.capture()                      # start-up; no-op without CUDA
    stream = runner.open()                # a slot if one is free; state at frame 0
    pcm = runner.decode(stream, codes)    # [1, 16, n] -> [1, n * 1920], a new tensor
    runner.close(stream)                  # frees the slot
    stream.stats.to_dict()                # the seed's decoder_graph_stats

Replays must be serialised: one thread. `open` zeroes a slot on the current
CUDA stream; a caller that decodes on another stream makes that stream wait
for it first (the engine's decode stream waits before every packet), and
waits for a stream's last decode before `close`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tts_engine.codec_stream import CodecStreamDecoder, CodecStreamState, WindowedCodecDecoder
from tts_engine.model.codec_decoder import CodecDecoder, strict_float32

log = logging.getLogger("tts_engine.codec_graphs")

DEFAULT_PACKET_FRAMES = (1, 2)
TOPK_REASONS = 3

Step = Callable[[], Tensor]


@dataclass
class DecoderGraphStats:
    """Per-stream accounting in the seed's `decoder_graph_stats` shape. A step is one
    `decode` call (one packet); every eager step is a fallback with a reason."""

    graph_steps: int = 0  # packets decoded by graph replays only
    eager_steps: int = 0  # packets decoded by the eager step
    graph_replays: int = 0  # replays (a split packet takes several)
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def fallback_count(self) -> int:
        return sum(self.reasons.values())

    def to_dict(self) -> dict:
        return {
            "graph_steps": self.graph_steps,
            "eager_steps": self.eager_steps,
            "graph_replays": self.graph_replays,
            "fallback_count": self.fallback_count,
            "fallback_reasons_topk": dict(self.reasons.most_common(TOPK_REASONS)),
        }


@dataclass
class _Slot:
    index: int
    state: CodecStreamState  # batch 1, never reallocated
    inputs: dict[int, Tensor]  # n -> LongTensor[1, 16, n]
    outputs: dict[int, Tensor] = field(default_factory=dict)  # n -> [1, n * 1920], graph-owned
    graphs: dict[int, object] = field(default_factory=dict)  # n -> torch.cuda.CUDAGraph
    busy: bool = False


@dataclass
class CodecGraphStream:
    """One stream's handle: its state (a slot's, or its own for eager streams)."""

    state: CodecStreamState
    slot: _Slot | None
    no_slot_reason: str | None  # why the stream has no slot (None when it has one)
    stats: DecoderGraphStats = field(default_factory=DecoderGraphStats)
    closed: bool = False


class CodecGraphRunner:
    """Exact incremental codec decoding through per-slot CUDA graphs, with the same
    step run eagerly as the fallback. See the module docstring."""

    def __init__(
        self,
        model: CodecDecoder,
        slots: int = 1,
        packet_frames: Sequence[int] = DEFAULT_PACKET_FRAMES,
        use_graphs: bool = True,
        check_codes: bool = True,
        windowed_left_context: int | None = None,
    ) -> None:
        """`windowed_left_context` selects the seed's windowed decoder instead of the
        exact one; it always runs eagerly (fallback reason `windowed_mode`)."""
        if slots < 0:
            raise ValueError(f"slots must be >= 0, got {slots}")
        if not packet_frames or min(packet_frames) < 1:
            raise ValueError(f"packet_frames must be sizes >= 1, got {packet_frames}")
        self.decoder: CodecStreamDecoder | WindowedCodecDecoder = (
            CodecStreamDecoder(model) if windowed_left_context is None
            else WindowedCodecDecoder(model, windowed_left_context))
        self.model = model
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.packet_frames = tuple(sorted(set(packet_frames), reverse=True))
        self.check_codes = check_codes  # range-check codes (one device->host read per packet)
        can_capture = self._can_capture()
        windowed = windowed_left_context is not None
        self.use_graphs = use_graphs and can_capture and not windowed
        self.captured = False
        self.fallbacks: Counter[str] = Counter()  # totals over all streams
        self._plans: dict[int, tuple[int, ...] | None] = {}
        self._lock = threading.Lock()
        n_q = model.config.num_quantizers
        self._slots = [
            _Slot(
                i,
                self.decoder.new_state(1),
                {n: torch.zeros(1, n_q, n, dtype=torch.long, device=self.device) for n in self.packet_frames},
            )
            for i in range(slots if self.use_graphs else 0)
        ]
        self._no_slots_reason = (
            "windowed_mode" if windowed
            else "no_cuda" if not can_capture
            else "graphs_disabled" if not use_graphs
            else "no_graph_slots" if not self._slots
            else None
        )

    @property
    def samples_per_frame(self) -> int:
        return self.decoder.samples_per_frame

    @property
    def slots(self) -> int:
        return len(self._slots)

    @property
    def free_slots(self) -> int:
        with self._lock:
            return sum(not s.busy for s in self._slots)

    # -- start-up ------------------------------------------------------------

    def capture(self) -> None:
        """Warm up, then capture every slot's graph for every packet size (start-up
        only: nothing else may use the GPU meanwhile). No-op without slots."""
        if not self._slots or self.captured:
            return
        step = self.decoder.step

        def make(slot: _Slot, n: int) -> Step:
            return lambda: step(slot.state, slot.inputs[n], check_codes=False)

        warm = [make(self._slots[0], n) for n in self.packet_frames]
        keys = [(slot, n) for slot in self._slots for n in self.packet_frames]
        with torch.no_grad(), strict_float32():
            recorded = self._record_graphs(warm, [make(slot, n) for slot, n in keys])
        for (slot, n), (graph, out) in zip(keys, recorded, strict=True):
            slot.graphs[n], slot.outputs[n] = graph, out
        for slot in self._slots:
            slot.state.zero_()  # the warm-up moved slot 0
        self.captured = True
        log.info("captured %d codec decoder graphs (%d slots x packet frames %s)",
                 len(keys), len(self._slots), self.packet_frames)

    def _can_capture(self) -> bool:
        return self.device.type == "cuda"

    def _record_graphs(self, warm: list[Step], steps: list[Step]) -> list[tuple[object, Tensor]]:
        """CUDA specifics: run each `warm` step twice on a side stream, then capture each
        of `steps` on that stream into one shared pool. Returns (graph, static output)."""
        dev = self.device
        with torch.cuda.device(dev):
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for fn in warm:
                    for _ in range(2):
                        fn()
            pool, out = None, []
            for fn in steps:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=side):
                    result = fn()
                pool = graph.pool()
                out.append((graph, result))
            torch.cuda.current_stream(dev).wait_stream(side)
            torch.cuda.synchronize(dev)
        return out

    # -- per stream ----------------------------------------------------------

    def open(self) -> CodecGraphStream:
        """A new stream at frame 0: on a free slot (its state zeroed) when graphs are
        captured, else on its own eager state."""
        reason = self._no_slots_reason or (None if self.captured else "not_captured")
        slot = None
        if reason is None:
            with self._lock:
                slot = next((s for s in self._slots if not s.busy), None)
                if slot is not None:
                    slot.busy = True
            if slot is None:
                reason = "no_free_slot"
        if slot is None:
            return CodecGraphStream(self.decoder.new_state(1), None, reason)
        slot.state.zero_()
        return CodecGraphStream(slot.state, slot, None)

    def close(self, stream: CodecGraphStream) -> None:
        """Release the stream's slot (idempotent). The stream cannot decode after."""
        stream.closed = True
        if stream.slot is not None:
            with self._lock:
                stream.slot.busy = False
            stream.slot = None

    def plan(self, n: int) -> tuple[int, ...] | None:
        """Captured packet sizes summing to n, fewest replays (largest first), or None."""
        if n not in self._plans:
            best: list[tuple[int, ...] | None] = [()] + [None] * n
            for total in range(1, n + 1):
                for size in self.packet_frames:  # largest first
                    rest = best[total - size] if size <= total else None
                    if rest is not None and (best[total] is None or len(rest) + 1 < len(best[total])):
                        best[total] = (size, *rest)
            self._plans[n] = best[n]
        return self._plans[n]

    def decode(self, stream: CodecGraphStream, codes: Tensor) -> Tensor:
        """Decode the next n frames of `stream`: codes [1, 16, n] (any integer dtype,
        any device) -> PCM [1, n * 1920] in the model's dtype, on its device; a new
        tensor that later calls do not overwrite."""
        if stream.closed:
            raise ValueError("decode on a closed codec stream")
        self.model.check_codes(codes, values=self.check_codes)
        if codes.shape[0] != 1:
            raise ValueError(f"a codec stream decodes batch 1, got codes for {codes.shape[0]} streams")
        n = codes.shape[2]
        slot = stream.slot
        plan = self.plan(n) if slot is not None else None
        if plan is None:
            reason = stream.no_slot_reason or "packet_frames_not_captured"
            stream.stats.eager_steps += 1
            stream.stats.reasons[reason] += 1
            self.fallbacks[reason] += 1
            return self.decoder.step(stream.state, codes.to(self.device), check_codes=False)
        spf = self.samples_per_frame
        pcm = torch.empty(1, n * spf, device=self.device, dtype=self.dtype)
        start = 0
        for size in plan:
            slot.inputs[size].copy_(codes[:, :, start : start + size])
            slot.graphs[size].replay()
            pcm[:, start * spf : (start + size) * spf].copy_(slot.outputs[size])
            start += size
        stream.stats.graph_steps += 1
        stream.stats.graph_replays += len(plan)
        return pcm
