"""Transformer building blocks shared by the talker and the code predictor.

Plain torch in the style of gpt-fast. The arithmetic mirrors the official
implementation op for op (float32 RMSNorm, float32 RoPE tables cast to the
model dtype, SDPA with grouped KV heads and no explicit mask when every cached
position is visible) so that float32 greedy decoding reproduces its codes.

Shapes: B batch, S new positions, T cached positions, H query heads,
Hkv key/value heads, D head_dim, C hidden size.

Projections that read the same input run as one GEMM: q, k and v (`qkv_proj`), gate
and up (`gate_up_proj`), their weights stacked along the output dimension. State
dicts keep the official keys (`q_proj.weight`, ...): see `stack_projections`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configs import TransformerGeometry


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class RotaryTable(nn.Module):
    """cos/sin tables for 1-D RoPE (the talker's MRoPE reduces to this for TTS)."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self, device: torch.device | str | None = None) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64,
                                 device=device).to(torch.float32)
        return 1.0 / (self.theta ** (exponents / self.head_dim))

    def materialize(self, device: torch.device | str) -> None:
        """Recompute the table on `device` (after building the model on the meta device)."""
        self.inv_freq = self._inv_freq(device)

    def forward(self, positions: torch.Tensor,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # positions [B, S] -> cos, sin [B, S, D]
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq.to(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [B, H, S, D]; cos/sin [B, S, D]
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + _rotate_half(x) * sin


class KVCache:
    """Keys/values of one transformer stack for a batch of streams, appended in order.

    `length` (a Python int) is the number of valid positions; attention reads
    the first `length` rows, so no mask is needed while all rows share a length.
    The prefill and the exact float32 path use this cache.

    `written_by_projection`: each layer's projection writes its new keys/values into
    the cache itself (`DecoderLayer.project_into`). Compiled, the write is then part of
    the kernel that makes them instead of two copies per layer and step: for the code
    predictor's cache, whose 15 steps a frame made 150 such copies. Its compiled code
    depends on the cache's strides, so only a cache of one capacity at every call (the
    predictor's: one position per codebook) takes it.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor,
                 written_by_projection: bool = False) -> None:
        self.k, self.v = k, v  # [layers, B, Hkv, capacity, D]
        self.capacity = k.shape[3]
        self.length = 0
        self.written_by_projection = written_by_projection

    @classmethod
    def allocate(
        cls, geometry: TransformerGeometry, batch: int, capacity: int, device: torch.device,
        dtype: torch.dtype, written_by_projection: bool = False,
    ) -> KVCache:
        shape = (geometry.num_hidden_layers, batch, geometry.num_key_value_heads, capacity,
                 geometry.head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype),
                   torch.zeros(shape, device=device, dtype=dtype), written_by_projection)

    def positions(self, batch: int, s: int, device: torch.device) -> torch.Tensor:
        if s > 1 and self.length != 0:
            raise RuntimeError("multi-position steps are only "
                               "supported as the first (prefill) step")
        if self.length + s > self.capacity:
            raise RuntimeError(f"KV cache overflow: {self.length + s} positions > capacity "
                               f"{self.capacity}")
        return torch.arange(self.length, self.length + s, device=device).expand(batch, s)

    def layer(self, i: int) -> AppendedKV:
        return AppendedKV(self.k[i], self.v[i], self.length, self.written_by_projection)

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0


class AppendedKV:
    """One layer's part of a KVCache: new keys/values go after the first `start` positions."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, start: int,
                 written_by_projection: bool) -> None:
        self.k, self.v, self.start = k, v, start  # [B, Hkv, capacity, D]
        self.written_by_projection = written_by_projection

    def project(self, layer: DecoderLayer, x: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q [B, H, S, D] of x's S positions, their k/v appended; all valid k/v (no mask)."""
        end = self.start + x.shape[1]
        k_slots, v_slots = self.k[:, :, self.start : end], self.v[:, :, self.start : end]
        if self.written_by_projection:
            q = layer.project_into(x, cos, sin, k_slots, v_slots)
        else:
            q, k, v = layer.project(x, cos, sin)
            k_slots.copy_(k)
            v_slots.copy_(v)
        return q, self.k[:, :, :end], self.v[:, :, :end], None


class StaticKVCache:
    """A shape-static view of a KV cache for single-position decode steps.

    The next position of each row lives in a device tensor, keys/values are
    scattered there, and attention reads a fixed `span` of rows under a mask:
    no Python-side state changes between steps, so the step can be captured
    once as a CUDA graph and replayed. Rows may be at different positions.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, span: int) -> None:
        self.k, self.v, self.pos, self.span = k, v, pos, span  # pos: LongTensor [B]
        self._mask: torch.Tensor | None = None

    def positions(self, batch: int, s: int, device: torch.device) -> torch.Tensor:
        if s != 1:
            raise RuntimeError("the static cache takes one position per step")
        visible = torch.arange(self.span, device=device)[None, :] <= self.pos[:, None]  # [B, span]
        self._mask = visible[:, None, None, :]
        return self.pos[:, None]

    def layer(self, i: int) -> ScatteredKV:
        if self._mask is None:
            raise RuntimeError("StaticKVCache.positions() comes first: it makes the step's mask")
        return ScatteredKV(self.k[i], self.v[i], self.pos, self._mask)

    def advance(self, n: int) -> None:
        self.pos.add_(n)


class ScatteredKV:
    """One layer's part of a StaticKVCache: each row's keys/values go to its own position;
    attention reads the mask's span of positions (its last dimension)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor,
                 pos: torch.Tensor, mask: torch.Tensor) -> None:
        # k/v [B, Hkv, capacity, D]; mask [B, 1, 1, span]
        self.k, self.v, self.pos, self.mask = k, v, pos, mask

    def project(self, layer: DecoderLayer, x: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q [B, H, 1, D] of x's position, its k/v scattered to each row's position; the
        span's k/v and its mask."""
        q, k, v = layer.project(x, cos, sin)
        index = self.pos.view(-1, 1, 1, 1).expand(-1, k.shape[1], 1, k.shape[3])
        self.k.scatter_(2, index, k)
        self.v.scatter_(2, index, v)
        span = self.mask.shape[-1]
        return q, self.k[:, :, :span], self.v[:, :, :span], self.mask


def stack_projections(module: nn.Module, name: str, in_features: int,
                      parts: dict[str, int]) -> None:
    """Give `module` a bias-free nn.Linear `name` whose weight is the weights of the official
    projections `parts` (name: output rows) stacked in that order: one GEMM for all of them,
    whose output the caller splits by `parts`' rows.

    The module's state dict keeps the official keys: loading concatenates them into the
    stacked weight (the parts are not kept: one copy of the weights), and `state_dict()`
    gives them back, as views of it, where the stacked weight would be."""
    setattr(module, name, nn.Linear(in_features, sum(parts.values()), bias=False))
    stacked = f"{name}.weight"
    official = [f"{part}.weight" for part in parts]
    rows = list(parts.values())

    def load(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
        keys = [prefix + key for key in official]
        if all(key in state_dict for key in keys):  # else strict loading names what is wrong
            state_dict[prefix + stacked] = torch.cat([state_dict.pop(key) for key in keys])

    def save(module: nn.Module, state_dict: dict, prefix: str, _metadata: object) -> None:
        keys = list(state_dict)
        after = keys[keys.index(prefix + stacked) + 1:]
        later = {key: state_dict.pop(key) for key in after}
        weight = state_dict.pop(prefix + stacked)
        state_dict.update(zip((prefix + key for key in official), weight.split(rows)))
        state_dict.update(later)

    module.register_load_state_dict_pre_hook(load)
    module.register_state_dict_post_hook(save)


class Attention(nn.Module):
    def __init__(self, g: TransformerGeometry) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = (g.num_attention_heads, g.num_key_value_heads,
                                                  g.head_dim)
        self.qkv_rows = (self.n_heads * self.head_dim, self.n_kv * self.head_dim,
                         self.n_kv * self.head_dim)
        stack_projections(self, "qkv_proj", g.hidden_size,
                          dict(zip(("q_proj", "k_proj", "v_proj"), self.qkv_rows)))
        self.o_proj = nn.Linear(g.num_attention_heads * g.head_dim, g.hidden_size, bias=False)
        self.q_norm = RMSNorm(g.head_dim, g.rms_norm_eps)  # per head, before RoPE
        self.k_norm = RMSNorm(g.head_dim, g.rms_norm_eps)

    def project(self, x: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normed x [B, S, C] -> q [B, H, S, D], k and v [B, Hkv, S, D], RoPE applied."""
        b, s, _ = x.shape
        q, k, v = self.qkv_proj(x).split(self.qkv_rows, dim=-1)
        q = self.q_norm(q.view(b, s, self.n_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(k.view(b, s, self.n_kv, self.head_dim)).transpose(1, 2)
        v = v.view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """q [B, H, S, D] over the cache's k/v [B, Hkv, T, D] (under `mask`, if any)."""
        # a multi-position (causal) step is always the prefill of an empty cache
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                              is_causal=q.shape[2] > 1 and mask is None,
                                              enable_gqa=self.n_heads != self.n_kv)

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """Attention output [B, H, S, D] -> [B, S, C]."""
        b, _, s, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, g: TransformerGeometry) -> None:
        super().__init__()
        stack_projections(self, "gate_up_proj", g.hidden_size,
                          {"gate_proj": g.intermediate_size, "up_proj": g.intermediate_size})
        self.down_proj = nn.Linear(g.intermediate_size, g.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    """One transformer layer, in three parts: `project` (norm, q/k/v, RoPE; `project_into`
    also writes k/v into the slices of an appended cache), the attention over this layer's
    part of the cache (`kv`), and `finish` (output projection, MLP, the residuals). They see
    activations only, never the cache or the layer's index, so one compiled code of each
    serves every layer (runtime/compiled.py)."""

    def __init__(self, g: TransformerGeometry) -> None:
        super().__init__()
        self.self_attn = Attention(g)
        self.mlp = MLP(g)
        self.input_layernorm = RMSNorm(g.hidden_size, g.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(g.hidden_size, g.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv: AppendedKV | ScatteredKV) -> torch.Tensor:
        q, k, v, mask = kv.project(self, x, cos, sin)
        return self.finish(x, self.self_attn.attend(q, k, v, mask))

    def project(self, x: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.self_attn.project(self.input_layernorm(x), cos, sin)

    def project_into(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_slots: torch.Tensor, v_slots: torch.Tensor) -> torch.Tensor:
        """q, with k and v written into `k_slots` and `v_slots` [B, Hkv, S, D]."""
        q, k, v = self.self_attn.project(self.input_layernorm(x), cos, sin)
        k_slots.copy_(k)
        v_slots.copy_(v)
        return q

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn.output(attended)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderStack(nn.Module):
    """`layers` + final `norm` + a RoPE table: the `*.model` part of talker and predictor."""

    def __init__(self, g: TransformerGeometry) -> None:
        super().__init__()
        self.geometry = g
        self.layers = nn.ModuleList(DecoderLayer(g) for _ in range(g.num_hidden_layers))
        self.norm = RMSNorm(g.hidden_size, g.rms_norm_eps)
        self.rotary = RotaryTable(g.head_dim, g.rope_theta)

    def forward(self, x: torch.Tensor, cache: KVCache | StaticKVCache) -> torch.Tensor:
        """x [B, S, C] at the cache's next positions -> normed hidden [B, S, C];
        advances the cache."""
        b, s, _ = x.shape
        cos, sin = self.rotary(cache.positions(b, s, x.device), x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache.layer(i))
        cache.advance(s)
        return self.norm(x)
