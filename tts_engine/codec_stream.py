"""Incremental codec decoding: code frames in, exactly their PCM out.

`CodecStreamDecoder` is exact: it carries every layer's left context as explicit
state, so the concatenated PCM of all packets equals `CodecDecoder.forward` of all
codes (float rounding aside), for any packet sizes and any length, without
recomputing anything. Which state each layer needs:

* a causal conv (kernel k, dilation d): its last (k-1)*d input columns (`ConvTail`);
  zeros at the start are exactly the offline left padding;
* a transposed conv (kernel 2s, stride s): the s samples its last input step already
  wrote into the next output block (`TransConvOverlap`, bias not included);
* a pre_transformer layer: post-RoPE keys and values of the last window-1 frames
  (`AttentionWindow`; a query attends to itself and the 71 frames before it);
* the stream's frame count: the RoPE position of its next frame.

Everything else (RVQ lookup, SnakeBeta, norms, 1x1 convs, MLPs) is time-local.

The step is shape-static and capture-safe, so `tts_engine.runtime.stepper` records it
as a CUDA graph as it is: every state tensor is preallocated at a fixed size and
updated in place (`copy_` of the new tail/overlap/window, `add_` of the frame count);
RoPE positions and the attention mask come from the device tensor `frames`; nothing
reads a value back to the host (with `check_codes=False`), and every shape depends
only on (B, n). The same step serves eager decoding and graph replay.

`WindowedCodecDecoder` is the approximate mode, kept for comparison: each
packet re-decodes the last `left_context` frames plus the new ones from scratch and
keeps the new samples. docs/CODEC_STREAMING.md gives its error.

Both work on batches of streams: a state holds B streams (batch 1 is the smallest),
the streams may be at different positions, and `stack`/`split` regroup them. All the
streams of one step take the same number of new frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from tts_engine.model.codec_decoder import (
    CausalConv1d,
    CausalTransConv1d,
    CodecDecoder,
    TransformerLayer,
    float32_numerics,
    sliding_window_mask,
    transposed_conv1d,
)

DEFAULT_LEFT_CONTEXT = 72  # TTS_DEEP_STREAM_LEFT_CONTEXT's default (tts_engine/config.py)


@dataclass
class ConvTail:
    """Last (k-1)*d input columns of one causal conv: [B, C_in, (k-1)*d]."""

    x: Tensor


@dataclass
class TransConvOverlap:
    """What the last input step of one transposed conv spilled into the next output
    block, before bias: [B, C_out, k - s]."""

    y: Tensor


@dataclass
class AttentionWindow:
    """One pre_transformer layer's KV cache: post-RoPE keys and values of the last
    window-1 frames, [B, H_kv, window-1, D], oldest first (shifted in place each
    step). Slots before the stream's first frame hold zeros and are masked out by
    position."""

    k: Tensor
    v: Tensor


@dataclass
class CodecStreamState:
    """All carried state of B streams. Conv entries are keyed by the module's
    state-dict name in `CodecDecoder` (e.g. "decoder.1.block.2.conv1"). Steps update
    every tensor in place: its storage never moves (what a CUDA graph needs)."""

    frames: Tensor  # LongTensor[B]: frames decoded so far = position of the next frame
    convs: dict[str, ConvTail]
    trans_convs: dict[str, TransConvOverlap]
    attention: list[AttentionWindow]

    @property
    def batch_size(self) -> int:
        return self.frames.shape[0]

    def tensors(self) -> list[Tensor]:
        """Every state tensor (frames first)."""
        return (
            [self.frames]
            + [c.x for c in self.convs.values()]
            + [t.y for t in self.trans_convs.values()]
            + [x for a in self.attention for x in (a.k, a.v)]
        )

    def zero_(self) -> CodecStreamState:
        """Reset in place to B fresh streams at frame 0 (storage kept)."""
        torch._foreach_zero_(self.tensors())
        return self

    @classmethod
    def stack(cls, states: list[CodecStreamState]) -> CodecStreamState:
        """Concatenate streams into one new batch (copies; their order is kept)."""
        if not states:
            raise ValueError("stack needs at least one state")
        first = states[0]
        return cls(
            frames=torch.cat([s.frames for s in states]),
            convs={k: ConvTail(torch.cat([s.convs[k].x for s in states])) for k in first.convs},
            trans_convs={
                k: TransConvOverlap(torch.cat([s.trans_convs[k].y for s in states]))
                for k in first.trans_convs
            },
            attention=[
                AttentionWindow(
                    torch.cat([s.attention[i].k for s in states]),
                    torch.cat([s.attention[i].v for s in states]),
                )
                for i in range(len(first.attention))
            ],
        )

    def select(self, index: int) -> CodecStreamState:
        """Stream `index` as a batch-1 state of views into this one: stepping it
        updates this batch's row `index` in place."""
        return self.rows(index, index + 1)

    def rows(self, start: int, stop: int) -> CodecStreamState:
        """Streams start..stop-1 as a state of views into this one."""
        sl = slice(start, stop)
        return CodecStreamState(
            frames=self.frames[sl],
            convs={k: ConvTail(c.x[sl]) for k, c in self.convs.items()},
            trans_convs={k: TransConvOverlap(t.y[sl]) for k, t in self.trans_convs.items()},
            attention=[AttentionWindow(a.k[sl], a.v[sl]) for a in self.attention],
        )

    def split(self) -> list[CodecStreamState]:
        """One batch-1 state per stream (views, see `select`)."""
        return [self.select(i) for i in range(self.batch_size)]


class CodecStreamDecoder:
    """Exact incremental decoding with a `CodecDecoder`'s weights.

    decoder = CodecStreamDecoder(model)
    state = decoder.new_state(batch_size=1)
    pcm = decoder.step(state, codes)  # codes [B, 16, n>=1] -> pcm [B, n*1920]
    """

    def __init__(self, model: CodecDecoder, tf32: bool = False) -> None:
        self.model = model
        self.tf32 = tf32  # a float32 model's convs and matmuls in TF32 (TTS_DECODER_DTYPE=tf32)
        self.window = model.config.sliding_window
        self._names = {id(m): name for name, m in model.named_modules()}
        # each pre_transformer layer's step; runtime/compiled.py swaps in its compiled code
        self.window_layer = window_layer

    @property
    def samples_per_frame(self) -> int:
        return self.model.samples_per_frame

    def new_state(self, batch_size: int = 1) -> CodecStreamState:
        """Fresh state for `batch_size` streams at frame 0, on the model's device/dtype."""
        p = next(self.model.parameters())
        dev, dt = p.device, p.dtype
        convs, trans_convs = {}, {}
        for name, m in self.model.named_modules():
            if isinstance(m, CausalConv1d) and m.context > 0:
                convs[name] = ConvTail(
                    torch.zeros(batch_size, m.conv.in_channels, m.context, device=dev, dtype=dt)
                )
            elif isinstance(m, CausalTransConv1d) and m.overlap > 0:
                trans_convs[name] = TransConvOverlap(
                    torch.zeros(batch_size, m.conv.out_channels, m.overlap, device=dev, dtype=dt)
                )
        cfg = self.model.config
        kv_shape = (batch_size, cfg.num_key_value_heads, self.window - 1, cfg.head_dim)
        attention = [
            AttentionWindow(
                torch.zeros(kv_shape, device=dev, dtype=dt),
                torch.zeros(kv_shape, device=dev, dtype=dt),
            )
            for _ in range(cfg.num_hidden_layers)
        ]
        frames = torch.zeros(batch_size, dtype=torch.long, device=dev)
        return CodecStreamState(frames, convs, trans_convs, attention)

    @torch.no_grad()
    def step(self, state: CodecStreamState, codes: Tensor, check_codes: bool = True) -> Tensor:
        """Decode n new frames of each of the B streams in `state`: codes [B, 16, n]
        -> PCM [B, n * 1920], a new tensor. Updates `state` in place. Runs under
        `float32_numerics` (TF32 off unless the decoder opted in, deterministic cuDNN).
        `check_codes=False` skips the range check (a device->host read; shape and dtype are
        always checked): required under CUDA graph capture, and for callers that guarantee
        valid codes."""
        m = self.model
        m.check_codes(codes, values=check_codes)
        if codes.shape[0] != state.batch_size:
            raise ValueError(f"codes carry {codes.shape[0]} streams, the state {state.batch_size}")
        with float32_numerics(self.tf32):
            x = m.quantizer.decode(codes.long())  # [B, codebook_dim, n]
            x = self._conv(m.pre_conv, x, state)  # [B, latent, n]
            x = self._pre_transformer(x.transpose(1, 2), state).transpose(1, 2)  # [B, latent, n]
            for trans_conv, convnext in m.upsample:
                x = self._trans_conv(trans_conv, x, state)  # [B, latent, 2n], then 4n
                x = x + convnext.pointwise(self._conv(convnext.dwconv, x, state))
            x = self._conv(m.decoder_in_conv, x, state)  # [B, decoder_dim, 4n]
            for block in m.decoder_blocks:
                x = self._trans_conv(block.upsample, block.snake(x), state)
                for unit in block.residual_units:
                    h = self._conv(unit.conv1, unit.act1(x), state)
                    x = x + unit.conv2(unit.act2(h))  # conv2 is 1x1: no state
            x = self._conv(m.final_conv, m.final_snake(x), state)  # [B, 1, n * 1920]
            state.frames.add_(codes.shape[2])
            return x.clamp(-1.0, 1.0).squeeze(1)

    def _conv(self, conv: CausalConv1d, x: Tensor, state: CodecStreamState) -> Tensor:
        """[B, C_in, L] -> [B, C_out, L], the tail standing in for the left padding."""
        if conv.context == 0:
            return conv(x)
        tail = state.convs[self._names[id(conv)]].x
        full = torch.cat([tail, x], dim=-1)  # [B, C_in, context + L], a new tensor
        tail.copy_(full[..., full.shape[-1] - conv.context :])
        return conv.conv_valid(full)

    def _trans_conv(self, tc: CausalTransConv1d, x: Tensor, state: CodecStreamState) -> Tensor:
        """[B, C_in, L] -> [B, C_out, L*s] by overlap-add across calls."""
        if tc.overlap == 0:
            return tc(x)
        n_out = x.shape[-1] * tc.stride  # >= overlap: the two slices below are disjoint
        y = transposed_conv1d(x, tc.conv.weight, tc.stride)  # [B, C, n_out + ov]
        carried = state.trans_convs[self._names[id(tc)]].y
        y[..., : tc.overlap] += carried
        carried.copy_(y[..., n_out:])
        return y[..., :n_out] + tc.conv.bias[None, :, None]

    def _pre_transformer(self, x: Tensor, state: CodecStreamState) -> Tensor:
        """[B, n, latent] -> [B, n, latent] with each layer's sliding-window KV cache."""
        pt = self.model.pre_transformer
        n, past = x.shape[1], self.window - 1
        start = state.frames[:, None]  # [B, 1], on the device
        q_pos = start + torch.arange(n, device=x.device)  # [B, n]
        k_pos = start - past + torch.arange(past + n, device=x.device)  # [B, past + n]
        mask = sliding_window_mask(q_pos, k_pos, self.window)  # [B, 1, n, past + n]
        cos, sin = pt.rope.cos_sin(q_pos, x.dtype)
        h = pt.input_proj(x)
        for layer, cache in zip(pt.layers, state.attention, strict=True):
            h = self.window_layer(layer, h, cos, sin, mask, cache.k, cache.v)
        return pt.output_proj(pt.norm(h))


def window_layer(layer: TransformerLayer, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor,
                 k_window: Tensor, v_window: Tensor) -> Tensor:
    """One pre_transformer layer over n new frames x [B, n, hidden] after the keys and
    values of its window [B, H_kv, window-1, D], which then shifts in place to the newest
    window-1 frames."""
    n = x.shape[1]
    h, k, v = layer(x, cos, sin, mask, past=(k_window, v_window))  # k, v: [B, H_kv, past + n, D]
    # a slice of the new k/v, so copy_ never reads what it overwrites (`-past:` would keep
    # all of them when past == 0)
    k_window.copy_(k[:, :, n:])
    v_window.copy_(v[:, :, n:])
    return h


@dataclass
class WindowedStreamState:
    """B streams' recent codes for the windowed mode: the last `left_context` frames,
    right-aligned and zero-padded, [B, 16, left_context], plus frames seen per stream."""

    history: Tensor
    frames: Tensor  # LongTensor[B]

    @property
    def batch_size(self) -> int:
        return self.frames.shape[0]

    @classmethod
    def stack(cls, states: list[WindowedStreamState]) -> WindowedStreamState:
        return cls(torch.cat([s.history for s in states]), torch.cat([s.frames for s in states]))

    def select(self, index: int) -> WindowedStreamState:
        return WindowedStreamState(self.history[index : index + 1], self.frames[index : index + 1])

    def split(self) -> list[WindowedStreamState]:
        return [self.select(i) for i in range(self.batch_size)]


class WindowedCodecDecoder:
    """Approximate streaming: each step decodes (up to) `left_context` old
    frames plus the n new ones with a fresh offline decode and keeps the last n*1920
    samples. Exact only while all of a stream's earlier frames fit in left_context."""

    def __init__(self, model: CodecDecoder, left_context: int = DEFAULT_LEFT_CONTEXT) -> None:
        if left_context < 0:
            raise ValueError(f"left_context must be >= 0, got {left_context}")
        self.model = model
        self.left_context = left_context

    @property
    def samples_per_frame(self) -> int:
        return self.model.samples_per_frame

    def new_state(self, batch_size: int = 1) -> WindowedStreamState:
        dev = next(self.model.parameters()).device
        n_q = self.model.config.num_quantizers
        history = torch.zeros(batch_size, n_q, self.left_context, dtype=torch.long, device=dev)
        return WindowedStreamState(history, torch.zeros(batch_size, dtype=torch.long, device=dev))

    @torch.no_grad()
    def step(self, state: WindowedStreamState, codes: Tensor, check_codes: bool = True) -> Tensor:
        """codes [B, 16, n] -> PCM [B, n * 1920]; updates `state` in place."""
        self.model.check_codes(codes, values=check_codes)
        b, _, n = codes.shape
        if b != state.batch_size:
            raise ValueError(f"codes carry {b} streams, the state {state.batch_size}")
        codes = codes.long()
        dtype = next(self.model.parameters()).dtype
        out = torch.empty(b, n * self.samples_per_frame, device=codes.device, dtype=dtype)
        # Streams with the same amount of history decode together in one batch.
        context = state.frames.clamp(max=self.left_context)
        for ctx in context.unique().tolist():
            rows = (context == ctx).nonzero().squeeze(1)
            window = torch.cat([state.history[rows, :, self.left_context - ctx :], codes[rows]], -1)
            pcm = self.model(window)  # [b_ctx, (ctx + n) * 1920]
            out[rows] = pcm[:, ctx * self.samples_per_frame :]
        if self.left_context:
            state.history = torch.cat([state.history, codes], dim=-1)[..., -self.left_context :]
        state.frames = state.frames + n
        return out


class _StreamDecoder(Protocol):
    def new_state(self, batch_size: int = 1) -> object: ...

    def step(self, state: object, codes: Tensor) -> Tensor: ...



def decode_in_packets(decoder: _StreamDecoder, codes: Tensor, packets: int | list[int]) -> Tensor:
    """Run all `codes` [B, 16, T] through a fresh stream state packet by packet and
    concatenate the PCM -> [B, T * 1920]. `packets` is a fixed packet size (the last
    packet may be shorter) or an explicit list of sizes summing to T."""
    total = codes.shape[2]
    if isinstance(packets, int):
        if packets < 1:
            raise ValueError(f"packet size must be >= 1, got {packets}")
        sizes = [min(packets, total - i) for i in range(0, total, packets)]
    else:
        sizes = list(packets)
        if sum(sizes) != total or min(sizes) < 1:
            raise ValueError(f"packet sizes {sizes} must be >= 1 and sum to {total}")
    state = decoder.new_state(codes.shape[0])
    pieces, start = [], 0
    for size in sizes:
        pieces.append(decoder.step(state, codes[:, :, start : start + size]))
        start += size
    return torch.cat(pieces, dim=-1)
