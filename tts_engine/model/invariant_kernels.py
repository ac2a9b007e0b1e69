"""Triton kernels whose per-row results do not depend on the batch (TTS_BATCH_INVARIANT=1 on a GPU).

cuBLAS, cuDNN, torch's reductions and SDPA pick their kernels, tiles and splits by
the whole tensor's shape, so a row's sums are added in an order that changes with
the number of rows beside it: in bf16 that changes the codes. Each kernel here
fixes the order of every sum by what one row sees alone:

    gemm         out[m, n] = sum_k a(m, k) * w(n, k) (+ bias): one tile configuration per
                 (N, K, dtype), whatever M; no split-K (each output sums its K in one
                 program, in K order). a(m, k) is a plain row-major matrix (linear layers)
                 or a causal conv's implicit im2col (m = batch x time, k = channel x tap).
    row_sum      one program per row, fixed chunks: the mean of RMSNorm and LayerNorm,
                 and sums over a dimension.
    attention    one program per (row, head, block of 16 queries); keys in blocks of
                 64 from key 0, blocks no query of the program sees are skipped, so a
                 row's result depends on its own visible keys only, not on how many
                 masked positions its batch's span adds.

M (rows), the key count and the row count are never specialised on: one compiled
kernel serves every batch. Loops over runtime bounds are `while` loops (the Triton
interpreter, used by the tests on a CPU, runs those; its `range` over a runtime
bound fails with NumPy 2.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# queries per program: tl.dot's smallest tile, so one decode query wastes least
ATTENTION_BLOCK_M = 16
ATTENTION_BLOCK_N = 64  # keys per block: fixes where each block of a row's keys starts


@dataclass(frozen=True)
class GemmConfig:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


def _pow2_between(n: int, low: int, high: int) -> int:
    return max(low, min(high, triton.next_power_of_2(n)))


def gemm_config(n: int, k: int, dtype: torch.dtype) -> GemmConfig:
    """The one tile configuration of a weight of shape (N, K): a function of N, K and
    the dtype only, never of M (16 is tl.dot's smallest tile side)."""
    if dtype == torch.float32:  # the codec decoder: many rows (streams x time steps), wide tiles
        return GemmConfig(block_m=64, block_n=_pow2_between(n, 16, 64),
                          block_k=_pow2_between(k, 16, 32), num_warps=4, num_stages=3)
    # the talker and predictor: a decode step's few rows read each weight once, so narrow
    # tiles spread that read over more programs (64 or more for N >= 1024)
    narrow = 1 << (max(n // 64, 1).bit_length() - 1)
    return GemmConfig(block_m=64, block_n=_pow2_between(narrow, 16, 64),
                      block_k=_pow2_between(k, 16, 64), num_warps=4, num_stages=4)


def dot_precision(dtype: torch.dtype, tf32: bool) -> str:
    """tl.dot's input precision: float32 operands in TF32 only where torch's flag allows it."""
    return "tf32" if tf32 or dtype != torch.float32 else "ieee"


@triton.jit(do_not_specialize=["M", "L"])
def _gemm_kernel(x, w, bias, out, M, L,
                 s_xb, s_xc, s_xl, s_wn, s_wk, s_ob, s_on, s_ol,
                 N: tl.constexpr, K: tl.constexpr, TAPS: tl.constexpr, DILATION: tl.constexpr,
                 HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # Row m is (b, t) = divmod(m, L); column k is (c, j) = divmod(k, TAPS); a(m, k) =
    # x[b, c, t + j * DILATION]. A linear layer is L = 1, TAPS = 1.
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    b, t = rm // L, rm % L
    row_ok = rm < M
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        c, j = rk // TAPS, rk % TAPS
        a_ptr = (x + b[:, None] * s_xb + c[None, :] * s_xc
                 + (t[:, None] + j[None, :] * DILATION) * s_xl)
        a_tile = tl.load(a_ptr, mask=row_ok[:, None] & (rk[None, :] < K), other=0.0)
        w_tile = tl.load(w + rk[:, None] * s_wk + rn[None, :] * s_wn,
                         mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a_tile, w_tile, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    o_ptr = out + b[:, None] * s_ob + rn[None, :] * s_on + t[:, None] * s_ol
    tl.store(o_ptr, acc.to(out.dtype.element_ty), mask=row_ok[:, None] & (rn[None, :] < N))


def gemm(x: torch.Tensor, x_strides: tuple[int, int, int], w: torch.Tensor,
         w_strides: tuple[int, int], bias: torch.Tensor | None, out: torch.Tensor,
         out_strides: tuple[int, int, int], m: int, length: int, n: int, k: int, taps: int = 1,
         dilation: int = 1, tf32: bool = False) -> torch.Tensor:
    """out(m, n) = sum_k a(m, k) w(n, k) + bias(n), M = m rows: see _gemm_kernel for the
    addressing; strides in elements, (b, c, l) for x and out, (n, k) for w."""
    cfg = gemm_config(n, k, x.dtype)
    grid = (triton.cdiv(m, cfg.block_m), triton.cdiv(n, cfg.block_n))
    _gemm_kernel[grid](x, w, bias if bias is not None else w, out, m, length, *x_strides,
                       *w_strides, *out_strides, N=n, K=k, TAPS=taps, DILATION=dilation,
                       HAS_BIAS=bias is not None, PRECISION=dot_precision(x.dtype, tf32),
                       BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                       num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           tf32: bool = False) -> torch.Tensor:
    """x [..., K] @ weight[N, K].T + bias: rows of x are independent of each other."""
    k = x.shape[-1]
    n = weight.shape[0]
    rows = x.reshape(-1, k)
    m = rows.shape[0]
    out = torch.empty(m, n, device=x.device, dtype=x.dtype)
    if m:
        gemm(rows, (rows.stride(0), rows.stride(1), 0), weight,
             (weight.stride(0), weight.stride(1)), bias, out, (out.stride(0), out.stride(1), 0),
             m, 1, n, k, tf32=tf32)
    return out.view(*x.shape[:-1], n)


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int,
           tf32: bool = False) -> torch.Tensor:
    """A valid (unpadded) stride-1 conv: x [B, C_in, L_in], weight [C_out, C_in, taps]
    -> [B, C_out, L_in - (taps - 1) * dilation], as an implicit-im2col GEMM."""
    batch, c_in, length_in = x.shape
    c_out, _, taps = weight.shape
    length = length_in - (taps - 1) * dilation
    out = torch.empty(batch, c_out, length, device=x.device, dtype=x.dtype)
    if batch and length > 0:
        w = weight.reshape(c_out, c_in * taps)  # (c, j) -> c * taps + j, as the kernel's k
        gemm(x, (x.stride(0), x.stride(1), x.stride(2)), w, (w.stride(0), w.stride(1)), bias,
             out, (out.stride(0), out.stride(1), out.stride(2)), batch * length, length, c_out,
             c_in * taps, taps=taps, dilation=dilation, tf32=tf32)
    return out


@triton.jit(do_not_specialize=["rows"])
def _row_sum_kernel(x, out, rows, N: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, N, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        acc += tl.load(x + row * N + cols, mask=cols < N, other=0.0).to(tl.float32)
    tl.store(out + row, tl.sum(acc, axis=0).to(out.dtype.element_ty))


def row_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension, float32 accumulation, one program per row: [..., N] -> [...]."""
    n = x.shape[-1]
    rows = x.reshape(-1, n).contiguous()
    out = torch.empty(rows.shape[0], device=x.device, dtype=x.dtype)
    if rows.shape[0]:
        _row_sum_kernel[(rows.shape[0],)](rows, out, rows.shape[0], N=n,
                                          BLOCK=_pow2_between(n, 16, 1024), num_warps=4)
    return out.view(x.shape[:-1])


MASK_NONE, MASK_CAUSAL, MASK_TENSOR = 0, 1, 2


@triton.jit(do_not_specialize=["S", "T"])
def _attention_kernel(q, k, v, mask, out, S, T, scale,
                      s_qb, s_qh, s_qs, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt,
                      s_mb, s_mh, s_ms, s_mt, s_ob, s_oh, s_os,
                      H: tl.constexpr, GROUPS: tl.constexpr, D: tl.constexpr,
                      MASK_MODE: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr):
    bh = tl.program_id(0)
    b, h = bh // H, bh % H
    hk = h // GROUPS  # the key/value head of query head h (grouped-query attention)
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, D)
    q_ok = rm < S
    q_tile = tl.load(q + b * s_qb + h * s_qh + rm[:, None] * s_qs + rd[None, :], mask=q_ok[:, None],
                     other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, D), dtype=tl.float32)
    end = T
    if MASK_MODE == 1:  # causal: query i sees keys 0..i; no later block is needed
        end = tl.minimum(T, (tl.program_id(1) + 1) * BLOCK_M)
    start = 0
    while start < end:
        rt = start + tl.arange(0, BLOCK_N)
        visible = q_ok[:, None] & (rt[None, :] < T)
        if MASK_MODE == 1:
            visible = visible & (rt[None, :] <= rm[:, None])
        if MASK_MODE == 2:
            m_ptr = mask + b * s_mb + h * s_mh + rm[:, None] * s_ms + rt[None, :] * s_mt
            visible = visible & (tl.load(m_ptr, mask=visible, other=0) != 0)
        row_sees = tl.max(visible.to(tl.int32), axis=1) > 0
        if tl.max(row_sees.to(tl.int32), axis=0) > 0:  # a block no query sees is skipped
            k_tile = tl.load(k + b * s_kb + hk * s_kh + rt[:, None] * s_kt + rd[None, :],
                             mask=(rt < T)[:, None], other=0.0)
            v_tile = tl.load(v + b * s_vb + hk * s_vh + rt[:, None] * s_vt + rd[None, :],
                             mask=(rt < T)[:, None], other=0.0)
            s = tl.dot(q_tile, tl.trans(k_tile), input_precision=PRECISION) * scale
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_use = tl.where(row_sees, m_new, 0.0)  # a row that sees nothing here keeps its state
            alpha = tl.exp(m_i - m_use)
            p = tl.exp(s - m_use[:, None])
            pv = tl.dot(p.to(v_tile.dtype), v_tile, input_precision=PRECISION)
            acc = tl.where(row_sees[:, None], acc * alpha[:, None] + pv, acc)
            l_i = tl.where(row_sees, l_i * alpha + tl.sum(p, axis=1), l_i)
            m_i = tl.where(row_sees, m_new, m_i)
        start += BLOCK_N
    o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out + b * s_ob + h * s_oh + rm[:, None] * s_os + rd[None, :],
             o.to(out.dtype.element_ty), mask=q_ok[:, None])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              causal: bool, tf32: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) where visible) v: q [B, H, S, D], k and v [B, Hkv, T, D] (H a
    multiple of Hkv), mask bool broadcastable to [B, H, S, T] (True = visible) or causal
    (query i sees keys 0..i) or neither (all keys) -> [B, H, S, D]. A query that sees no
    key gets zeros."""
    batch, heads, queries, dim = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    if heads % kv_heads or v.shape[1] != kv_heads or v.shape[2] != keys \
            or dim not in (k.shape[3], v.shape[3]) or k.shape[3] != v.shape[3]:
        raise ValueError(f"attention: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} do not fit")
    if dim & (dim - 1) or dim < 16:
        raise ValueError(f"attention: head_dim {dim} must be a power of two >= 16 (tl.dot's "
                         "smallest tile)")
    if q.stride(3) != 1 or k.stride(3) != 1 or v.stride(3) != 1:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty(batch, heads, queries, dim, device=q.device, dtype=q.dtype)
    if mask is not None:
        mode = MASK_TENSOR
        mask = mask.expand(batch, heads, queries, keys)
        mask_strides = mask.stride()
    else:
        mode = MASK_CAUSAL if causal else MASK_NONE
        mask, mask_strides = q, (0, 0, 0, 0)  # unused
    grid = (batch * heads, triton.cdiv(queries, ATTENTION_BLOCK_M))
    if batch and queries:
        _attention_kernel[grid](q, k, v, mask, out, queries, keys, 1.0 / math.sqrt(dim),
                                q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
                                k.stride(2), v.stride(0), v.stride(1), v.stride(2), *mask_strides,
                                out.stride(0), out.stride(1), out.stride(2),
                                H=heads, GROUPS=heads // kv_heads, D=dim, MASK_MODE=mode,
                                PRECISION=dot_precision(q.dtype, tf32), BLOCK_M=ATTENTION_BLOCK_M,
                                BLOCK_N=ATTENTION_BLOCK_N, num_warps=4)
    return out
