"""Text + speaker + language -> the talker's prefill embeddings.

CustomVoice prompt in the official non-streaming text mode, position by
position (C = talker hidden, P(x) = text_projection(text_embedding(x)),
E(x) = codec_embedding(x)):

    3 role positions        P(<|im_start|> assistant \\n)
    codec prefix            P(tts_pad) + E(think), E(think_bos), E(lang), E(think_eos)
                            (auto language: E(nothink), E(think_bos), E(think_eos))
    speaker                 P(tts_pad) + E(speaker)
    last prefix position    P(tts_bos) + E(codec_pad)
    text body + eos         P(text tokens..., tts_eos) + E(codec_pad)
    start of speech         P(tts_pad) + E(codec_bos)

The prompt length is N_text + 11 with a named language, N_text + 10 with auto.
Each decode step then adds P(tts_pad) to the frame's summed codec embeddings.
The groups of P(...) calls below are batched exactly as upstream batches them,
so float32 results match bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InvalidText, UnknownLanguage, UnknownSpeaker
from .model.configs import TTSModelConfig
from .model.talker import Talker

ROLE_PREFIX_LEN = 3  # <|im_start|> assistant \n
ROLE_SUFFIX_LEN = 5  # <|im_end|> \n <|im_start|> assistant \n


def assistant_text(text: str) -> str:
    return f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"


def resolve_speaker(cfg: TTSModelConfig, speaker: str) -> str:
    name = (speaker or "").strip().lower()
    if name not in cfg.talker.speaker_ids:
        raise UnknownSpeaker(f"unknown speaker {speaker!r}; valid speakers: "
                             f"{', '.join(cfg.speakers)}",
                             cfg.speakers)
    return name


def resolve_language(cfg: TTSModelConfig, language: str | None) -> str:
    name = (language or "auto").strip().lower()
    if name != "auto" and name not in cfg.talker.language_ids:
        raise UnknownLanguage(f"unknown language {language!r}; valid languages: "
                              f"{', '.join(cfg.languages)}",
                              cfg.languages)
    return name


def codec_language_id(cfg: TTSModelConfig, speaker: str, language: str) -> int | None:
    """The language token, or None for auto. Dialect speakers override chinese/auto."""
    dialect = cfg.talker.speaker_dialect.get(speaker)
    if dialect and language in ("chinese", "auto"):
        return cfg.talker.language_ids[dialect]
    if language == "auto":
        return None
    return cfg.talker.language_ids[language]


@dataclass
class Prompt:
    embeds: torch.Tensor  # [1, L, C] prefill input
    tts_pad_embed: torch.Tensor  # [1, 1, C] added to every decode step's input
    text_token_count: int  # N_text, the body tokens between role prefix and suffix


def on_device(device: torch.device, values: list) -> torch.Tensor:
    """Token ids as a tensor on `device`, sent without waiting for the device (from pinned
    host memory): the engine builds prompts while a step runs (runtime/engine.py), and a
    plain copy would wait for that step."""
    ids = torch.tensor(values)
    if device.type != "cuda":
        return ids.to(device)
    return ids.pin_memory().to(device, non_blocking=True)


@torch.no_grad()
def build_prompt(talker: Talker, cfg: TTSModelConfig, ids: list[int],
                 speaker: str, language: str) -> Prompt:
    """ids: the tokenized assistant_text(text); speaker/language already resolved."""
    if len(ids) < ROLE_PREFIX_LEN + ROLE_SUFFIX_LEN + 1:
        raise InvalidText("text is empty after tokenization")
    t = cfg.talker
    device = talker.codec_head.weight.device
    input_ids = on_device(device, [ids])

    def codec(tokens: list[int]) -> torch.Tensor:
        return talker.embed_codec(on_device(device, [tokens]))

    special = on_device(device, [[cfg.tts_bos_token_id, cfg.tts_eos_token_id,
                                  cfg.tts_pad_token_id]])
    tts_bos, tts_eos, tts_pad = talker.embed_text(special).chunk(3, dim=1)  # 3 x [1, 1, C]

    lang_id = codec_language_id(cfg, speaker, language)
    if lang_id is None:
        prefix = [t.codec_nothink_id, t.codec_think_bos_id, t.codec_think_eos_id]
    else:
        prefix = [t.codec_think_id, t.codec_think_bos_id, lang_id, t.codec_think_eos_id]
    codec_part = torch.cat(
        [codec(prefix),
         talker.embed_codec(on_device(device, t.speaker_ids[speaker])).view(1, 1, -1),
         codec([t.codec_pad_id, t.codec_bos_id])],
        dim=1,
    )  # [1, n, C]; its last position (codec_bos) is held back for the end
    n = codec_part.shape[1]
    role = talker.embed_text(input_ids[:, :ROLE_PREFIX_LEN])
    prefix_part = torch.cat((tts_pad.expand(-1, n - 2, -1), tts_bos), dim=1) + codec_part[:, :-1]

    body_ids = input_ids[:, ROLE_PREFIX_LEN:-ROLE_SUFFIX_LEN]
    n_text = body_ids.shape[1]
    body = (torch.cat((talker.embed_text(body_ids), tts_eos), dim=1)
            + codec([t.codec_pad_id] * (n_text + 1)))
    start = tts_pad + codec([t.codec_bos_id])
    embeds = torch.cat((role, prefix_part, body, start), dim=1)
    return Prompt(embeds=embeds, tts_pad_embed=tts_pad, text_token_count=n_text)
