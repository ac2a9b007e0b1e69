"""OmniLLM: a LiveKit `llm.LLM` that streams chat completions from the Omni backend.

The conversation (system prompt + multi-turn history, as the session keeps it)
goes to `POST /chat/completions` with `stream: true`, `max_tokens`
(LLM_MAX_TOKENS) and `temperature` (LLM_TEMPERATURE); each text delta becomes
a `ChatChunk` at once.

Continuation (ENABLE_CONTINUATION=1): the reply is asked for in two parts. The
first request is capped at LLM_FIRST_MAX_TOKENS, so the short start of the
answer comes back and reaches the TTS as early as possible; if it stopped at
that cap, a second request continues the same assistant message (vLLM's
`continue_final_message`) up to LLM_MAX_TOKENS in all, while the TTS already
speaks the first part. `bridge.ContinuationJoiner` keeps a backend that
ignores the continuation flag and starts over from repeating itself.

A backend that is down or too slow never hangs a turn and never closes the
session: after the client's retries the reply becomes a short spoken notice
(AGENT_BACKEND_DOWN_MESSAGE), `backend_down` goes on the event bus (the room
shows it), and the next turn tries the backend again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from livekit.agents import llm
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)

from .bridge import ContinuationJoiner
from .events import (
    BackendDown,
    BackendOk,
    EventBus,
    LlmCancelled,
    LlmContinuation,
    LlmDone,
    LlmFirstToken,
    LlmRequest,
)
from .omni_client import BackendError, OmniClient

log = logging.getLogger("streamtalk.llm")

CONTINUE_BODY = {"continue_final_message": True, "add_generation_prompt": False}


def chat_messages(chat_ctx: llm.ChatContext) -> list[dict[str, Any]]:
    """The session's chat context as OpenAI messages (text only; tool items are skipped)."""
    messages: list[dict[str, Any]] = []
    for item in chat_ctx.items:
        if getattr(item, "type", None) != "message":
            continue
        role = item.role if item.role in ("system", "user", "assistant") else "system"
        text = (item.text_content or "").strip()
        if not text:
            continue
        if messages and messages[-1]["role"] == role and role != "system":
            messages[-1]["content"] += "\n" + text  # consecutive turns of one speaker merge
        else:
            messages.append({"role": role, "content": text})
    return messages


class OmniLLM(llm.LLM):
    def __init__(
        self,
        client: OmniClient,
        *,
        max_tokens: int = 150,
        temperature: float = 0.3,
        first_token_timeout_s: float = 10.0,
        idle_timeout_s: float = 10.0,
        continuation: bool = True,
        first_max_tokens: int = 32,
        backend_down_message: str = "",
        bus: EventBus | None = None,
    ) -> None:
        super().__init__()
        self._client = client
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.first_token_timeout_s = first_token_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.continuation = continuation
        self.first_max_tokens = first_max_tokens
        self.backend_down_message = backend_down_message
        self.bus = bus or EventBus()
        self._streams: set[OmniLLMStream] = set()

    @property
    def model(self) -> str:
        return "omni"

    @property
    def provider(self) -> str:
        return "omni"

    def update_options(self, *, max_tokens: int | None = None,
                       temperature: float | None = None) -> None:
        if max_tokens is not None:
            self.max_tokens = max_tokens
        if temperature is not None:
            self.temperature = temperature

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> OmniLLMStream:
        stream = OmniLLMStream(self, chat_ctx=chat_ctx, tools=tools or [],
                               conn_options=conn_options)
        self._streams.add(stream)
        return stream

    @property
    def active_streams(self) -> int:
        return sum(1 for s in self._streams if not s.done)

    async def cancel_active(self) -> int:
        """Cancel every running completion of this room (the barge-in cascade);
        returns the count."""
        live = [s for s in self._streams if not s.done]
        await asyncio.gather(*(s.aclose() for s in live), return_exceptions=True)
        return len(live)


class OmniLLMStream(llm.LLMStream):
    def __init__(self, owner: OmniLLM, *, chat_ctx: llm.ChatContext, tools: list[llm.Tool],
                 conn_options: APIConnectOptions) -> None:
        super().__init__(owner, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._owner = owner
        self._id = f"omni-{uuid.uuid4().hex[:12]}"
        self.done = False

    def _send(self, text: str) -> None:
        self._event_ch.send_nowait(llm.ChatChunk(
            id=self._id, delta=llm.ChoiceDelta(role="assistant", content=text)))

    async def _run(self) -> None:
        owner = self._owner
        bus = owner.bus
        messages = chat_messages(self._chat_ctx)
        produced = ""
        requests = 0
        t0 = time.monotonic()
        first_token_at: float | None = None
        finish: str | None = None
        try:
            budget = owner.max_tokens
            first_cap = min(owner.first_max_tokens, budget) if owner.continuation else budget
            bus.emit(LlmRequest(max_tokens=first_cap))
            requests += 1
            used = 0
            async for d in owner._client.stream_chat(
                messages, max_tokens=first_cap, temperature=owner.temperature,
                first_token_timeout_s=owner.first_token_timeout_s,
                idle_timeout_s=owner.idle_timeout_s,
            ):
                if d.content:
                    if first_token_at is None:
                        first_token_at = time.monotonic()
                        bus.emit(LlmFirstToken())
                    produced += d.content
                    used += 1
                    self._send(d.content)
                if d.finish_reason:
                    finish = d.finish_reason
                    if d.completion_tokens is not None:
                        used = d.completion_tokens
            if owner.continuation and finish == "length" and used < budget and produced.strip():
                finish = await self._continue(messages, produced, budget - used)
                requests += 1
            bus.emit(BackendOk(component="llm"))
        except BackendError as exc:
            log.error("LLM backend failed (%s); %s", exc,
                      "the reply is cut short" if produced else "speaking the backend notice")
            bus.emit(BackendDown(component="llm", detail=str(exc)))
            if not produced and owner.backend_down_message:
                self._send(owner.backend_down_message)
            finish = "error"
        except asyncio.CancelledError:
            bus.emit(LlmCancelled(chars=len(produced)))
            raise
        finally:
            self.done = True
            owner._streams.discard(self)  # the room keeps only its running completions
            bus.emit(LlmDone(
                finish=finish,
                requests=requests,
                chars=len(produced),
                ttft_ms=None if first_token_at is None else round((first_token_at - t0) * 1000, 1),
                ms=round((time.monotonic() - t0) * 1000, 1),
            ))

    async def _continue(self, messages: list[dict[str, Any]], produced: str,
                        budget: int) -> str | None:
        """Second request: continue the assistant message `produced`; returns its finish reason."""
        owner = self._owner
        joiner = ContinuationJoiner(produced)
        follow = [*messages, {"role": "assistant", "content": produced}]
        finish: str | None = None
        owner.bus.emit(LlmContinuation(max_tokens=budget))
        async for d in owner._client.stream_chat(
            follow, max_tokens=budget, temperature=owner.temperature,
            first_token_timeout_s=owner.first_token_timeout_s,
            idle_timeout_s=owner.idle_timeout_s, extra_body=CONTINUE_BODY,
        ):
            if d.content:
                out = joiner.push(d.content)
                if out:
                    self._send(out)
            if d.finish_reason:
                finish = d.finish_reason
        rest = joiner.finish()
        if rest:
            self._send(rest)
        return finish
