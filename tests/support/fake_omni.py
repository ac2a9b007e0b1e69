"""The Omni backend's client as the agent's STT and LLM see it, without a backend.

`FakeOmniClient` answers what `agent.omni_client.OmniClient` is asked, with the same
signatures: `stream_chat` streams `reply` in word-sized tokens (one every `token_delay_s`),
cut at `max_tokens` with finish reason "length" as a backend does, and answers a
continuation request with the whole reply again, as the dev backend does (the LLM's
joiner drops the repeated start); `complete_chat` and `transcribe` (speech recognition)
answer `transcript`. With `error` set every call raises it (a backend that is down). It
keeps what it was asked: `chats` and `recognitions`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from agent.errors import BackendError
from agent.omni_client import ChatDelta
from tools.omni_dev.responder import split_tokens


class FakeOmniClient:
    def __init__(self, *, reply: str = "It is sunny and warm today, with a light breeze.",
                 transcript: str = "What is the weather like today?", token_delay_s: float = 0.0,
                 error: BackendError | None = None) -> None:
        self.reply = reply
        self.transcript = transcript
        self.token_delay_s = token_delay_s
        self.error = error
        self.chats: list[dict[str, Any]] = []
        self.recognitions: list[dict[str, Any]] = []

    async def aclose(self) -> None:
        """Nothing to release (the real client closes its HTTP session)."""

    async def stream_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float,
        first_token_timeout_s: float,
        idle_timeout_s: float,
        extra_body: dict[str, Any] | None = None,
    ) -> AsyncIterator[ChatDelta]:
        self.chats.append({"messages": messages, "max_tokens": max_tokens,
                           "temperature": temperature, "extra_body": extra_body})
        if self.error is not None:
            raise self.error
        tokens = split_tokens(self.reply)
        for token in tokens[:max_tokens]:
            await asyncio.sleep(self.token_delay_s)
            yield ChatDelta(content=token)
        sent = min(len(tokens), max_tokens)
        yield ChatDelta(finish_reason="length" if sent < len(tokens) else "stop",
                        completion_tokens=sent)

    async def complete_chat(self, messages: list[dict[str, Any]], *, max_tokens: int,
                            temperature: float, timeout_s: float) -> str:
        self.recognitions.append({"via": "chat", "messages": messages, "max_tokens": max_tokens})
        if self.error is not None:
            raise self.error
        return self.transcript

    async def transcribe(self, wav: bytes, *, timeout_s: float, language: str | None = None) -> str:
        self.recognitions.append({"via": "transcriptions", "wav": wav, "language": language})
        if self.error is not None:
            raise self.error
        return self.transcript
