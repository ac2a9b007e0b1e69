"""Frame-by-frame code generation: talker step, codebook 0, code-predictor loop.

A `CodegenStream` owns everything one request needs (KV caches, codebook-0
history, the next talker input, its RNG), so many streams can live side by
side; `next_frame` advances one stream by one 80 ms frame. A frame is
complete, all 16 codebooks, the moment it is returned.

Frame t (official order, reproduced exactly):
    talker(input_t)            -> hidden h_t, logits -> codebook 0 (or EOS: stop)
    predictor([h_t, E0(cb0)])  -> codebook 1, then E_{g-1}(cb_{g-1}) -> codebook g, g=2..15
    input_{t+1} = sum of the 16 codebook embeddings + P(tts_pad)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .model.configs import TTSModelConfig
from .model.layers import KVCache
from .model.talker import Talker
from .prompt import Prompt
from .sampling import (
    NoiseKey,
    SamplingParams,
    choose_codebook0,
    choose_subcode,
    seed_as_int64,
    suppressed_token_mask,
)

# (logits [B, 2048] of codebook g, g) -> tokens [B]: how the predictor loop picks each subcode
SubcodePicker = Callable[[torch.Tensor, int], torch.Tensor]

# Runaway guard: no utterance may run longer than this many frames for its text.
# Real speech needs about 3-5 frames per text token; this allows about 2 s per token.
RUNAWAY_BASE_FRAMES = 64
RUNAWAY_FRAMES_PER_TEXT_TOKEN = 24


def frame_limit(text_token_count: int, max_new_tokens: int) -> int:
    return min(max_new_tokens,
               RUNAWAY_BASE_FRAMES + RUNAWAY_FRAMES_PER_TEXT_TOKEN * text_token_count)


@dataclass
class CodegenStream:
    prompt: Prompt
    params: SamplingParams
    max_frames: int
    talker_cache: KVCache
    predictor_cache: KVCache
    seed: torch.Tensor  # LongTensor [B]: the key of sampled tokens' noise
    history: torch.Tensor  # [B, frames] codebook-0 tokens so far
    next_input: torch.Tensor | None = None  # [B, 1, C]; None before prefill
    frames_done: int = 0
    finished: bool = False
    stop_reason: str = ""
    codes: list[torch.Tensor] = field(default_factory=list)  # each [B, 16]


class CodeGenerator:
    """Stateless stepping logic over a loaded talker; state lives in CodegenStream."""

    def __init__(self, talker: Talker, config: TTSModelConfig) -> None:
        self.talker = talker
        self.config = config
        t = config.talker
        self.eos_id = t.codec_eos_id
        self.num_groups = t.num_code_groups
        device = talker.codec_head.weight.device
        self.suppress_mask = suppressed_token_mask(t.geometry.vocab_size, self.eos_id, device)

    @property
    def device(self) -> torch.device:
        return self.talker.codec_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.talker.codec_head.weight.dtype

    def start(
        self, prompt: Prompt, params: SamplingParams, max_frames: int, seed: int | None = None,
        talker_cache: KVCache | None = None,
    ) -> CodegenStream:
        """A new stream; `talker_cache` lets a caller supply preallocated memory (graph slots)."""
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        batch = prompt.embeds.shape[0]
        capacity = prompt.embeds.shape[1] + max_frames
        return CodegenStream(
            prompt=prompt,
            params=params,
            max_frames=max_frames,
            talker_cache=talker_cache or KVCache.allocate(
                self.config.talker.geometry, batch, capacity, self.device, self.dtype),
            predictor_cache=KVCache.allocate(
                self.config.talker.code_predictor.geometry, batch, self.num_groups, self.device,
                self.dtype, written_by_projection=True
            ),
            seed=torch.full((batch,), seed_as_int64(seed or 0), dtype=torch.long,
                            device=self.device),
            history=torch.zeros((batch, 0), dtype=torch.long, device=self.device),
        )

    @torch.no_grad()
    def next_frame(self, s: CodegenStream) -> torch.Tensor | None:
        """The next frame's codes [B, 16], or None once the stream has finished."""
        if s.finished:
            return None
        if s.frames_done >= s.max_frames:
            s.finished, s.stop_reason = True, "max_frames"
            return None
        if s.next_input is None:
            hidden, logits = self.prefill(s)
        else:
            hidden, logits = self.talker.step(s.next_input, s.talker_cache)
        frame = torch.full_like(s.seed, s.frames_done)
        cb0 = choose_codebook0(
            logits, s.history, s.frames_done, s.params, self.suppress_mask, self.eos_id,
            NoiseKey(s.seed, frame, 0)
        )
        if s.history.shape[0] != 1:
            raise NotImplementedError("per-row EOS for batched codegen streams")
        if int(cb0[0]) == self.eos_id:
            s.finished, s.stop_reason = True, "eos"
            return None
        codes = self.predict_rest(hidden, cb0, s.predictor_cache,
                                  lambda logits, g: choose_subcode(logits, s.params,
                                                                   NoiseKey(s.seed, frame, g)))
        s.history = torch.cat((s.history, cb0[:, None]), dim=1)
        s.next_input = (self.talker.frame_embedding(codes) + s.prompt.tts_pad_embed[:, 0])[:, None]
        s.frames_done += 1
        s.codes.append(codes)
        return codes

    def prefill(self, s: CodegenStream) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the prompt through the talker: (last hidden [B, C], codebook-0 logits [B, V])."""
        return self.talker.step(s.prompt.embeds, s.talker_cache)

    def predict_rest(self, hidden: torch.Tensor, cb0: torch.Tensor, cache: KVCache,
                     pick: SubcodePicker) -> torch.Tensor:
        """Codebooks 1..15 for one frame: hidden [B, C], cb0 [B] -> codes [B, 16]."""
        predictor = self.talker.code_predictor
        cache.reset()
        embeds = torch.stack((hidden, self.talker.embed_codec(cb0)), dim=1)  # [B, 2, C]
        codes = [cb0]
        for group in range(1, self.num_groups):
            logits = predictor.step(embeds, cache, group)
            code = pick(logits, group)
            codes.append(code)
            if group < self.num_groups - 1:
                embeds = predictor.model.codec_embedding[group - 1](code)[:, None]
        return torch.stack(codes, dim=1)

    def generate(self, prompt: Prompt, params: SamplingParams, max_frames: int,
                 seed: int | None = None):
        """All frames of one stream: (codes [T, 16] for batch row 0, stop reason)."""
        s = self.start(prompt, params, max_frames, seed)
        while self.next_frame(s) is not None:
            pass
        codes = (torch.cat(s.codes, dim=0) if s.codes
                 else torch.zeros((0, self.num_groups), dtype=torch.long))
        return codes, s.stop_reason
