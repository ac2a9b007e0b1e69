"""Choosing codes from logits: greedy (the golden configuration) or seeded sampling.

"Greedy" follows what the official implementation does with
`do_sample=False, subtalker_dosample=False`: the talker's codebook-0 logits
still pass the processors that generation_config.json implies (repetition
penalty over the codebook-0 tokens generated so far, suppression of the
non-audio tokens 2048..3071 except EOS, EOS forbidden before
`min_new_tokens`), then argmax; the code predictor takes a plain argmax.
Sampling applies temperature, top-k and top-p after the same processors and
draws by the Gumbel-max trick with counter-based noise: the noise of a token is
a hash of (request seed, frame, codebook, token id), computed on the device.
A seeded stream's codes therefore do not depend on which other streams share
its batch, on the order of steps, or on any generator state, and a sampled
batch runs inside one CUDA graph like a greedy one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = False
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    subtalker_do_sample: bool = False
    subtalker_temperature: float = 0.9
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    min_new_tokens: int = 2

    @classmethod
    def sampled(cls) -> SamplingParams:
        """The official defaults of generation_config.json."""
        return cls(do_sample=True, subtalker_do_sample=True)


def suppressed_token_mask(vocab_size: int, eos_id: int, device: torch.device) -> torch.Tensor:
    """True for the top 1024 codec-vocabulary ids (control tokens), except EOS."""
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[vocab_size - 1024:] = True
    mask[eos_id] = False
    return mask


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor,
                             penalty: float) -> torch.Tensor:
    """logits [B, V]; history [B, n] of earlier tokens.
    Divides positive, multiplies negative scores."""
    if penalty == 1.0 or history.shape[1] == 0:
        return logits
    scores = torch.gather(logits, 1, history)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(1, history, scores)


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1:] = False  # always keep the best token
        remove = remove_sorted.scatter(1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


# splitmix64's constants as signed 64-bit integers (torch has no uint64 arithmetic)
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64
_FRAME_STRIDE = 1 << 20  # (frame, codebook, token) -> one counter; vocabularies are < 2**12
_CODEBOOK_STRIDE = 1 << 12


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser of z + golden ratio."""
    z = z + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def counter_uniform(seed: torch.Tensor, frame: torch.Tensor, codebook: int,
                    size: int) -> torch.Tensor:
    """Uniform noise in (0, 1), [B, size] float32, from (seed, frame, codebook, index).

    seed, frame: LongTensor [B]. Pure integer arithmetic on the device (wrapping
    multiplies), so CPU and CUDA, eager and graph, give the same bits.
    """
    index = torch.arange(size, device=seed.device)
    counter = frame[:, None] * _FRAME_STRIDE + codebook * _CODEBOOK_STRIDE + index[None, :]
    z = _mix(_mix(seed)[:, None] + counter)
    top24 = _shift_right(z, 40).to(torch.float32)  # 24 random bits, exact in float32
    return (top24 + 0.5) / float(1 << 24)


def seed_as_int64(seed: int) -> int:
    """Any seed of 64 bits, signed or not, as the signed 64-bit value with the same bits."""
    return (seed + 2**63) % 2**64 - 2**63


@dataclass(frozen=True)
class NoiseKey:
    """Where a sampled token's noise comes from: per row seed and frame, and the codebook."""

    seed: torch.Tensor  # LongTensor [B]
    frame: torch.Tensor  # LongTensor [B]
    codebook: int


def sample_tokens(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, key: NoiseKey,
) -> torch.Tensor:
    """A draw from softmax(filtered logits / temperature): argmax of logits + Gumbel noise."""
    logits = _filter_top_k_top_p(logits.float() / temperature, top_k, top_p)
    u = counter_uniform(key.seed, key.frame, key.codebook, logits.shape[-1])
    return torch.argmax(logits - torch.log(-torch.log(u)), dim=-1)


def choose(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float,
    key: NoiseKey | None,
) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    if not do_sample:
        return torch.argmax(logits, dim=-1)
    if key is None:
        raise ValueError("sampling needs a noise key (seed, frame, codebook)")
    return sample_tokens(logits, temperature, top_k, top_p, key)


def choose_codebook0(
    logits: torch.Tensor, history: torch.Tensor, frames_done: int, params: SamplingParams,
    suppress_mask: torch.Tensor, eos_id: int, key: NoiseKey | None,
) -> torch.Tensor:
    """The talker's token for frame `frames_done` (history = earlier codebook-0 tokens)."""
    logits = apply_repetition_penalty(logits.float(), history, params.repetition_penalty)
    if frames_done < params.min_new_tokens:
        logits[:, eos_id] = float("-inf")
    logits = logits.masked_fill(suppress_mask, float("-inf"))
    return choose(logits, params.do_sample, params.temperature, params.top_k, params.top_p, key)


def choose_subcode(logits: torch.Tensor, params: SamplingParams,
                   key: NoiseKey | None) -> torch.Tensor:
    return choose(
        logits.float(), params.subtalker_do_sample, params.subtalker_temperature,
        params.subtalker_top_k, params.subtalker_top_p, key,
    )


def codebook0_logits_masked(
    logits: torch.Tensor, seen: torch.Tensor, frames_done: torch.Tensor,
    min_new_tokens: torch.Tensor, repetition_penalty: float, suppress_mask: torch.Tensor,
    eos_id: int,
) -> torch.Tensor:
    """choose_codebook0's processed logits, with the history as a `seen` mask [B, V].

    Penalising each seen token once equals upstream's gather/scatter over the
    history (duplicates write the same value). Only device tensors are read,
    so this runs inside a CUDA graph; rows may be at different frames.
    """
    logits = logits.float()
    p = repetition_penalty
    penalised = torch.where(logits < 0, logits * p, logits / p)
    logits = torch.where(seen, penalised, logits)
    too_early = (frames_done < min_new_tokens)[:, None]  # [B, 1]
    eos_column = torch.zeros_like(seen)
    eos_column[:, eos_id] = True
    return logits.masked_fill(suppress_mask | (eos_column & too_early), float("-inf"))
