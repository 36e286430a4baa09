"""OpenAI Chat Completions streaming, through the official `openai` SDK (any compatible server)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

from ..errors import (
    AuthError,
    BrainError,
    ContextTooLongError,
    ProtocolError,
    ProviderTimeoutError,
    RateLimitedError,
    UnavailableError,
    error_for_status,
)
from ..memory import INVALID_JSON, Message, ToolCall, well_formed
from .base import (
    ModelOutput,
    ModelRequest,
    TextChunk,
    bounded_stream,
    check_finish,
    retry_after_header,
)

PROVIDER = "openai"


def map_openai_error(exc: BaseException) -> BrainError:
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeoutError(str(exc), provider=PROVIDER)
    if isinstance(exc, openai.APIConnectionError):
        return UnavailableError(str(exc), provider=PROVIDER)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return AuthError(exc.message, provider=PROVIDER, status=exc.status_code)
    if isinstance(exc, openai.RateLimitError):
        return RateLimitedError(exc.message, provider=PROVIDER, status=exc.status_code)
    if isinstance(exc, openai.APIStatusError) and exc.code in ("context_length_exceeded", "string_above_max_length"):
        return ContextTooLongError(exc.message, provider=PROVIDER, status=exc.status_code)
    if isinstance(exc, openai.APIStatusError):
        return error_for_status(exc.status_code, exc.message, provider=PROVIDER)
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
        return ProtocolError(str(exc), provider=PROVIDER)
    if isinstance(exc, openai.APIError):
        # an `{"error": ...}` event inside the stream: the provider failed mid-reply
        return UnavailableError(exc.message, provider=PROVIDER)
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return ProviderTimeoutError(f"{type(exc).__name__}: {exc}", provider=PROVIDER)
    return UnavailableError(f"{type(exc).__name__}: {exc}", provider=PROVIDER)


def openai_retry_hint(exc: BaseException) -> float | None:
    """The wait an HTTP error response asks for (`Retry-After`, `retry-after-ms`), if any."""
    response = getattr(exc, "response", None) if isinstance(exc, openai.APIStatusError) else None
    return retry_after_header(getattr(response, "headers", None))


def to_openai_messages(system_prompt: str, messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": well_formed(m.content)})
        elif m.role == "assistant" and m.tool_calls:
            calls: list[dict[str, Any]] = []
            for c in m.tool_calls:
                call: dict[str, Any] = {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": wire_arguments(c)},
                }
                if c.extra_content is not None:  # as received (a Gemini thought signature)
                    call["extra_content"] = c.extra_content
                calls.append(call)
            out.append({"role": "assistant", "content": well_formed(m.content) or None, "tool_calls": calls})
        else:
            out.append({"role": m.role, "content": well_formed(m.content)})
    return out


def wire_arguments(call: ToolCall) -> str:
    """A call's arguments as the history carries them: the model's text when it is a JSON object,
    else `{}`. vLLM, SGLang and other compatible servers parse every call's arguments in the
    history, so text that is not an object (a truncated or malformed call) would fail this and
    every later request of the conversation with a 400; the model still sees its text, in the
    call's error result."""
    if INVALID_JSON in call.arguments:
        return "{}"
    return well_formed(call.raw_arguments) or json.dumps(call.arguments)


def parse_arguments(raw: str) -> dict[str, Any]:
    """Parse tool arguments; invalid JSON yields a marker the tool loop reports back to the model."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {INVALID_JSON: raw}
    return value if isinstance(value, dict) else {INVALID_JSON: raw}


def _call_index(index: int | None, call_id: str | None, calls: dict[int, dict[str, str]], wire: dict[int | None, int]) -> int:
    """Which call a tool-call chunk continues. OpenAI numbers parallel calls by `index` and
    sends each id once; some compatible servers reuse index 0 for every call (Ollama: a new id
    on an index that has one starts a call), others omit `index` and repeat the id (the call
    with that id goes on). Distinct indices stay distinct calls, even with one id."""
    current = wire.get(index)
    if index is not None:
        if current is None or (call_id and calls[current]["id"] and calls[current]["id"] != call_id):
            wire[index] = len(calls)
        return wire[index]
    if call_id:
        for i, slot in calls.items():
            if slot["id"] == call_id:
                wire[None] = i
                return i
        if current is None or calls[current]["id"]:
            wire[None] = len(calls)
    elif current is None:
        wire[None] = max(calls) if calls else 0
    return wire[None]


class OpenAIChatBackend:
    name = PROVIDER
    bounds_silence = True  # `bounded_stream`, with BRAIN_MAX_RETRIES

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 0,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self.timeout = timeout
        self.retries = max_retries
        # the SDK's own retries are off: `bounded_stream` retries within BRAIN_REQUEST_TIMEOUT x
        # attempts (the SDK sleeps whatever Retry-After says, up to 2 minutes per retry)
        self.client = client or openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelOutput]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request.system_prompt, request.messages),
            "stream": True,
        }
        if request.tools:
            kwargs["tools"] = [t.openai_schema() for t in request.tools]
            if request.tool_choice != "auto":
                kwargs["tool_choice"] = request.tool_choice
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens

        async def attempt() -> AsyncGenerator[ChatCompletionChunk, None]:
            stream = await self.client.chat.completions.create(**kwargs)
            async with stream:
                async for chunk in stream:
                    yield chunk

        chunks = bounded_stream(
            attempt,
            silence=self.timeout,
            retries=self.retries,
            progress=lambda chunk: bool(chunk.choices),  # not a keep-alive's empty choices
            map_error=map_openai_error,
            retry_hint=openai_retry_hint,
            provider=PROVIDER,
        )
        calls: dict[int, dict[str, str]] = {}
        extras: dict[int, dict[str, Any]] = {}  # a call's `extra_content`, to send back with it
        wire: dict[int | None, int] = {}  # the server's `index` -> the call its chunks continue
        finish_reason: str | None = None
        texts = 0
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    if not chunk.choices:
                        continue
                    if chunk.choices[0].finish_reason:
                        finish_reason = chunk.choices[0].finish_reason
                    delta = chunk.choices[0].delta
                    if delta is None:
                        continue
                    # a refusal is the model's answer to the user: it is spoken like one
                    for text in (delta.content, getattr(delta, "refusal", None)):
                        if text:
                            texts += 1
                            yield TextChunk(text)
                    for tc in delta.tool_calls or []:
                        index = _call_index(tc.index, tc.id, calls, wire)
                        slot = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
                        if tc.id:
                            slot["id"] = tc.id
                        extra = (tc.model_extra or {}).get("extra_content")
                        if isinstance(extra, dict):
                            extras.setdefault(index, {}).update(extra)
                        if tc.function is not None:
                            # OpenAI sends the name once; some servers repeat it on every chunk
                            if tc.function.name and tc.function.name != slot["name"]:
                                slot["name"] += tc.function.name
                            if tc.function.arguments:
                                slot["arguments"] += tc.function.arguments
        except BrainError:  # the SDK's failures, mapped by `bounded_stream`
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"malformed stream chunk: {exc}", provider=PROVIDER) from exc
        except Exception as exc:
            raise map_openai_error(exc) from exc
        if finish_reason is None:
            # the connection closed cleanly mid-answer (a proxy's idle cut, a crashed server):
            # the reply so far is not the model's whole answer
            raise UnavailableError("the model's stream ended before it finished (no finish_reason)", provider=PROVIDER)
        check_finish(finish_reason, answered=bool(texts or calls), normal=("stop", "tool_calls", "function_call"), provider=PROVIDER)
        for index in sorted(calls):
            slot = calls[index]
            if not slot["name"]:
                raise ProtocolError("tool call without a function name", provider=PROVIDER)
            yield ToolCall(
                id=slot["id"] or "call_" + uuid.uuid4().hex[:16],
                name=slot["name"],
                arguments=parse_arguments(slot["arguments"]),
                raw_arguments=slot["arguments"],
                extra_content=extras.get(index),
            )

    async def aclose(self) -> None:
        await self.client.close()
