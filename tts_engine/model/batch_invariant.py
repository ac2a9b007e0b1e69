"""Batch-invariant numerics: inside `BatchInvariantMode`, every torch function whose sums
depend on the batch runs on a kernel of model/invariant_kernels.py instead.

    with BatchInvariantMode():
        talker.step(...)      # a row's results equal its solo run's, bit for bit

The mode intercepts torch functions (a TorchFunctionMode: this thread, this block
only), so the models keep their plain torch code and the default mode is untouched:

    F.linear                  the GEMM, one tile configuration per weight shape
    F.conv1d                  the GEMM over an implicit im2col (groups 1), or per tap
                              in elementwise order (depthwise); stride 1, no padding
    F.scaled_dot_product_attention   the attention kernel (bool mask, causal or none)
    mean, sum over one dim    row_sum (the means of RMSNorm; the frame's embedding sum)
    F.layer_norm              mean and variance by row_sum, the rest elementwise

Elementwise ops, gathers, copies, argmax and topk are exact whatever the batch and
run as they are. A reduction the mode does not cover (matmul, softmax, cumsum, ...)
raises instead of silently depending on the batch. Float32 operands use TF32 where
torch's own flag for the op allows it (`float32_numerics` sets them for the codec
decoder), as cuBLAS and cuDNN would. Tensors on other devices than `device_type`
(the host-side bookkeeping) pass through untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from . import invariant_kernels as kernels

# batch-dependent reductions no handler covers: refused rather than run
_REFUSED = {
    torch.matmul, Tensor.matmul, Tensor.__matmul__, Tensor.__rmatmul__, torch.mm, Tensor.mm,
    torch.bmm, Tensor.bmm, torch.addmm, torch.baddbmm, torch.einsum, F.bilinear, F.softmax,
    torch.softmax, Tensor.softmax, F.log_softmax, torch.log_softmax, Tensor.log_softmax,
    torch.cumsum, Tensor.cumsum, torch.var, Tensor.var, torch.std, Tensor.std, torch.norm,
    Tensor.norm, torch.logsumexp, Tensor.logsumexp, F.conv2d, F.conv3d, F.group_norm, F.batch_norm,
    F.rms_norm, F.normalize, F.conv_transpose1d,  # the decoder's is a GEMM (codec_decoder.py)
}


def _matmul_tf32() -> bool:
    return torch.backends.cuda.matmul.allow_tf32


def _conv_tf32() -> bool:
    return torch.backends.cudnn.allow_tf32


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return kernels.linear(x, weight, bias, tf32=_matmul_tf32())


def _conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
            groups: int = 1) -> Tensor:
    stride, padding, dilation = _single(stride), _single(padding), _single(dilation)
    if stride != 1 or padding != 0 or x.dim() != 3:
        raise NotImplementedError("batch-invariant conv1d: stride 1 and no padding on [B, C, L] "
                                  f"input only (got stride {stride}, padding {padding}, input "
                                  f"{tuple(x.shape)})")
    c_in, taps = x.shape[1], weight.shape[2]
    if groups == 1:
        return kernels.conv1d(x, weight, bias, dilation, tf32=_conv_tf32())
    if groups == c_in == weight.shape[0]:  # depthwise: taps summed in order, one rounding each
        length = x.shape[2] - (taps - 1) * dilation
        out = x[..., :length] * weight[:, 0, 0, None]
        for j in range(1, taps):
            out = out + x[..., j * dilation : j * dilation + length] * weight[:, 0, j, None]
        return out if bias is None else out + bias[:, None]
    raise NotImplementedError("batch-invariant conv1d: groups 1 or depthwise only (got groups "
                              f"{groups})")


def _attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
               enable_gqa: bool = False) -> Tensor:
    if dropout_p or scale is not None or (attn_mask is not None
                                          and (attn_mask.dtype != torch.bool or is_causal)):
        raise NotImplementedError("batch-invariant attention: a bool mask or is_causal, "
                                  "the default scale and no dropout only")
    if query.shape[1] != key.shape[1] and not enable_gqa:
        raise ValueError(f"attention with {query.shape[1]} query and {key.shape[1]} key heads "
                         "needs enable_gqa")
    if is_causal and query.shape[2] != key.shape[2]:
        raise NotImplementedError("batch-invariant attention: "
                                  "is_causal with as many queries as keys only")
    tf32 = _matmul_tf32()
    return kernels.attention(query, key, value, attn_mask, is_causal, tf32=tf32)


def _reduce(x: Tensor, dim, keepdim: bool, mean: bool, dtype: torch.dtype | None) -> Tensor:
    if dtype is not None and dtype != x.dtype:
        x = x.to(dtype)
    if isinstance(dim, (tuple, list)):
        if len(dim) != 1:
            raise NotImplementedError(f"batch-invariant {'mean' if mean else 'sum'}: "
                                      f"one dimension only, got {dim}")
        dim = dim[0]
    if dim is None:
        raise NotImplementedError(f"batch-invariant {'mean' if mean else 'sum'}: "
                                  "over one dimension only")
    dim = dim % x.dim()
    out = kernels.row_sum(x.movedim(dim, -1))
    if mean:
        out = out / x.shape[dim]
    return out.unsqueeze(dim) if keepdim else out


def _sum(x: Tensor, dim=None, keepdim: bool = False, *, dtype: torch.dtype | None = None) -> Tensor:
    if not x.is_floating_point() and dtype is None:
        # integer sums are exact
        return torch.sum(x, dim, keepdim) if dim is not None else torch.sum(x)
    return _reduce(x, dim, keepdim, mean=False, dtype=dtype)


def _mean(x: Tensor, dim=None, keepdim: bool = False, *,
          dtype: torch.dtype | None = None) -> Tensor:
    return _reduce(x, dim, keepdim, mean=True, dtype=dtype)


def _layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None,
                bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    if len(normalized_shape) != 1:
        raise NotImplementedError("batch-invariant layer_norm: over the last dimension only")
    x32 = x.float()
    centred = x32 - _mean(x32, -1, keepdim=True)
    out = centred * torch.rsqrt(_mean(centred * centred, -1, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out.to(x.dtype)


def _single(value) -> int:
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise NotImplementedError(f"batch-invariant conv: 1-d parameters only, got {value}")
        return int(value[0])
    return int(value)


_HANDLERS = {
    F.linear: _linear, F.conv1d: _conv1d,
    F.scaled_dot_product_attention: _attention, F.layer_norm: _layer_norm,
    torch.sum: _sum, Tensor.sum: _sum, torch.mean: _mean, Tensor.mean: _mean,
}


class BatchInvariantMode(TorchFunctionMode):
    """Route batch-dependent torch functions on `device_type` tensors to batch-invariant
    kernels; refuse the ones no kernel covers. The tests use device_type="cpu" with the
    Triton interpreter."""

    def __init__(self, device_type: str = "cuda") -> None:
        super().__init__()
        self.device_type = device_type

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
        if first is None or first.device.type != self.device_type:
            return func(*args, **kwargs)
        handler = _HANDLERS.get(func)
        if handler is not None:
            return handler(*args, **kwargs)
        if func in _REFUSED:
            raise RuntimeError(f"{getattr(func, '__name__', func)} has no batch-invariant kernel "
                               "(tts_engine/model/batch_invariant.py): "
                               "its sums would depend on the batch")
        return func(*args, **kwargs)
