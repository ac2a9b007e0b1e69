"""The OpenAI request bodies the dev backend accepts, as strict pydantic models.

OpenAI clients send many optional fields: the ones this backend uses are declared with their
bounds and checked, the others are ignored. Audio travels inside the request as base64 (a
data URL in an `audio_url` part, or `input_audio.data`); this server fetches nothing from the
network. The models are also the OpenAPI document's schemas.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

MAX_TOKENS_LIMIT = 2048  # the production max_model_len
MAX_BODY_BYTES = 32 * 1024 * 1024  # about 24 MiB of audio as base64
MAX_AUDIO_S = 300.0  # per request, all its clips together
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[^;,]+)*?;base64,", re.I)


def decode_base64_audio(data: str) -> bytes:
    if not data:
        raise ValueError("audio data must be a non-empty base64 string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("audio data is not valid base64") from None


def decode_data_url(url: str) -> bytes:
    match = _DATA_URL.match(url)
    if match is None:
        raise ValueError(
            "only base64 data URLs are supported for audio (data:audio/wav;base64,...); "
            "this server fetches nothing from the network"
        )
    mime = (match.group("mime") or "").lower()
    if mime and not mime.startswith("audio/") and mime != "application/octet-stream":
        raise ValueError(f"the data URL's media type must be audio/*, got {mime!r}")
    return decode_base64_audio(url[match.end() :])


def _decodable(decode):
    """A validator that checks `decode` accepts the string and keeps the string."""

    def check(value: str) -> str:
        decode(value)
        return value

    return AfterValidator(check)


class _OpenAIBody(BaseModel):
    # fields a client may send that this backend does not use are ignored
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class AudioUrl(_OpenAIBody):
    url: Annotated[
        str,
        _decodable(decode_data_url),
        Field(description="data:audio/<type>;base64,<data>"),
    ]


class InputAudio(_OpenAIBody):
    data: Annotated[str, _decodable(decode_base64_audio), Field(description="base64 audio")]
    format: str | None = None


class ContentPart(_OpenAIBody):
    type: Literal["text", "audio_url", "input_audio"]
    text: str | None = None
    audio_url: AudioUrl | None = None
    input_audio: InputAudio | None = None

    @model_validator(mode="after")
    def _holds_its_type(self) -> ContentPart:
        if getattr(self, self.type) is None:
            raise ValueError(f"a part of type {self.type!r} needs the field {self.type!r}")
        return self

    def audio(self) -> bytes | None:
        """The encoded audio clip this part carries (validated already), if any."""
        if self.audio_url is not None:
            return decode_data_url(self.audio_url.url)
        if self.input_audio is not None:
            return decode_base64_audio(self.input_audio.data)
        return None


def _content_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "parts"
    return None


Content = Annotated[
    Annotated[str, Tag("string")] | Annotated[list[ContentPart], Tag("parts")],
    Discriminator(
        _content_kind,
        custom_error_type="invalid_content",
        custom_error_message="content must be a string or a list of content parts",
    ),
]


class Message(_OpenAIBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content | None = None

    def parts(self) -> list[ContentPart]:
        if isinstance(self.content, str):
            return [ContentPart(type="text", text=self.content)]
        return self.content or []

    def texts(self) -> list[str]:
        return [p.text for p in self.parts() if p.text is not None]


def _has_a_user_message(messages: list[Message]) -> list[Message]:
    if not any(m.role == "user" for m in messages):
        raise ValueError("the messages hold no user message")
    return messages


class StreamOptions(_OpenAIBody):
    include_usage: bool = False


TokenLimit = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)]


class ChatCompletionRequest(_OpenAIBody):
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1), AfterValidator(_has_a_user_message)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=1, description="only 1 choice")] = 1
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: TokenLimit | None = None
    max_completion_tokens: TokenLimit | None = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def last_user_message(self) -> tuple[int, Message]:
        """The last user message and its index (the turn to answer)."""
        i = max(i for i, m in enumerate(self.messages) if m.role == "user")
        return i, self.messages[i]

    def system_texts(self) -> list[str]:
        return [t for m in self.messages if m.role in ("system", "developer") for t in m.texts()]

    def prompt_words(self) -> int:
        """A rough prompt size for `usage`."""
        return sum(len(t.split()) for m in self.messages for t in m.texts())


class TranscriptionForm(_OpenAIBody):
    """The text fields of a multipart transcription request (the audio is the `file` field)."""

    model: Annotated[str, Field(min_length=1)]
    response_format: Literal["json", "text", "verbose_json"] = "json"
    language: Annotated[Literal["en"], Field(description="English only")] | None = None
    prompt: str | None = None
