"""The Qwen3-TTS 12 Hz speech-tokenizer decoder ("codec decoder"): codes -> 24 kHz PCM.

One frame = 16 codes (1 semantic + 15 acoustic codebooks of 2048 entries) = 80 ms
= 1920 samples. Everything in the network is causal: the samples of frame t depend
only on frames <= t. `CodecDecoder.forward` is one full causal decode of all codes
(no chunking): the project's "offline decode" reference. The exact incremental
decoder in `tts_engine.codec_stream` runs the same modules with carried state.

Module and parameter names mirror the official checkpoint: our state-dict keys are
the official `speech_tokenizer/model.safetensors` keys with the `decoder.` prefix
removed, nothing renamed. Shapes in comments use B = batch, T = frames,
L = time steps at the current rate, C = channels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CodecCheckpointError
from .layers import RMSNorm, apply_rope

MODEL_TYPE = "qwen3_tts_tokenizer_12hz"
REQUIRED_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
DECODER_PREFIX = "decoder."
ENCODER_PREFIX = "encoder."  # the Mimi encoder, used only for voice cloning: ignored here


@dataclass(frozen=True)
class CodecDecoderConfig:
    """`decoder_config` of `speech_tokenizer/config.json`. Defaults are the released
    Qwen3-TTS-Tokenizer-12Hz values (the official code's own defaults differ)."""

    codebook_size: int = 2048
    codebook_dim: int = 512  # the RVQ vectors are codebook_dim // 2 wide
    num_quantizers: int = 16
    latent_dim: int = 1024
    hidden_size: int = 512
    intermediate_size: int = 1024
    num_hidden_layers: int = 8
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int = 64
    sliding_window: int = 72
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    layer_scale_initial_scale: float = 0.01
    max_position_embeddings: int = 8000
    attention_bias: bool = False
    attention_dropout: float = 0.0
    hidden_act: str = "silu"
    upsampling_ratios: tuple[int, ...] = (2, 2)
    upsample_rates: tuple[int, ...] = (8, 5, 4, 3)
    decoder_dim: int = 1536
    # Present in the released config but not read by the official decoder; kept so
    # that written configs carry them.
    num_semantic_quantizers: int = 1
    semantic_codebook_size: int = 4096
    vector_quantization_hidden_dimension: int = 512
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "upsampling_ratios", tuple(self.upsampling_ratios))
        object.__setattr__(self, "upsample_rates", tuple(self.upsample_rates))
        problems = []
        if self.hidden_act != "silu":
            problems.append(f"hidden_act={self.hidden_act!r} (only 'silu' is implemented)")
        if self.num_quantizers < 2:
            problems.append(f"num_quantizers={self.num_quantizers} "
                            "(needs 1 semantic + >=1 acoustic)")
        if self.codebook_dim % 2:
            problems.append(f"codebook_dim={self.codebook_dim} must be even")
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.decoder_dim % 2 ** len(self.upsample_rates):
            problems.append(
                f"decoder_dim={self.decoder_dim} is not divisible by 2**{len(self.upsample_rates)}"
            )
        if self.sliding_window < 1:
            problems.append(f"sliding_window={self.sliding_window} must be >= 1")
        if problems:
            raise ValueError("invalid codec decoder config: " + "; ".join(problems))

    @property
    def total_upsample(self) -> int:
        """PCM samples per code frame (1920 for the released model)."""
        return math.prod(self.upsampling_ratios) * math.prod(self.upsample_rates)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CodecDecoderConfig:
        """Build from a `decoder_config` dict. Keys we do not model go to `extra`.
        A missing head_dim means hidden_size // num_attention_heads, as officially."""
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "head_dim" not in kwargs or kwargs["head_dim"] is None:
            hidden = kwargs.get("hidden_size", cls.hidden_size)
            heads = kwargs.get("num_attention_heads", cls.num_attention_heads)
            kwargs["head_dim"] = hidden // heads
        return cls(**kwargs, extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The `decoder_config` dict as written in `speech_tokenizer/config.json`."""
        d = asdict(self)
        extra = d.pop("extra")
        d["upsampling_ratios"] = list(self.upsampling_ratios)
        d["upsample_rates"] = list(self.upsample_rates)
        return {**extra, **d}


# ----------------------------------------------------------------------------------
# Convolutions. Each conv module offers the plain offline `forward` plus the pieces the
# incremental decoder needs (`context`, `conv_valid`, `overlap`), so both paths share
# the same weights and arithmetic.


class CausalConv1d(nn.Module):
    """Stride-1 causal conv: left-pad by (k-1)*d zeros, no right pad. key: `conv`."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, dilation: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation, groups=groups)
        self.context = (kernel_size - 1) * dilation  # input columns of history needed

    def conv_valid(self, x: Tensor) -> Tensor:
        """[B, C_in, context + L] -> [B, C_out, L] (no padding)."""
        return self.conv(x)

    def forward(self, x: Tensor) -> Tensor:  # [B, C_in, L] -> [B, C_out, L]
        return self.conv_valid(F.pad(x, (self.context, 0)))


def transposed_conv1d(x: Tensor, weight: Tensor, stride: int) -> Tensor:
    """`F.conv_transpose1d(x, weight, stride=stride)` for stride <= taps <= 2 * stride, as
    one GEMM and an overlap-add: the GEMM gives every input step's taps, and output block t
    is step t's first `stride` taps plus step t-1's last `taps - stride`. cuDNN's
    deterministic algorithm for a transposed conv is slow in a batch (4.4 ms per packet at
    64 rows on an H100; docs/PERFORMANCE.md, optimisation log); a GEMM is deterministic
    as it is, and in batch-invariant mode it runs on the invariant linear kernel.
    x [B, C_in, L], weight [C_in, C_out, taps] -> [B, C_out, L * stride + taps - stride]."""
    batch, c_in, length = x.shape
    c_out, taps = weight.shape[1], weight.shape[2]
    overlap = taps - stride
    steps = F.linear(x.transpose(1, 2), weight.reshape(c_in, c_out * taps).t())
    steps = steps.view(batch, length, c_out, taps).permute(0, 2, 1, 3)  # [B, C_out, L, taps]
    blocks = x.new_zeros(batch, c_out, length + 1, stride)
    blocks[:, :, :length] = steps[..., :stride]
    if overlap:
        blocks[:, :, 1:, :overlap] += steps[..., stride:]
    return blocks.view(batch, c_out, (length + 1) * stride)[..., : length * stride + overlap]


class CausalTransConv1d(nn.Module):
    """Transposed conv (kernel k, stride s) trimmed by k - s samples on the right, so L
    input steps give exactly L*s outputs. Output block t depends on inputs t and t-1
    (k <= 2s). key: `conv`."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        if not stride <= kernel_size <= 2 * stride:
            raise ValueError(f"need stride <= kernel_size <= 2*stride, got k={kernel_size} "
                             f"s={stride}")
        self.conv = nn.ConvTranspose1d(c_in, c_out, kernel_size, stride=stride)
        self.stride = stride
        self.overlap = kernel_size - stride  # samples one input step spills into the next block

    def forward(self, x: Tensor) -> Tensor:  # [B, C_in, L] -> [B, C_out, L*s]
        y = transposed_conv1d(x, self.conv.weight, self.stride)  # [B, C_out, L*s + overlap]
        return y[..., : y.shape[-1] - self.overlap] + self.conv.bias[None, :, None]


def snake_beta(x: Tensor, log_alpha: Tensor, log_beta: Tensor) -> Tensor:
    """x [B, C, L] + sin^2(x * e^alpha) / e^beta, alpha and beta [C] per channel."""
    alpha = torch.exp(log_alpha)[None, :, None]
    beta = torch.exp(log_beta)[None, :, None]
    return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class SnakeBeta(nn.Module):
    """`snake_beta` with this layer's alpha and beta (stored as logs). `activation` is the
    function that computes it: with compile on, runtime/compiled.py puts there one compiled
    code for batches of one row (eager, its eight elementwise kernels each read and write
    the whole signal) and the eager function for larger batches."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.activation = snake_beta

    def forward(self, x: Tensor) -> Tensor:  # [B, C, L]
        return self.activation(x, self.alpha, self.beta)


class ConvNeXtBlock(nn.Module):
    """Depthwise causal conv (k=7) then a pointwise MLP on the residual branch."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, kernel_size=7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def pointwise(self, h: Tensor) -> Tensor:
        """The time-local part after dwconv: [B, C, L] -> [B, C, L]."""
        h = h.transpose(1, 2)  # [B, L, C]
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return (self.gamma * h).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, L]
        return x + self.pointwise(self.dwconv(x))


class ResidualUnit(nn.Module):
    """x + conv1x1(snake(causal_conv_k7_dilated(snake(x))))."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv1d(dim, dim, kernel_size=7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv1d(dim, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, L]
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))


class DecoderBlock(nn.Module):
    """SnakeBeta, transposed conv (k=2r, s=r, C -> C/2), residual units at dilations 1, 3, 9.
    Kept as one ModuleList named `block` so keys match the checkpoint."""

    def __init__(self, c_in: int, c_out: int, rate: int) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            [SnakeBeta(c_in), CausalTransConv1d(c_in, c_out, 2 * rate, rate)]
            + [ResidualUnit(c_out, d) for d in (1, 3, 9)]
        )

    @property
    def snake(self) -> SnakeBeta:
        return self.block[0]

    @property
    def upsample(self) -> CausalTransConv1d:
        return self.block[1]

    @property
    def residual_units(self) -> list[ResidualUnit]:
        return list(self.block[2:])

    def forward(self, x: Tensor) -> Tensor:  # [B, C_in, L] -> [B, C_out, L*r]
        for layer in self.block:
            x = layer(x)
        return x


# ----------------------------------------------------------------------------------
# Split residual vector quantizer (decode only).


class Codebook(nn.Module):
    """Entry i = embedding_sum[i] / max(cluster_usage[i], eps) (EMA codebook storage)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.cluster_usage = nn.Parameter(torch.ones(size))
        self.embedding_sum = nn.Parameter(torch.zeros(size, dim))

    def decode(self, codes: Tensor) -> Tensor:  # [B, T] -> [B, T, dim]
        # Gather first, then divide: the same per-element division as normalising the
        # whole table, at T rows instead of 2048.
        usage = self.cluster_usage.clamp(min=1e-5)
        return F.embedding(codes, self.embedding_sum) / F.embedding(codes, usage[:, None])


class _CodebookLayer(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self._codebook = Codebook(size, dim)


class _CodebookStack(nn.Module):
    def __init__(self, n: int, size: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_CodebookLayer(size, dim) for _ in range(n)])


class ResidualVQ(nn.Module):
    """Sum of n codebook lookups, projected dim -> out_dim by a bias-free 1x1 conv.
    `input_proj` belongs to the encoder side; it is kept only because the checkpoint has it."""

    def __init__(self, n: int, size: int, dim: int, out_dim: int) -> None:
        super().__init__()
        self.input_proj = nn.Conv1d(out_dim, dim, 1, bias=False)
        self.output_proj = nn.Conv1d(dim, out_dim, 1, bias=False)
        self.vq = _CodebookStack(n, size, dim)

    def decode(self, codes: Tensor) -> Tensor:  # [B, n, T] -> [B, out_dim, T]
        summed = self.vq.layers[0]._codebook.decode(codes[:, 0])
        for i in range(1, codes.shape[1]):
            summed = summed + self.vq.layers[i]._codebook.decode(codes[:, i])
        return self.output_proj(summed.transpose(1, 2))


class SplitResidualVQ(nn.Module):
    """Codebook 0 (semantic) and codebooks 1..15 (acoustic) have separate projections."""

    def __init__(self, cfg: CodecDecoderConfig) -> None:
        super().__init__()
        dim = cfg.codebook_dim // 2
        self.rvq_first = ResidualVQ(1, cfg.codebook_size, dim, cfg.codebook_dim)
        self.rvq_rest = ResidualVQ(cfg.num_quantizers - 1, cfg.codebook_size, dim, cfg.codebook_dim)

    def decode(self, codes: Tensor) -> Tensor:  # [B, 16, T] -> [B, codebook_dim, T]
        return self.rvq_first.decode(codes[:, :1]) + self.rvq_rest.decode(codes[:, 1:])


# ----------------------------------------------------------------------------------
# pre_transformer: sliding-window causal attention over frames, RoPE, RMSNorm, LayerScale.


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * x


class RotaryEmbedding:
    """Plain RoPE over absolute frame positions (half-split rotation). Not a module:
    inv_freq is derived from the config, computed once on CPU in float32 and cached
    per device."""

    def __init__(self, head_dim: int, theta: float) -> None:
        # device="cpu" explicitly: models are built under torch.device("meta") when loading.
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
        self._inv_freq_cpu = 1.0 / (theta**exponents)  # [D/2]
        self._cache: dict[torch.device, Tensor] = {}

    def cos_sin(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """positions LongTensor[B, T] -> cos, sin [B, T, D] in `dtype`."""
        inv_freq = self._cache.get(positions.device)
        if inv_freq is None:
            inv_freq = self._cache[positions.device] = self._inv_freq_cpu.to(positions.device)
        freqs = positions.float()[..., None] * inv_freq  # [B, T, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def sliding_window_mask(q_pos: Tensor, k_pos: Tensor, window: int) -> Tensor:
    """Which keys each query may attend to: causal, the last `window` frames including
    itself, and never a position < 0 (empty cache slots). q_pos [B, Tq], k_pos [B, Tk]
    -> bool [B, 1, Tq, Tk]."""
    q = q_pos[:, :, None]
    k = k_pos[:, None, :]
    return ((k <= q) & (k > q - window) & (k >= 0))[:, None]


class Attention(nn.Module):
    def __init__(self, cfg: CodecDecoderConfig) -> None:
        super().__init__()
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=bias)

    def forward(
        self,
        x: Tensor,  # [B, T, hidden]
        cos: Tensor,
        sin: Tensor,  # [B, T, D]
        mask: Tensor,  # bool [B, 1, T, P + T]
        past: tuple[Tensor, Tensor] | None = None,  # post-RoPE k, v [B, H_kv, P, D]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (out [B, T, hidden], k, v [B, H_kv, P + T, D]): the keys/values of the
        past followed by this call's, so a caller can keep a cache."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        out = F.scaled_dot_product_attention(
            q, self._expand_kv(k), self._expand_kv(v), attn_mask=mask
        )  # [B, H, T, D]
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return self.o_proj(out), k, v

    def _expand_kv(self, x: Tensor) -> Tensor:
        """[B, H_kv, S, D] -> [B, H, S, D], each KV head shared by n_heads // n_kv query
        heads (as repeat_interleave, but by expand + reshape: no host sync on CUDA)."""
        groups = self.n_heads // self.n_kv
        if groups == 1:
            return x
        b, h_kv, s, d = x.shape
        return x[:, :, None].expand(b, h_kv, groups, s, d).reshape(b, h_kv * groups, s, d)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TransformerLayer(nn.Module):
    def __init__(self, cfg: CodecDecoderConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.self_attn_layer_scale = LayerScale(cfg.hidden_size, cfg.layer_scale_initial_scale)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        self.mlp_layer_scale = LayerScale(cfg.hidden_size, cfg.layer_scale_initial_scale)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:  # x [B, T, hidden] -> (x, k, v) as in Attention
        h, k, v = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + self.self_attn_layer_scale(h)
        x = x + self.mlp_layer_scale(self.mlp(self.post_attention_layernorm(x)))
        return x, k, v


class PreTransformer(nn.Module):
    """input_proj (latent -> hidden), sliding-window layers, RMSNorm, output_proj."""

    def __init__(self, cfg: CodecDecoderConfig) -> None:
        super().__init__()
        self.window = cfg.sliding_window
        self.input_proj = nn.Linear(cfg.latent_dim, cfg.hidden_size)
        self.layers = nn.ModuleList([TransformerLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.output_proj = nn.Linear(cfg.hidden_size, cfg.latent_dim)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)

    def forward(self, x: Tensor) -> Tensor:  # [B, T, latent] -> [B, T, latent], frames 0..T-1
        b, t, _ = x.shape
        pos = torch.arange(t, device=x.device).expand(b, t)  # [B, T]
        mask = sliding_window_mask(pos, pos, self.window)  # [B, 1, T, T]
        cos, sin = self.rope.cos_sin(pos, x.dtype)
        h = self.input_proj(x)
        for layer in self.layers:
            h, _, _ = layer(h, cos, sin, mask)
        return self.output_proj(self.norm(h))


# ----------------------------------------------------------------------------------


@contextmanager
def float32_numerics(tf32: bool = False) -> Iterator[None]:
    """The decoder's numerics inside the block: TF32 off (unless `tf32`, the decoder's
    opt-in for speed) for cuDNN convolutions and cuBLAS matmuls (cuDNN convs default to
    TF32, whose 10-bit mantissa is close to bf16's 8, and bf16 is only 33 dB from
    float32), and deterministic cuDNN algorithms (some convolution algorithms add with
    atomics), so equal codes give equal PCM, eager or
    graphed, run after run. The three flags are process-wide: set on entry, restored
    on exit. They are read on the host when a kernel is chosen, so they matter for
    eager calls and for CUDA graph *capture*; a replay runs the captured kernels
    whatever the flags say then. Legacy flags, as the rest of the project uses (mixing
    them with torch's `fp32_precision` API makes torch raise). No effect on CPU."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic
    cudnn.allow_tf32 = matmul.allow_tf32 = tf32
    cudnn.deterministic = True
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic = saved


class CodecDecoder(nn.Module):
    """codes LongTensor[B, 16, T] -> PCM FloatTensor[B, T * 1920] in [-1, 1].
    A float32 model runs in true float32 (TF32 off, `float32_numerics`)."""

    def __init__(self, cfg: CodecDecoderConfig, sample_rate: int = 24000) -> None:
        super().__init__()
        self.config = cfg
        self.sample_rate = sample_rate
        self.quantizer = SplitResidualVQ(cfg)
        self.pre_conv = CausalConv1d(cfg.codebook_dim, cfg.latent_dim, kernel_size=3)
        self.pre_transformer = PreTransformer(cfg)
        self.upsample = nn.ModuleList(
            nn.ModuleList([CausalTransConv1d(cfg.latent_dim, cfg.latent_dim, r, r),
                           ConvNeXtBlock(cfg.latent_dim)])
            for r in cfg.upsampling_ratios
        )
        dims = [cfg.decoder_dim // 2**i for i in range(len(cfg.upsample_rates) + 1)]
        self.decoder = nn.ModuleList(
            [CausalConv1d(cfg.latent_dim, dims[0], kernel_size=7)]
            + [DecoderBlock(dims[i], dims[i + 1], r) for i, r in enumerate(cfg.upsample_rates)]
            + [SnakeBeta(dims[-1]), CausalConv1d(dims[-1], 1, kernel_size=7)]
        )

    @property
    def samples_per_frame(self) -> int:
        return self.config.total_upsample

    @property
    def decoder_in_conv(self) -> CausalConv1d:
        return self.decoder[0]

    @property
    def decoder_blocks(self) -> list[DecoderBlock]:
        return list(self.decoder[1:-2])

    @property
    def final_snake(self) -> SnakeBeta:
        return self.decoder[-2]

    @property
    def final_conv(self) -> CausalConv1d:
        return self.decoder[-1]

    def check_codes(self, codes: Tensor, values: bool = True) -> None:
        """Clear errors instead of an index error (or a CUDA device-side assert).
        The range check (`values`) reads two scalars back from the device; the shape
        and dtype checks read nothing."""
        n_q, size = self.config.num_quantizers, self.config.codebook_size
        if codes.dim() != 3 or codes.shape[1] != n_q or codes.shape[2] < 1:
            raise ValueError(f"codes must be [batch, {n_q}, frames>=1], got {tuple(codes.shape)}")
        if codes.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        if not values:
            return
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= size:
            raise ValueError(f"codes must lie in [0, {size}), got values in [{lo}, {hi}]")

    def forward(self, codes: Tensor) -> Tensor:
        self.check_codes(codes)
        with float32_numerics():
            return self._decode(codes.long())

    def _decode(self, codes: Tensor) -> Tensor:
        x = self.quantizer.decode(codes)  # [B, codebook_dim, T]
        x = self.pre_conv(x)  # [B, latent, T]
        x = self.pre_transformer(x.transpose(1, 2)).transpose(1, 2)  # [B, latent, T]
        for trans_conv, convnext in self.upsample:
            x = convnext(trans_conv(x))  # [B, latent, T * 2], then * 4
        for layer in self.decoder:
            x = layer(x)  # ... -> [B, 1, T * 1920]
        return x.clamp(-1.0, 1.0).squeeze(1)


# ----------------------------------------------------------------------------------
# Loading the official directory layout.


def read_speech_tokenizer_config(speech_tokenizer_dir: str | Path) -> dict[str, Any]:
    """Validate the directory layout and model_type; return the parsed config.json."""
    d = Path(speech_tokenizer_dir)
    if not d.is_dir():
        raise CodecCheckpointError(f"speech tokenizer directory not found: {d}")
    missing = [name for name in REQUIRED_FILES if not (d / name).is_file()]
    if missing:
        raise CodecCheckpointError(
            f"{d} is not a speech tokenizer directory: missing {', '.join(missing)} "
            f"(expected {', '.join(REQUIRED_FILES)})"
        )
    try:
        config = json.loads((d / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise CodecCheckpointError(f"{d / 'config.json'} is not valid JSON: {e}") from e
    model_type = config.get("model_type")
    if model_type != MODEL_TYPE:
        hint = ""
        if (d / "speech_tokenizer").is_dir():
            hint = f"; the speech tokenizer is probably {d / 'speech_tokenizer'}"
        raise CodecCheckpointError(
            f"{d / 'config.json'} has model_type={model_type!r}, expected {MODEL_TYPE!r}{hint}"
        )
    if not isinstance(config.get("decoder_config"), dict):
        raise CodecCheckpointError(f"{d / 'config.json'} has no decoder_config object")
    return config


def load_codec_decoder(
    speech_tokenizer_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> CodecDecoder:
    """Load the decoder from an official-layout `speech_tokenizer/` directory.
    `encoder.*` tensors are ignored; any missing or unexpected `decoder.*` tensor (or a
    tensor outside both) is an error naming it."""
    from safetensors import safe_open

    d = Path(speech_tokenizer_dir)
    config = read_speech_tokenizer_config(d)
    cfg = CodecDecoderConfig.from_dict(config["decoder_config"])
    upsample = config.get("decode_upsample_rate", cfg.total_upsample)
    if upsample != cfg.total_upsample:
        raise CodecCheckpointError(
            f"{d / 'config.json'}: decode_upsample_rate={upsample} but the decoder's rates "
            f"multiply to {cfg.total_upsample}"
        )
    with torch.device("meta"):
        model = CodecDecoder(cfg, sample_rate=int(config.get("output_sample_rate", 24000)))
    expected = model.state_dict()

    state: dict[str, Tensor] = {}
    unexpected: list[str] = []
    with safe_open(str(d / "model.safetensors"), framework="pt", device="cpu") as f:
        for key in f.keys():
            if key.startswith(ENCODER_PREFIX):
                continue
            name = key[len(DECODER_PREFIX) :] if key.startswith(DECODER_PREFIX) else None
            if name is None or name not in expected:
                unexpected.append(key)
                continue
            state[name] = f.get_tensor(key)
    missing = [DECODER_PREFIX + k for k in expected if k not in state]
    wrong_shape = [
        f"{DECODER_PREFIX}{k}: file {tuple(v.shape)} vs config {tuple(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_short_list(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatches: {_short_list(wrong_shape)}")
    if problems:
        raise CodecCheckpointError(f"{d / 'model.safetensors'}: " + "; ".join(problems))

    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _short_list(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... (+{len(items) - limit} more)" if len(items) > limit else "")
