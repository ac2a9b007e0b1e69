"""OpenAI-compatible client for the Omni backend (vLLM serving Qwen3-Omni, or the dev backend).

Three calls, each bounded in time:

- `stream_chat`: `POST /chat/completions` with `stream: true`; yields the text
  deltas as they arrive, then the finish reason. Connect, first-token and
  between-token timeouts; connection errors, 5xx/429 and timeouts *before the
  first token* are retried with backoff, nothing is retried after text was
  produced.
- `complete_chat`: the same without streaming (speech recognition through chat).
- `transcribe`: `POST /audio/transcriptions` (multipart WAV).

Failures raise `BackendError`; `retryable` tells whether the backend may come
back by itself (down, overloaded, slow) or the request itself is wrong (4xx).
Each instance owns one aiohttp session, created on first use in the calling
event loop (one per room: rooms run in different loops).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from streamtalk_common.audio import wav_bytes

from .errors import BackendError

log = logging.getLogger("streamtalk.omni")

FALLBACK_MODEL = "qwen3-omni"
TRANSCRIBE_PROMPT = (
    "Transcribe the speech in the audio exactly as spoken, in its original language. "
    "Reply with the transcript only, without any comment."
)


@dataclass(frozen=True)
class ChatDelta:
    content: str = ""
    finish_reason: str | None = None  # set on the last item only
    completion_tokens: int | None = None


def wav_data_uri(pcm: bytes, sample_rate: int, channels: int = 1) -> str:
    """WAV + base64 as a data URI (CPU work: call it off the event loop)."""
    return ("data:audio/wav;base64,"
            + base64.b64encode(wav_bytes(pcm, sample_rate, channels)).decode())


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    except (json.JSONDecodeError, AttributeError):
        return body[:300] or "no body"


class OmniClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "EMPTY",
        model: str = "",
        connect_timeout_s: float = 3.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._model = model
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self._session: aiohttp.ClientSession | None = None
        self._model_lock: asyncio.Lock | None = None

    # -- plumbing -------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def list_models(self) -> list[str]:
        """The model ids `GET /models` lists.
        Raises BackendError (unreachable, HTTP error, bad body)."""
        try:
            async with self._http().get(
                f"{self.base_url}/models",
                timeout=aiohttp.ClientTimeout(total=self.connect_timeout_s + 2),
            ) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise self._classify(resp.status, text)
                data = json.loads(text)
                return [str(m["id"]) for m in data.get("data", [])
                        if isinstance(m, dict) and m.get("id")]
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError(f"{self.base_url} is unreachable "
                               f"({type(exc).__name__}: {exc})") from None
        except (json.JSONDecodeError, AttributeError, TypeError):
            raise BackendError(f"{self.base_url}/models is not an OpenAI model list",
                               retryable=False) from None

    async def model(self) -> str:
        """OMNI_MODEL, else the first model the backend lists (cached), else qwen3-omni."""
        if self._model:
            return self._model
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        async with self._model_lock:
            if self._model:
                return self._model
            try:
                models = await self.list_models()
            except BackendError as exc:
                log.warning("cannot list models at %s/models (%s); asking for %r",
                            self.base_url, exc, FALLBACK_MODEL)
                return FALLBACK_MODEL  # not cached: try again next time
            if not models:
                return FALLBACK_MODEL
            self._model = models[0]
            log.info("Omni backend at %s serves %r", self.base_url, self._model)
            return self._model

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(self.retry_backoff_s * (2**attempt))

    @staticmethod
    def _classify(status: int, body: str) -> BackendError:
        retryable = status >= 500 or status in (408, 409, 429)
        return BackendError(f"HTTP {status}: {_error_message(body)}", status=status,
                            retryable=retryable)

    # -- chat -------------------------------------------------------------------

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
        """Text deltas, then one ChatDelta with finish_reason. Raises BackendError."""
        body: dict[str, Any] = {
            "model": await self.model(),
            "messages": messages,
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream_options": {"include_usage": True},
            **(extra_body or {}),
        }
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        while True:
            produced = False
            resp: aiohttp.ClientResponse | None = None
            try:
                t0 = time.monotonic()
                try:
                    resp = await asyncio.wait_for(
                        self._http().post(url, json=body), first_token_timeout_s
                    )
                except TimeoutError:
                    raise BackendError(
                        f"no response within {first_token_timeout_s:.1f} s "
                        "(waiting for the first token)") from None
                if resp.status != 200:
                    raise self._classify(resp.status, await resp.text())
                finish: str | None = None
                tokens: int | None = None
                while True:
                    timeout = (first_token_timeout_s - (time.monotonic() - t0)
                               if not produced else idle_timeout_s)
                    try:
                        raw = await asyncio.wait_for(resp.content.readline(), max(timeout, 0.01))
                    except TimeoutError:
                        what = "between tokens" if produced else "for the first token"
                        raise BackendError(
                            f"no data {what} within "
                            f"{timeout if produced else first_token_timeout_s:.1f} s",
                            retryable=not produced,
                        ) from None
                    if not raw:
                        break  # EOF
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        chunk = json.loads(payload)
                    except json.JSONDecodeError:
                        log.warning("ignoring a malformed stream chunk: %.120s", payload)
                        continue
                    if isinstance(chunk.get("error"), dict):
                        raise BackendError(f"stream error: {_error_message(payload)}",
                                           retryable=not produced)
                    usage = chunk.get("usage")
                    if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                        tokens = int(usage["completion_tokens"])
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if content:
                            produced = True
                            yield ChatDelta(content=content)
                        if choice.get("finish_reason"):
                            finish = str(choice["finish_reason"])
                yield ChatDelta(finish_reason=finish or "stop", completion_tokens=tokens)
                return
            except (aiohttp.ClientError, TimeoutError, BackendError) as exc:
                err = exc if isinstance(exc, BackendError) else BackendError(
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                if produced or not err.retryable or attempt >= self.max_retries:
                    raise err from None
                log.warning("chat request failed (%s); retry %d/%d", err, attempt + 1,
                            self.max_retries)
                await self._backoff(attempt)
                attempt += 1
            finally:
                if resp is not None:
                    resp.close()  # drop the connection: a cancelled stream stops the backend's work

    async def _post_for_text(self, path: str, timeout_s: float, **request: Any) -> str:
        """POST to the backend; the body as text, or the classified BackendError for a non-200."""
        async with self._http().post(
            f"{self.base_url}{path}", **request,
            timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=self.connect_timeout_s),
        ) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise self._classify(resp.status, text)
            return text

    async def complete_chat(
        self, messages: list[dict[str, Any]], *, max_tokens: int, temperature: float,
        timeout_s: float,
    ) -> str:
        body = {"model": await self.model(), "messages": messages, "stream": False,
                "max_tokens": max_tokens, "temperature": temperature}

        async def call() -> str:
            text = await self._post_for_text("/chat/completions", timeout_s, json=body)
            try:
                data = json.loads(text)
                return str(data["choices"][0]["message"].get("content") or "")
            except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
                raise BackendError(f"unexpected chat response: {text[:200]}",
                                   retryable=False) from None

        return await self._with_retries(call, "chat", timeout_s)

    async def transcribe(self, wav: bytes, *, timeout_s: float, language: str | None = None) -> str:
        model = await self.model()

        async def call() -> str:
            form = aiohttp.FormData()
            form.add_field("file", wav, filename="turn.wav", content_type="audio/wav")
            form.add_field("model", model)
            form.add_field("response_format", "json")
            if language:
                form.add_field("language", language)
            text = await self._post_for_text("/audio/transcriptions", timeout_s, data=form)
            try:
                return str(json.loads(text).get("text") or "")
            except (json.JSONDecodeError, AttributeError):
                raise BackendError(f"unexpected transcription response: {text[:200]}",
                                   retryable=False) from None

        return await self._with_retries(call, "transcription", timeout_s)

    async def _with_retries(self, call: Any, what: str, timeout_s: float) -> str:
        attempt = 0
        while True:
            try:
                return await call()
            except (aiohttp.ClientError, TimeoutError, BackendError) as exc:
                if isinstance(exc, BackendError):
                    err = exc
                elif isinstance(exc, TimeoutError):
                    err = BackendError(f"no {what} answer within {timeout_s:.1f} s")
                else:
                    err = BackendError(f"{type(exc).__name__}: {exc}" if str(exc)
                                       else type(exc).__name__)
                if not err.retryable or attempt >= self.max_retries:
                    raise err from None
                log.warning("%s request failed (%s); retry %d/%d", what, err, attempt + 1,
                            self.max_retries)
                await self._backoff(attempt)
                attempt += 1
