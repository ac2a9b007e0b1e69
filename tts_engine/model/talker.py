"""The Qwen3-TTS talker and its code predictor.

Module names reproduce the official safetensors keys exactly, so a state dict
loads with no renaming:

    talker.model.{layers.N.*, norm, codec_embedding, text_embedding}
    talker.text_projection.{linear_fc1, linear_fc2}
    talker.codec_head
    talker.code_predictor.model.{layers.N.*, norm, codec_embedding.I}
    talker.code_predictor.lm_head.I
    talker.code_predictor.small_to_mtp_projection   (1.7B only; Identity for 0.6B)

Per frame: one talker position gives codebook 0 (over the 3072-token codec
vocabulary); the code predictor then runs 2 + 14 positions and gives
codebooks 1..15 (2048 entries each).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configs import CodePredictorConfig, TalkerConfig, TTSModelConfig
from .layers import DecoderStack, KVCache


class TextProjection(nn.Module):
    """Resize MLP: text hidden (2048) -> talker hidden, SiLU, with biases."""

    def __init__(self, text_hidden: int, hidden: int) -> None:
        super().__init__()
        self.linear_fc1 = nn.Linear(text_hidden, text_hidden, bias=True)
        self.linear_fc2 = nn.Linear(text_hidden, hidden, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_fc2(F.silu(self.linear_fc1(x)))


class TalkerModel(DecoderStack):
    def __init__(self, cfg: TalkerConfig) -> None:
        super().__init__(cfg.geometry)
        self.codec_embedding = nn.Embedding(cfg.geometry.vocab_size, cfg.geometry.hidden_size)
        self.text_embedding = nn.Embedding(cfg.text_vocab_size, cfg.text_hidden_size)


class CodePredictorModel(DecoderStack):
    def __init__(self, cfg: CodePredictorConfig, talker_hidden: int) -> None:
        super().__init__(cfg.geometry)
        # Codebook i+1's embedding lives in the talker's width: the sum of all
        # 16 embeddings is the talker's next input.
        self.codec_embedding = nn.ModuleList(
            nn.Embedding(cfg.geometry.vocab_size, talker_hidden)
            for _ in range(cfg.num_code_groups - 1)
        )


class CodePredictor(nn.Module):
    def __init__(self, cfg: CodePredictorConfig, talker_hidden: int) -> None:
        super().__init__()
        g = cfg.geometry
        self.num_steps = cfg.num_code_groups - 1
        self.model = CodePredictorModel(cfg, talker_hidden)
        self.lm_head = nn.ModuleList(
            nn.Linear(g.hidden_size, g.vocab_size, bias=False) for _ in range(self.num_steps)
        )
        self.small_to_mtp_projection: nn.Module = (
            nn.Linear(talker_hidden, g.hidden_size, bias=True)
            if talker_hidden != g.hidden_size else nn.Identity()
        )

    def step(self, embeds: torch.Tensor, cache: KVCache, group: int) -> torch.Tensor:
        """embeds [B, S, talker_hidden] -> logits [B, 2048] of codebook `group` (1..15)."""
        hidden = self.model(self.small_to_mtp_projection(embeds), cache)
        return self.lm_head[group - 1](hidden[:, -1])


class Talker(nn.Module):
    def __init__(self, cfg: TalkerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = TalkerModel(cfg)
        self.text_projection = TextProjection(cfg.text_hidden_size, cfg.geometry.hidden_size)
        self.codec_head = nn.Linear(cfg.geometry.hidden_size, cfg.geometry.vocab_size, bias=False)
        self.code_predictor = CodePredictor(cfg.code_predictor, cfg.geometry.hidden_size)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Text token ids [B, S] -> projected embeddings [B, S, C]."""
        return self.text_projection(self.model.text_embedding(ids))

    def embed_codec(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.codec_embedding(ids)

    def step(self, embeds: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
        """embeds [B, S, C] -> (last hidden [B, C], codebook-0 logits [B, 3072])."""
        hidden = self.model(embeds, cache)[:, -1]
        return hidden, self.codec_head(hidden)

    def frame_embedding(self, codes: torch.Tensor) -> torch.Tensor:
        """A frame's 16 codes [B, 16] -> the sum of their embeddings [B, C]."""
        parts = [self.model.codec_embedding(codes[:, 0])]
        parts += [emb(codes[:, i + 1])
                  for i, emb in enumerate(self.code_predictor.model.codec_embedding)]
        # One reduction over the stacked parts, as upstream: the float32 sum
        # order then matches bit for bit.
        return torch.stack(parts, dim=1).sum(1)


class Qwen3TTSModel(nn.Module):
    """Top level: holds `talker` so state-dict keys start with `talker.` as upstream."""

    def __init__(self, cfg: TTSModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.talker = Talker(cfg.talker)
