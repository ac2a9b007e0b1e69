"""A loaded Qwen3-TTS model: text -> code frames -> 24 kHz PCM.

`TTSModel` bundles the three parts a request needs (text tokenizer, talker with
code predictor, codec decoder) and validates input before any GPU work:
unknown speaker or language, empty or oversized text are refused with a
message that lists what is valid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from streamtalk_common.audio import SAMPLE_RATE, to_pcm16
from streamtalk_common.audio import write_wav as write_pcm16_wav

from .checkpoint import check_model_dir, load_talker
from .codegen import CodeGenerator, frame_limit
from .errors import InvalidText, TextTooLong
from .model.codec_decoder import load_codec_decoder
from .prompt import (
    Prompt,
    assistant_text,
    build_prompt,
    resolve_language,
    resolve_speaker,
)
from .sampling import SamplingParams
from .text_tokenizer import TextTokenizer

DEFAULT_MAX_TEXT_CHARS = 2000


@dataclass(frozen=True)
class Request:
    """One validated synthesis request."""

    text: str
    speaker: str
    language: str
    params: SamplingParams
    seed: int | None
    # a tighter cap than the engine's (benchmarks fix lengths with it)
    max_frames: int | None = None


@dataclass
class SynthesisResult:
    pcm: np.ndarray  # float32 [samples] in [-1, 1]
    codes: torch.Tensor  # [frames, 16]
    stop_reason: str
    wall_s: float

    @property
    def audio_s(self) -> float:
        return len(self.pcm) / SAMPLE_RATE

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s if self.audio_s else float("inf")


class TTSModel:
    def __init__(
        self, model_dir: str | Path, device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        decoder_dtype: torch.dtype = torch.float32,
    ) -> None:
        root = check_model_dir(model_dir)
        self.model_dir = root
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_text_chars = max_text_chars
        self.tokenizer = TextTokenizer(root)
        self.model = load_talker(root, self.device, dtype)
        self.config = self.model.config
        self.codegen = CodeGenerator(self.model.talker, self.config)
        # The codec decoder's weights default to float32: in bfloat16 its output is only
        # about 33 dB from the float32 decode (the engine may run them in TF32, 57 dB).
        self.decoder = load_codec_decoder(root / "speech_tokenizer", self.device, decoder_dtype)

    @property
    def speakers(self) -> list[str]:
        return self.config.speakers

    @property
    def languages(self) -> list[str]:
        return self.config.languages

    def make_request(
        self, text: str, speaker: str, language: str | None = "auto", sample: bool = False,
        seed: int | None = None,
    ) -> Request:
        if not isinstance(text, str) or not text.strip():
            raise InvalidText("text is empty; send at least one non-space character")
        if len(text) > self.max_text_chars:
            raise TextTooLong(f"text has {len(text)} characters; the limit is "
                              f"{self.max_text_chars}")
        return Request(
            text=text,
            speaker=resolve_speaker(self.config, speaker),
            language=resolve_language(self.config, language),
            params=SamplingParams.sampled() if sample else SamplingParams(),
            seed=seed,
        )

    def prompt(self, req: Request) -> Prompt:
        ids = self.tokenizer.encode(assistant_text(req.text))
        return build_prompt(self.model.talker, self.config, ids, req.speaker, req.language)

    def generate_codes(self, req: Request, max_new_tokens: int = 2048) -> tuple[torch.Tensor, str]:
        prompt = self.prompt(req)
        limit = frame_limit(prompt.text_token_count, max_new_tokens)
        return self.codegen.generate(prompt, req.params, limit, req.seed)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """Offline decode: one full causal pass over all frames [T, 16] -> float32 PCM."""
        if codes.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        wav = self.decoder(codes.T[None].to(self.device))  # [1, T*1920]
        return wav[0].float().cpu().numpy()

    def synthesize(self, req: Request, max_new_tokens: int = 2048) -> SynthesisResult:
        start = time.perf_counter()
        codes, reason = self.generate_codes(req, max_new_tokens)
        pcm = self.decode(codes)
        return SynthesisResult(pcm=pcm, codes=codes.cpu(), stop_reason=reason,
                               wall_s=time.perf_counter() - start)


def write_wav(target: str | Path | BinaryIO, pcm: np.ndarray,
              sample_rate: int = SAMPLE_RATE) -> None:
    """float PCM in [-1, 1] as a 16-bit mono WAV, to a path or a binary file object."""
    write_pcm16_wav(target, to_pcm16(pcm), sample_rate)
