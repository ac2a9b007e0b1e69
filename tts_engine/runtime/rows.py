"""One pool of batch rows, shared by the code generator and the codec decoder.

A *row* holds everything one stream needs between engine steps, as one index
into batched tensors: its talker KV cache (`positions` positions), its
frame-step buffers (next talker input, position, codebook-0 `seen` mask,
sampling key, last codes) and its incremental codec decoder state. Because all
rows live in the same tensors, one kernel sequence steps rows 0..b-1 together,
and a CUDA graph captured over that range serves any streams placed there.

Active streams occupy rows 0..n-1 (compact). A stream that leaves is replaced
by the last active row (`move`), so a step over the first n rows never skips
one. Newcomers are prefilled straight into the rows after the active ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..codec_stream import CodecStreamDecoder, CodecStreamState
from ..codegen import CodeGenerator
from ..model.layers import KVCache


@dataclass
class RowView:
    """Rows start..stop-1 of every pool tensor (views: writes land in the pool)."""

    k: Tensor  # [layers, b, Hkv, positions, D]
    v: Tensor
    predictor_k: Tensor  # [layers, b, Hkv, 16, D]
    predictor_v: Tensor
    pos: Tensor  # LongTensor [b]: the talker position of the next step
    seen: Tensor  # bool [b, V]: codebook-0 tokens generated so far
    frames_done: Tensor  # LongTensor [b]
    min_new_tokens: Tensor  # LongTensor [b]
    sampled: Tensor  # bool [b]: draw with noise instead of argmax
    seed: Tensor  # LongTensor [b]: the noise key
    x: Tensor  # [b, 1, C]: the next talker input
    tts_pad: Tensor  # [b, C]
    hidden: Tensor  # [b, C]
    logits: Tensor  # [b, V]
    codes: Tensor  # LongTensor [b, 16]: the last frame's codes
    codec: CodecStreamState


class RowPool:
    def __init__(self, codegen: CodeGenerator, decoder: CodecStreamDecoder,
                 rows: int, positions: int) -> None:
        if rows < 1:
            raise ValueError(f"a row pool needs at least one row, got {rows}")
        cfg = codegen.config.talker
        device, dtype = codegen.device, codegen.dtype
        self.rows, self.positions = rows, positions
        talker = KVCache.allocate(cfg.geometry, rows, positions, device, dtype)
        predictor = KVCache.allocate(cfg.code_predictor.geometry, rows, cfg.num_code_groups, device,
                                     dtype)
        self._k, self._v = talker.k, talker.v
        self._pk, self._pv = predictor.k, predictor.v
        self._buffers = {name: torch.zeros(rows, *shape, dtype=kind, device=device)
                         for name, (shape, kind) in _buffer_specs(codegen).items()}
        self._codec = decoder.new_state(rows)

    def view(self, start: int, stop: int) -> RowView:
        sl = slice(start, stop)
        return RowView(self._k[:, sl], self._v[:, sl], self._pk[:, sl], self._pv[:, sl],
                       **{name: t[sl] for name, t in self._buffers.items()},
                       codec=self._codec.rows(start, stop))

    def row(self, index: int) -> RowView:
        return self.view(index, index + 1)

    def move(self, moves: list[tuple[int, int, int]]) -> None:
        """For each (src, dst, length), copy row `src` (its first `length` KV positions,
        every buffer, its decoder state) into row `dst`; no row is both a source and a
        destination. Later positions of `dst` keep stale but finite values, which the
        attention mask hides. The KV, most of the bytes, is copied row by row in its own
        length; the ~70 small tensors each in one indexed copy for every row, so freeing
        many rows at once (a wave of replies ending together) costs about what one does."""
        if not moves:
            return
        for src, dst, length in moves:
            self._k[:, dst, :, :length] = self._k[:, src, :, :length]
            self._v[:, dst, :, :length] = self._v[:, src, :, :length]
        sources, destinations, _ = zip(*moves, strict=True)
        src, dst = (torch.tensor(rows, device=self._k.device) for rows in (sources, destinations))
        for t in (*self._buffers.values(), *self._codec.tensors()):
            t.index_copy_(0, dst, t.index_select(0, src))

    def park(self, start: int, stop: int) -> None:
        """Rows that only pad a bucket: position 0, so their writes stay in range."""
        self._buffers["pos"][start:stop] = 0

    @property
    def nbytes(self) -> int:
        """Bytes of every pool tensor (what row_bytes predicts for `rows` rows)."""
        tensors = (self._k, self._v, self._pk, self._pv, *self._buffers.values(),
                   *self._codec.tensors())
        return sum(t.numel() * t.element_size() for t in tensors)


def _buffer_specs(codegen: CodeGenerator) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """A row's frame-step buffers: name -> (shape without the row axis, dtype)."""
    cfg = codegen.config.talker
    g, dtype = cfg.geometry, codegen.dtype
    return {
        "pos": ((), torch.long), "seen": ((g.vocab_size,), torch.bool),
        "frames_done": ((), torch.long), "min_new_tokens": ((), torch.long),
        "sampled": ((), torch.bool), "seed": ((), torch.long), "x": ((1, g.hidden_size), dtype),
        "tts_pad": ((g.hidden_size,), dtype), "hidden": ((g.hidden_size,), dtype),
        "logits": ((g.vocab_size,), dtype), "codes": ((cfg.num_code_groups,), torch.long),
    }


class PrefillStage:
    """Where prefills of fixed shapes run: the prompts' embeddings and the KV they make,
    `tokens` positions in all, seen as [group, length] for any group x length <= tokens.
    The same shape always gets the same memory, so one CUDA graph per shape serves."""

    def __init__(self, codegen: CodeGenerator, tokens: int) -> None:
        g = codegen.config.talker.geometry
        self.tokens, self._geometry = tokens, g
        self._embeds = torch.zeros(tokens * g.hidden_size, device=codegen.device,
                                   dtype=codegen.dtype)
        per_layer = g.num_key_value_heads * tokens * g.head_dim
        self._k, self._v = (torch.zeros(g.num_hidden_layers, per_layer, device=codegen.device,
                                        dtype=codegen.dtype)
                            for _ in range(2))

    def shape(self, group: int, length: int) -> tuple[Tensor, KVCache]:
        """Embeddings [group, length, C] and an empty cache [layers, group, Hkv, length, D]."""
        g = self._geometry
        if group * length > self.tokens:
            raise ValueError(f"a prefill of {group} x {length} positions exceeds the stage's "
                             f"{self.tokens}")
        kv_shape = (g.num_hidden_layers, group, g.num_key_value_heads, length, g.head_dim)
        size = group * g.num_key_value_heads * length * g.head_dim
        embeds = self._embeds[: group * length * g.hidden_size].view(group, length, g.hidden_size)
        return embeds, KVCache(self._k[:, :size].view(kv_shape), self._v[:, :size].view(kv_shape))

    @staticmethod
    def nbytes(codegen: CodeGenerator, tokens: int) -> int:
        g = codegen.config.talker.geometry
        itemsize = torch.empty(0, dtype=codegen.dtype).element_size()
        return tokens * (g.hidden_size
                         + 2 * g.num_hidden_layers * g.num_key_value_heads * g.head_dim) * itemsize


def row_bytes(codegen: CodeGenerator, decoder: CodecStreamDecoder, positions: int) -> int:
    """Bytes of one row, from the geometry (to size the pool before allocating it)."""
    cfg = codegen.config.talker
    g, pg = cfg.geometry, cfg.code_predictor.geometry
    itemsize = torch.empty(0, dtype=codegen.dtype).element_size()
    talker = 2 * g.num_hidden_layers * g.num_key_value_heads * positions * g.head_dim * itemsize
    predictor = (2 * pg.num_hidden_layers * pg.num_key_value_heads * cfg.num_code_groups
                 * pg.head_dim * itemsize)
    codec = sum(t.numel() * t.element_size() for t in decoder.new_state(1).tensors())
    buffers = sum(math.prod(shape) * torch.empty(0, dtype=kind).element_size()
                  for shape, kind in _buffer_specs(codegen).values())
    return talker + predictor + codec + buffers
