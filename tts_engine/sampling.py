"""Choosing codes from logits: greedy (the golden configuration) or seeded sampling.

"Greedy" follows what the official implementation does with
`do_sample=False, subtalker_dosample=False`: the talker's codebook-0 logits
still pass the processors that generation_config.json implies (repetition
penalty over the codebook-0 tokens generated so far, suppression of the
non-audio tokens 2048..3071 except EOS, EOS forbidden before
`min_new_tokens`), then argmax; the code predictor takes a plain argmax.
Sampling applies temperature, top-k and top-p after the same processors and
draws from a per-request `torch.Generator`, so a seed reproduces a stream.
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


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits [B, V]; history [B, n] of earlier tokens. Divides positive, multiplies negative scores."""
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


def choose(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    if not do_sample:
        return torch.argmax(logits, dim=-1)
    logits = _filter_top_k_top_p(logits / temperature, top_k, top_p)
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def choose_codebook0(
    logits: torch.Tensor, history: torch.Tensor, frames_done: int, params: SamplingParams,
    suppress_mask: torch.Tensor, eos_id: int, generator: torch.Generator | None,
) -> torch.Tensor:
    """The talker's token for frame `frames_done` (history = earlier codebook-0 tokens)."""
    logits = apply_repetition_penalty(logits.float(), history, params.repetition_penalty)
    if frames_done < params.min_new_tokens:
        logits[:, eos_id] = float("-inf")
    logits = logits.masked_fill(suppress_mask, float("-inf"))
    return choose(logits, params.do_sample, params.temperature, params.top_k, params.top_p, generator)


def choose_subcode(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    return choose(
        logits.float(), params.subtalker_do_sample, params.subtalker_temperature,
        params.subtalker_top_k, params.subtalker_top_p, generator,
    )


def greedy_codebook0_masked(
    logits: torch.Tensor, seen: torch.Tensor, frames_done: torch.Tensor, min_new_tokens: torch.Tensor,
    repetition_penalty: float, suppress_mask: torch.Tensor, eos_id: int,
) -> torch.Tensor:
    """choose_codebook0 for greedy decoding with the history as a `seen` mask [B, V].

    Penalising each seen token once equals upstream's gather/scatter over the
    history (duplicates write the same value). Only device tensors are read,
    so this runs inside a CUDA graph.
    """
    logits = logits.float()
    p = repetition_penalty
    penalised = torch.where(logits < 0, logits * p, logits / p)
    logits = torch.where(seen, penalised, logits)
    too_early = (frames_done < min_new_tokens)[:, None]  # [B, 1]
    eos_column = torch.zeros_like(seen)
    eos_column[:, eos_id] = True
    logits = logits.masked_fill(suppress_mask | (eos_column & too_early), float("-inf"))
    return torch.argmax(logits, dim=-1)
