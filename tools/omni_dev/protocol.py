"""OpenAI request parsing and error bodies, shaped like vLLM's OpenAI server."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_TOKENS_LIMIT = 2048  # the production max_model_len
_DATA_URL_RE = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]+)*?);base64,", re.I
)


class OpenAIError(Exception):
    """Rendered as {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def to_json(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


@dataclass
class UserTurn:
    """The last user message: its text parts and its audio clips (encoded bytes)."""

    texts: list[str] = field(default_factory=list)
    audios: list[bytes] = field(default_factory=list)


@dataclass
class ChatRequest:
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    system_texts: list[str]
    turn: UserTurn
    prompt_words: int  # a rough prompt size for `usage`


def decode_data_url(url: object, param: str) -> bytes:
    if not isinstance(url, str):
        raise invalid("the audio URL must be a string", param)
    match = _DATA_URL_RE.match(url)
    if match is None:
        raise invalid(
            "only base64 data URLs are supported for audio "
            "(data:audio/wav;base64,...); this server fetches nothing from the network",
            param,
            "unsupported_audio_url",
        )
    mime = (match.group("mime") or "").lower()
    if mime and not mime.startswith("audio/") and mime != "application/octet-stream":
        raise invalid(f"the data URL's media type must be audio/*, got {mime!r}", param)
    return decode_base64(url[match.end() :], param)


def decode_base64(data: object, param: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise invalid("audio data must be a non-empty base64 string", param)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("audio data is not valid base64", param, "invalid_base64") from None


def _parse_content(content: object, idx: int, keep: bool) -> tuple[list[str], list[bytes]]:
    """Validate one message's content; decode audio only when `keep`."""
    base = f"messages[{idx}].content"
    if content is None:
        return [], []
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        raise invalid(f"{base} must be a string or a list of content parts", base)
    texts: list[str] = []
    audios: list[bytes] = []
    for j, part in enumerate(content):
        p = f"{base}[{j}]"
        if not isinstance(part, dict):
            raise invalid(f"{p} must be an object with a 'type'", p)
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise invalid(f"{p}.text must be a string", f"{p}.text")
            texts.append(part["text"])
        elif kind == "audio_url":
            audio_url = part.get("audio_url")
            url = audio_url.get("url") if isinstance(audio_url, dict) else audio_url
            if url is None:
                raise invalid(f"{p}.audio_url.url is required", f"{p}.audio_url.url")
            if keep:
                audios.append(decode_data_url(url, f"{p}.audio_url.url"))
        elif kind == "input_audio":
            ia = part.get("input_audio")
            if not isinstance(ia, dict) or "data" not in ia:
                raise invalid(f"{p}.input_audio.data is required", f"{p}.input_audio.data")
            if keep:
                audios.append(decode_base64(ia["data"], f"{p}.input_audio.data"))
        elif kind in ("image_url", "video_url", "input_image", "file"):
            raise invalid(
                f"{p}: content type {kind!r} is not supported by the dev backend "
                "(text, audio_url and input_audio are)",
                f"{p}.type",
                "unsupported_content_type",
            )
        else:
            raise invalid(
                f"{p}.type must be one of 'text', 'audio_url', 'input_audio'; got {kind!r}",
                f"{p}.type",
            )
    return texts, audios


def _int_field(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise invalid(f"'{name}' must be an integer within {lo}..{hi}, got {value!r}", name)
    return value


def parse_chat_request(body: object, served_model: str) -> ChatRequest:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required", "model", "missing_required_parameter")
    if model != served_model:
        raise OpenAIError(
            404,
            f"The model `{model}` does not exist. This server serves `{served_model}`.",
            type="NotFoundError",
            param="model",
            code="model_not_found",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid(
            "'messages' must be a non-empty list", "messages", "missing_required_parameter"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean", "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise invalid("'stream_options' must be an object", "stream_options")
    n = body.get("n", 1)
    if n != 1:
        raise invalid("only n=1 is supported", "n")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise invalid("'temperature' must be a number within 0..2", "temperature")
    max_tokens = _int_field(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT)
    if max_tokens is None:
        max_tokens = _int_field(body, "max_tokens", 1, MAX_TOKENS_LIMIT)

    last_user = None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise invalid(f"messages[{i}] must be an object", f"messages[{i}]")
        if msg.get("role") not in ROLES:
            raise invalid(
                f"messages[{i}].role must be one of {', '.join(ROLES)}; got {msg.get('role')!r}",
                f"messages[{i}].role",
            )
        if msg["role"] == "user":
            last_user = i
    if last_user is None:
        raise invalid("'messages' holds no user message", "messages")

    system_texts: list[str] = []
    turn = UserTurn()
    words = 0
    for i, msg in enumerate(messages):
        texts, audios = _parse_content(msg.get("content"), i, keep=i == last_user)
        words += sum(len(t.split()) for t in texts)
        if msg["role"] in ("system", "developer"):
            system_texts.extend(texts)
        if i == last_user:
            turn = UserTurn(texts=texts, audios=audios)
    return ChatRequest(
        model=model,
        stream=stream,
        include_usage=bool(stream_options.get("include_usage", False)),
        max_tokens=max_tokens,
        system_texts=system_texts,
        turn=turn,
        prompt_words=words,
    )
