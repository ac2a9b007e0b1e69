"""The decoder layer's stacked projections: q/k/v run as one GEMM (`qkv_proj`) and gate/up
as one (`gate_up_proj`), loaded from and saved to the official separate keys; in float32
on a CPU their results equal the separate projections' bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tts_engine.model.configs import TransformerGeometry, parse_model_config, preset_config
from tts_engine.model.layers import DecoderLayer, KVCache, RotaryTable

SEPARATE = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj",
            "mlp.up_proj")


def geometry(preset: str) -> TransformerGeometry:
    return parse_model_config(preset_config(preset)).talker.geometry


def official_state_dict(g: TransformerGeometry, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official keys, in the official order."""
    gen = torch.Generator().manual_seed(seed)
    q, kv, c, i = g.num_attention_heads * g.head_dim, g.num_key_value_heads * g.head_dim, \
        g.hidden_size, g.intermediate_size
    shapes = {"self_attn.q_proj": (q, c), "self_attn.k_proj": (kv, c),
              "self_attn.v_proj": (kv, c), "self_attn.o_proj": (c, q),
              "self_attn.q_norm": (g.head_dim,), "self_attn.k_norm": (g.head_dim,),
              "mlp.gate_proj": (i, c), "mlp.up_proj": (i, c), "mlp.down_proj": (c, i),
              "input_layernorm": (c,), "post_attention_layernorm": (c,)}
    return {f"{name}.weight": (1 + 0.1 * torch.randn(shape, generator=gen)) if len(shape) == 1
            else 0.05 * torch.randn(shape, generator=gen) for name, shape in shapes.items()}


def loaded_layer(g: TransformerGeometry, weights: dict[str, torch.Tensor]) -> DecoderLayer:
    with torch.device("meta"):
        layer = DecoderLayer(g)
    layer.load_state_dict(weights, strict=True, assign=True)
    return layer.eval().requires_grad_(False)


def separate_project(layer: DecoderLayer, w: dict[str, torch.Tensor], x: torch.Tensor,
                     cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`DecoderLayer.project` as three GEMMs of the official weights."""
    attn, h = layer.self_attn, layer.input_layernorm(x)
    b, s, _ = h.shape

    def heads(name: str, n: int) -> torch.Tensor:
        return F.linear(h, w[f"self_attn.{name}.weight"]).view(b, s, n, attn.head_dim)

    q = attn.q_norm(heads("q_proj", attn.n_heads)).transpose(1, 2)
    k = attn.k_norm(heads("k_proj", attn.n_kv)).transpose(1, 2)
    v = heads("v_proj", attn.n_kv).transpose(1, 2)
    return q * cos[:, None] + rotate_half(q) * sin[:, None], \
        k * cos[:, None] + rotate_half(k) * sin[:, None], v


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def separate_finish(layer: DecoderLayer, w: dict[str, torch.Tensor], x: torch.Tensor,
                    attended: torch.Tensor) -> torch.Tensor:
    """`DecoderLayer.finish` with gate and up as two GEMMs of the official weights."""
    x = x + layer.self_attn.output(attended)
    h = layer.post_attention_layernorm(x)
    gate, up = F.linear(h, w["mlp.gate_proj.weight"]), F.linear(h, w["mlp.up_proj.weight"])
    return x + F.linear(F.silu(gate) * up, w["mlp.down_proj.weight"])


def test_the_official_keys_load_into_stacked_weights_and_come_back_in_their_order():
    g = geometry("tiny")
    weights = official_state_dict(g)
    layer = loaded_layer(g, weights)
    attn, mlp = layer.self_attn, layer.mlp
    assert not any(hasattr(module, name.split(".")[1]) for name in SEPARATE
                   for module in (attn, mlp))
    assert torch.equal(attn.qkv_proj.weight, torch.cat([weights[f"{n}.weight"]
                                                        for n in SEPARATE[:3]]))
    assert torch.equal(mlp.gate_up_proj.weight, torch.cat([weights[f"{n}.weight"]
                                                           for n in SEPARATE[3:]]))
    saved = layer.state_dict()
    assert list(saved) == list(weights)  # the official order: checkpoints are written by it
    for name, tensor in weights.items():
        assert torch.equal(saved[name], tensor), name
    # one copy of the weights: the saved parts are views of the stacked weight
    assert saved["self_attn.k_proj.weight"].untyped_storage().data_ptr() == \
        attn.qkv_proj.weight.untyped_storage().data_ptr()
    assert sum(p.numel() for p in layer.parameters()) == sum(t.numel() for t in weights.values())


def test_loading_without_one_of_the_parts_is_refused():
    g = geometry("tiny")
    weights = official_state_dict(g)
    del weights["self_attn.v_proj.weight"]
    with pytest.raises(RuntimeError, match="qkv_proj.weight"):
        loaded_layer(g, weights)


@pytest.mark.parametrize("preset", ["tiny", "custom:256,6,256,3", "0.6b", "1.7b"])
@pytest.mark.parametrize("batch, positions", [(1, 1), (3, 1), (2, 9)])
def test_stacked_projections_equal_the_separate_ones_bit_for_bit(preset, batch, positions):
    g = geometry(preset)
    weights = official_state_dict(g, seed=1)
    layer = loaded_layer(g, weights)
    rotary = RotaryTable(g.head_dim, g.rope_theta)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(batch, positions, g.hidden_size, generator=gen)
    cos, sin = rotary(torch.arange(3, 3 + positions).expand(batch, positions), x.dtype)
    with torch.no_grad():
        stacked = layer.project(x, cos, sin)
        separate = separate_project(layer, weights, x, cos, sin)
        attended = layer.self_attn.attend(*stacked, None)  # an empty cache's
        finished = (layer.finish(x, attended), separate_finish(layer, weights, x, attended))
    for a, b in (*zip(stacked, separate, strict=True), finished):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # the stacking is right
        assert torch.equal(a, b)  # and as exact as the official layer on a CPU


@pytest.mark.parametrize("batch, positions, start", [(1, 2, 0), (3, 1, 5)])
def test_projecting_into_an_appended_cache_writes_what_project_returns(batch, positions, start):
    g = geometry("tiny")
    layer = loaded_layer(g, official_state_dict(g, seed=3))
    rotary = RotaryTable(g.head_dim, g.rope_theta)
    x = torch.randn(batch, positions, g.hidden_size, generator=torch.Generator().manual_seed(4))
    cos, sin = rotary(torch.arange(start, start + positions).expand(batch, positions), x.dtype)
    cache = KVCache.allocate(g, batch, 8, x.device, x.dtype)
    cache.advance(start)
    with torch.no_grad():
        q, k, v = layer.project(x, cos, sin)
        q_into, k_all, v_all, mask = cache.layer(0).project(layer, x, cos, sin)
    end = start + positions
    assert torch.equal(q_into, q) and mask is None
    assert torch.equal(k_all[:, :, start:], k) and torch.equal(v_all[:, :, start:], v)
    assert k_all.shape[2] == v_all.shape[2] == end and not k_all[:, :, :start].any()
