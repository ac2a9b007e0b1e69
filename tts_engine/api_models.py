"""The request bodies of the TTS server's synthesis routes, as strict pydantic models.

The same models validate every request (streamtalk_common.http_api.read_model) and make
the schemas of /openapi.json. They are built for a loaded engine (`request_models`): the
text limit is its TTS_MAX_TEXT_CHARS and the speakers and languages those of its
checkpoint, which the schema lists. The engine still checks the names (case and
surrounding spaces do not matter there) and the text's prompt length, so those refusals
keep their codes (`unknown_speaker`, `unknown_language`, `invalid_text`) and their lists
of valid values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_NAME_CHARS = 64  # a speaker or language name (the longest real one has 9)
MAX_SEED = 2**64 - 1  # the noise key is 64 bits (sampling.counter_uniform)

Seed = Annotated[int, Field(
    ge=0, le=MAX_SEED,
    description="noise key of sampled decoding, 0 .. 2**64-1; absent or null: TTS_DEEP_STREAM_SEED "
                "(TTS_DEEP_STREAM_SEED_MODE=fixed) or 0 (=request)")]
Sample = Annotated[bool, Field(description="seeded sampling instead of greedy decoding; "
                                           "absent or null: TTS_DEEP_STREAM_DETERMINISTIC_POLICY")]
PacketTokens = Annotated[int, Field(ge=1, le=64, description=(
    "frames (80 ms each) per packet once the first packets have grown to it (each at most the "
    "frames sent before it); absent or null: TTS_DEEP_STREAM_PACKET_TOKENS"))]


@dataclass(frozen=True)
class RequestModels:
    tts: type[BaseModel]  # /tts/stream and /synthesize
    speech: type[BaseModel]  # /v1/audio/speech


def request_models(speakers: Sequence[str], languages: Sequence[str],
                   max_text_chars: int) -> RequestModels:
    """The request models of an engine with these speakers, languages and text limit."""
    Text = Annotated[str, Field(min_length=1, max_length=max_text_chars, description=(
        f"what to say: 1 .. {max_text_chars} characters (TTS_MAX_TEXT_CHARS), at least one of them "
        "not a space; its prompt must fit a batch row (TTS_ROW_POSITIONS)"))]
    Speaker = Annotated[str, Field(max_length=MAX_NAME_CHARS,
                                   description="one of the checkpoint's speakers",
                                   json_schema_extra={"enum": list(speakers)})]
    Language = Annotated[str, Field(max_length=MAX_NAME_CHARS, description="a language, or auto",
                                    json_schema_extra={"enum": list(languages)})]

    class TTSRequest(BaseModel):
        """A synthesis request. Unknown fields are refused."""

        model_config = ConfigDict(extra="forbid")

        text: Text
        speaker: Speaker
        language: Language | None = "auto"
        packet_tokens: PacketTokens | None = None
        seed: Seed | None = None
        sample: Sample | None = None

    class SpeechRequest(BaseModel):
        """OpenAI's speech request. Unknown fields are ignored, so OpenAI clients may send
        their other fields; `model` and `instructions` are accepted and have no effect."""

        model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True})

        input: Text
        voice: Speaker
        response_format: Literal["wav", "pcm"] = "wav"
        speed: Literal[1.0] = Field(1.0, description="only 1.0: the model speaks at its own pace")
        stream: bool = Field(False, description="send the audio as it is made (chunked)")
        language: Language | None = "auto"
        seed: Seed | None = None
        sample: Sample | None = None
        model: str | None = Field(None, description="ignored: this server has one model")
        instructions: str | None = Field(None,
                                         description="ignored: the model takes no instructions")

    return RequestModels(TTSRequest, SpeechRequest)
