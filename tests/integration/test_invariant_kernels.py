"""The batch-invariant kernels (tts_engine/model/invariant_kernels.py) and the mode that
routes torch functions to them (model/batch_invariant.py), run by the Triton
interpreter on CPU tensors: each matches torch within rounding, and a row's result is
bit-identical whatever rows share its call (batches of 1, 3, 17 and 64), whatever the
padding a batch adds (masked keys past a row's span, prompt positions past its own).
The same kernels compile for the H200 here (Triton's ptxas needs no GPU); tests/test_gpu.py
runs them there in bf16.

Triton picks its interpreter when it is imported (TRITON_INTERPRET=1), and other tests
of a session may import it first, so the cases run in a child pytest of this file with
the variable set; run this file with TRITON_INTERPRET=1 to see them one by one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BATCHES = (1, 3, 17, 64)
cases = pytest.mark.skipif(not INTERPRETED, reason="run under the interpreter by "
                                                   "test_the_kernels_under_the_triton_interpreter")


@pytest.mark.skipif(INTERPRETED, reason="this process is the interpreted run")
def test_the_kernels_under_the_triton_interpreter():
    here = Path(__file__)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--noconftest", str(here)],
                         cwd=here.parents[2], env={**os.environ, "TRITON_INTERPRET": "1"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout


@pytest.mark.skipif(INTERPRETED, reason="compiles for a GPU, which the interpreter does not")
def test_the_kernels_compile_for_the_h200():
    """Each kernel as the launchers call it, compiled for sm_90 (Triton's own ptxas, no GPU
    needed), with the specialisations Triton's launcher makes of such calls (unit strides
    as constants, pointers and other strides multiples of 16): the bf16 GEMM of a linear
    layer runs on Hopper's wgmma, its loads pipelined (asynchronous copies)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import tts_engine.model.invariant_kernels as k

    def compile_asm(kernel, pointers: dict[str, str], constants: dict, unit: tuple[str, ...] = (),
                    scalars: dict[str, str] | None = None, **options) -> dict[str, str]:
        signature, attrs = {}, {}
        for i, p in enumerate(kernel.params):
            if p.is_constexpr or p.name in unit:
                signature[p.name] = "constexpr"
                if p.name in unit:
                    constants = {**constants, p.name: 1}
            else:
                signature[p.name] = pointers.get(p.name) or (scalars or {}).get(p.name, "i32")
                if p.name in pointers or p.name.startswith("s_"):
                    attrs[(i,)] = [["tt.divisibility", 16]]
        source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
        return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm

    def gemm(dtype: torch.dtype, n: int, kk: int, taps: int, precision: str, has_bias: bool,
             unit: tuple[str, ...]) -> dict[str, str]:
        cfg = k.gemm_config(n, kk, dtype)
        name = {torch.bfloat16: "*bf16", torch.float32: "*fp32"}[dtype]
        return compile_asm(k._gemm_kernel, dict.fromkeys(("x", "w", "bias", "out"), name),
                           {"N": n, "K": kk, "TAPS": taps, "DILATION": 3, "HAS_BIAS": has_bias,
                            "PRECISION": precision, "BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n,
                            "BLOCK_K": cfg.block_k}, unit,
                           num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    linear = gemm(torch.bfloat16, 3072, 1024, 1, "tf32", False, unit=("s_xc", "s_wk", "s_on"))
    assert "wgmma" in linear["ptx"] and "async_copy_global_to_local" in linear["ttgir"]
    for precision in ("tf32", "ieee"):  # the decoder's convs: time steps contiguous
        gemm(torch.float32, 96, 672, 7, precision, True, unit=("s_xl", "s_wk", "s_ol"))
    compile_asm(k._row_sum_kernel, {"x": "*fp32", "out": "*fp32"}, {"N": 1024, "BLOCK": 1024},
                num_warps=4)
    for dtype, dim, precision in (("bf16", 128, "tf32"), ("fp32", 64, "ieee")):
        for mode in (k.MASK_NONE, k.MASK_CAUSAL, k.MASK_TENSOR):
            compile_asm(k._attention_kernel,
                        {**dict.fromkeys(("q", "k", "v", "out"), f"*{dtype}"), "mask": "*i1"},
                        {"H": 16, "GROUPS": 2, "D": dim, "MASK_MODE": mode, "PRECISION": precision,
                         "BLOCK_M": k.ATTENTION_BLOCK_M, "BLOCK_N": k.ATTENTION_BLOCK_N},
                        scalars={"scale": "fp32"}, num_warps=4)


@pytest.fixture(scope="module")
def kernels():
    import tts_engine.model.invariant_kernels as module

    return module


@pytest.fixture
def mode(kernels):
    from tts_engine.model.batch_invariant import BatchInvariantMode

    return BatchInvariantMode("cpu")


def rand(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    assert a.shape == b.shape
    assert (a.float() - b.float()).abs().max().item() < tol


def row_groups(total: int) -> list[tuple[int, int]]:
    """(start, stop) of calls of each size in BATCHES, at different offsets."""
    return [(start, start + size) for size in BATCHES
            for start in {0, (total - size) // 2, total - size}]


@cases
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_linear_matches_torch_and_a_row_is_the_same_in_any_batch(kernels, dtype, tol):
    x, w, b = (rand(64, 48, dtype=dtype), rand(80, 48, dtype=dtype, seed=1),
               rand(80, dtype=dtype, seed=2))
    full = kernels.linear(x, w, b)
    close(full, F.linear(x.float(), w.float(), b.float()), tol)
    close(kernels.linear(x, w, None), F.linear(x.float(), w.float()), tol)
    for start, stop in row_groups(64):
        assert torch.equal(kernels.linear(x[start:stop], w, b), full[start:stop]), (start, stop)


@cases
def test_linear_keeps_leading_dimensions(kernels):
    x, w = rand(2, 5, 32), rand(24, 32, seed=1)
    out = kernels.linear(x, w, None)
    assert out.shape == (2, 5, 24)
    assert torch.equal(out[1], kernels.linear(x[1], w, None))


@cases
def test_gemm_tiles_depend_on_the_weight_shape_only(kernels):
    config = kernels.gemm_config(3072, 1024, torch.bfloat16)
    assert (config.block_m, config.block_n, config.block_k) == (64, 32, 64)
    assert [kernels.gemm_config(n, 1024, torch.bfloat16).block_n
            for n in (64, 1024, 2048, 8192)] == [16, 16, 32, 64]
    assert kernels.gemm_config(16, 1024, torch.float32).block_n == 16
    assert kernels.gemm_config(64, 16, torch.float32).block_k == 16


@cases
def test_conv1d_matches_torch_and_a_stream_is_the_same_in_any_batch(kernels):
    x, w, b = rand(64, 12, 20), rand(10, 12, 7, seed=1), rand(10, seed=2)
    full = kernels.conv1d(x, w, b, dilation=3)
    close(full, F.conv1d(x, w, b, dilation=3), 1e-4)
    for start, stop in row_groups(64):
        assert torch.equal(kernels.conv1d(x[start:stop], w, b, dilation=3), full[start:stop])
    # an input that is a view (the decoder's tail + new columns) reads the same values
    wide = rand(4, 12, 30, seed=3)
    assert torch.equal(kernels.conv1d(wide[..., 5:25], w, b, 3),
                       kernels.conv1d(wide[..., 5:25].contiguous(), w, b, 3))


@cases
@pytest.mark.parametrize("taps", [4, 6, 8])  # kernel = stride, between, 2 x stride
def test_the_decoders_transposed_conv_is_the_same_in_any_batch(mode, taps):
    """The decoder's transposed conv is a linear layer and an overlap-add: in the mode, a
    row's result does not depend on the rows beside it."""
    from tts_engine.model.codec_decoder import transposed_conv1d

    x, w = rand(64, 12, 5), rand(12, 10, taps, seed=1)
    with mode:
        full = transposed_conv1d(x, w, 4)
        parts = {(start, stop): transposed_conv1d(x[start:stop], w, 4)
                 for start, stop in row_groups(64)}
    close(full, F.conv_transpose1d(x, w, None, 4), 1e-4)
    for (start, stop), part in parts.items():
        assert torch.equal(part, full[start:stop])


@cases
def test_depthwise_conv_matches_torch_and_a_stream_is_the_same_in_any_batch(mode):
    x, w, b = rand(17, 8, 12), rand(8, 1, 7, seed=1), rand(8, seed=2)
    with mode:
        full = F.conv1d(x, w, b, groups=8)
        one = F.conv1d(x[5:6], w, b, groups=8)
    close(full, F.conv1d(x, w, b, groups=8), 1e-5)
    assert torch.equal(one, full[5:6])


@cases
def test_unsupported_convolutions_are_refused_by_name(mode):
    x = rand(2, 8, 12)
    with mode, pytest.raises(NotImplementedError, match="padding"):
        F.conv1d(x, rand(4, 8, 3), padding=1)
    with mode, pytest.raises(NotImplementedError, match="groups"):
        F.conv1d(x, rand(4, 4, 3), groups=2)


def decode_mask(positions: list[int], span: int) -> torch.Tensor:
    """The talker's decode mask: row b sees keys 0..positions[b] of a span, [B, 1, 1, span]."""
    return (torch.arange(span)[None, :] <= torch.tensor(positions)[:, None])[:, None, None, :]


@cases
def test_decode_attention_matches_torch_and_ignores_the_span_and_the_batch(kernels):
    positions = [3, 40, 63, 64, 100, 129]
    b = len(positions)
    q, k, v = rand(b, 4, 1, 16), rand(b, 2, 256, 16, seed=1), rand(b, 2, 256, 16, seed=2)
    at_256 = kernels.attention(q, k, v, decode_mask(positions, 256), causal=False)
    reference = F.scaled_dot_product_attention(q, k[:, :, :130], v[:, :, :130],
                                               attn_mask=decode_mask(positions, 130),
                                               enable_gqa=True)
    close(at_256, reference, 1e-5)
    # a shorter span (another batch's longest row) leaves every row's keys and result alone
    at_130 = kernels.attention(q, k[:, :, :130], v[:, :, :130], decode_mask(positions, 130),
                               causal=False)
    assert torch.equal(at_130, at_256)
    for i in range(b):
        alone = kernels.attention(q[i : i + 1], k[i : i + 1], v[i : i + 1],
                                  decode_mask(positions[i : i + 1], 256), causal=False)
        assert torch.equal(alone, at_256[i : i + 1])


@cases
def test_causal_prefill_attention_ignores_padding_past_a_prompt(kernels):
    q, k, v = rand(2, 4, 70, 16), rand(2, 2, 70, 16, seed=1), rand(2, 2, 70, 16, seed=2)
    full = kernels.attention(q, k, v, None, causal=True)
    close(full, F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), 1e-5)
    # a prompt of 37 positions prefilled in its own length equals its first 37 in a padded shape
    own = kernels.attention(q[:1, :, :37], k[:1, :, :37], v[:1, :, :37], None, causal=True)
    assert torch.equal(own, full[:1, :, :37])


@cases
def test_windowed_attention_with_a_per_query_mask_and_all_visible(kernels):
    q, k, v = rand(3, 2, 2, 16), rand(3, 2, 73, 16, seed=1), rand(3, 2, 73, 16, seed=2)
    slots = torch.arange(73)
    first = torch.tensor([0, 30, 71])  # the oldest visible slot of each stream
    mask = ((slots[None, None, :] >= first[:, None, None])
            & (slots[None, None, :] <= 71 + torch.arange(2)[None, :, None]))
    mask = mask[:, None]  # [B, 1, 2, 73]
    close(kernels.attention(q, k, v, mask, causal=False),
          F.scaled_dot_product_attention(q, k, v, attn_mask=mask), 1e-5)
    close(kernels.attention(q, k, v, None, causal=False), F.scaled_dot_product_attention(q, k, v),
          1e-5)


@cases
def test_attention_refuses_shapes_it_cannot_tile(kernels):
    with pytest.raises(ValueError, match="power of two"):
        kernels.attention(rand(1, 2, 1, 24), rand(1, 2, 4, 24), rand(1, 2, 4, 24), None,
                          causal=False)


@cases
@pytest.mark.parametrize("n", [16, 128, 1500])
def test_row_sum_matches_torch_and_a_row_is_the_same_in_any_batch(kernels, n):
    x = rand(64, n)
    full = kernels.row_sum(x)
    close(full, x.sum(-1), 1e-3)
    for start, stop in row_groups(64):
        assert torch.equal(kernels.row_sum(x[start:stop]), full[start:stop])


@cases
def test_the_mode_runs_norms_and_sums_by_row(mode):
    from tts_engine.model.layers import RMSNorm

    x = rand(17, 64)
    norm = RMSNorm(64, 1e-6)
    with mode:
        normed, one = norm(x), norm(x[4:5])
        layer_normed = F.layer_norm(x, (64,), rand(64, seed=1), rand(64, seed=2))
        stacked = torch.stack([x, 2 * x, 3 * x], dim=1).sum(1)
        mean_keep = x.mean(-1, keepdim=True)
        counted = (x > 0).sum(-1)
    close(normed, norm(x), 1e-5)
    assert torch.equal(one, normed[4:5])
    close(layer_normed, F.layer_norm(x, (64,), rand(64, seed=1), rand(64, seed=2)), 1e-4)
    close(stacked, 6 * x, 1e-5)
    assert mean_keep.shape == (17, 1)
    assert torch.equal(counted, (x > 0).sum(-1))


@cases
def test_the_mode_routes_the_models_layers_to_the_kernels(kernels, mode):
    """nn.Linear, nn.Conv1d (dilated, as the decoder's) and SDPA (as the talker calls it)."""
    linear, conv = torch.nn.Linear(32, 24), torch.nn.Conv1d(12, 10, 7, dilation=3)
    x, xc = rand(5, 32), rand(2, 12, 30)
    q, k, v = rand(2, 4, 1, 16), rand(2, 2, 64, 16, seed=1), rand(2, 2, 64, 16, seed=2)
    mask = decode_mask([10, 50], 64)
    with mode, torch.no_grad():
        routed = (linear(x), conv(xc),
                  F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True))
    with torch.no_grad():
        direct = (kernels.linear(x, linear.weight, linear.bias),
                  kernels.conv1d(xc, conv.weight, conv.bias, 3),
                  kernels.attention(q, k, v, mask, causal=False))
    for a, b in zip(routed, direct, strict=True):
        assert torch.equal(a, b)


@cases
def test_a_decoder_stack_in_the_mode_gives_each_row_its_solo_result(mode):
    """The talker's layers as the engine runs them: stacked q/k/v and gate/up GEMMs (one
    tile configuration per stacked shape), RMSNorms, a causal prefill, then a masked decode
    step; close to plain torch, and a row's result whatever rows share its batch."""
    from tts_engine.model.configs import parse_model_config, preset_config
    from tts_engine.model.layers import DecoderStack, KVCache, StaticKVCache

    g = parse_model_config(preset_config("tiny")).talker.geometry
    torch.manual_seed(0)
    stack = DecoderStack(g).eval()
    prompt, step = rand(3, 6, g.hidden_size), rand(3, 1, g.hidden_size, seed=1)

    def run(rows: slice, invariant: bool) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(range(3)[rows])
        with torch.no_grad(), (mode if invariant else nullcontext()):
            cache = KVCache.allocate(g, b, 8, torch.device("cpu"), torch.float32)
            first = stack(prompt[rows], cache)
            static = StaticKVCache(cache.k, cache.v, torch.full((b,), 6), span=8)
            return first, stack(step[rows], static)

    full = run(slice(0, 3), invariant=True)
    for ours, torch_s in zip(full, run(slice(0, 3), invariant=False), strict=True):
        close(ours, torch_s, 1e-4)
    for rows in (slice(0, 1), slice(1, 3), slice(2, 3)):
        for alone, together in zip(run(rows, invariant=True), full, strict=True):
            assert torch.equal(alone, together[rows]), rows


@cases
def test_the_mode_refuses_batch_dependent_reductions_it_does_not_cover(mode):
    x = rand(4, 8)
    with mode, pytest.raises(RuntimeError, match="no batch-invariant kernel"):
        _ = x @ x.T
    with mode, pytest.raises(RuntimeError, match="no batch-invariant kernel"):
        torch.softmax(x, -1)
    with mode, pytest.raises(NotImplementedError, match="one dimension"):
        x.sum()


@cases
def test_the_mode_leaves_tensors_on_other_devices_alone(kernels):
    from tts_engine.model.batch_invariant import BatchInvariantMode

    x, w = rand(3, 8), rand(5, 8, seed=1)
    with BatchInvariantMode("cuda"):  # CPU tensors: plain torch, no kernel, no refusal
        assert torch.equal(F.linear(x, w), F.linear(x, w))
        _ = x @ w.T
