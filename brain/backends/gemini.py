"""Gemini streaming through the official `google-genai` SDK."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ..errors import (
    BrainError,
    ProtocolError,
    ProviderTimeoutError,
    UnavailableError,
    error_for_status,
)
from ..memory import Message, ToolCall, well_formed
from .base import (
    ModelOutput,
    ModelRequest,
    TextChunk,
    bounded_stream,
    check_finish,
    retry_after_header,
)

PROVIDER = "gemini"
API_VERSION = "v1beta"
_END = object()
_NORMAL_FINISH = ("STOP",)
_FAILED_CALL = ("MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MISSING_THOUGHT_SIGNATURE")
"""Finish reasons that say the model's function call failed (no call comes with them)."""


def map_gemini_error(exc: BaseException) -> BrainError:
    if isinstance(exc, genai_errors.APIError):
        status = int(exc.code) if isinstance(exc.code, int) else 500
        return error_for_status(status, exc.message or str(exc), provider=PROVIDER)
    if isinstance(exc, TimeoutError):
        return ProviderTimeoutError(str(exc) or "request timed out", provider=PROVIDER)
    if isinstance(exc, genai_errors.UnknownApiResponseError | ValueError):
        return ProtocolError(str(exc), provider=PROVIDER)
    return UnavailableError(f"{type(exc).__name__}: {exc}", provider=PROVIDER)


def gemini_retry_hint(exc: BaseException) -> float | None:
    """The wait an error response asks for: its `Retry-After` header, else the `RetryInfo`
    detail Gemini puts in a 429's body (`"retryDelay": "37s"`)."""
    if not isinstance(exc, genai_errors.APIError):
        return None
    header = retry_after_header(getattr(exc.response, "headers", None))
    if header is not None:
        return header
    body = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else None
    for detail in (body.get("details") if isinstance(body, dict) else None) or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(float(delay[:-1]), 0.0)
            except ValueError:
                continue
    return None


def to_gemini_contents(messages: list[Message]) -> list[types.Content]:
    """The history as Gemini contents, `user` and `model` alternating: consecutive messages of
    one side travel in one content (a turn whose reply was never heard, tool results followed
    by the next user turn after a barge-in), as Gemini rejects two contents in a row from one side."""
    contents: list[types.Content] = []

    def add(role: str, parts: list[types.Part]) -> None:
        if contents and contents[-1].role == role:
            contents[-1].parts = [*(contents[-1].parts or []), *parts]
        else:
            contents.append(types.Content(role=role, parts=parts))

    for m in messages:
        if m.role == "user":
            add("user", [types.Part(text=well_formed(m.content))])
        elif m.role == "assistant":
            parts: list[types.Part] = []
            if m.content:
                parts.append(types.Part(text=well_formed(m.content)))
            for c in m.tool_calls:
                parts.append(
                    types.Part(
                        function_call=types.FunctionCall(id=c.id, name=c.name, args=c.arguments),
                        thought_signature=c.thought_signature,
                    )
                )
            if parts:
                add("model", parts)
        else:
            response = types.FunctionResponse(
                id=m.tool_call_id, name=m.name or "", response={"result": well_formed(m.content)}
            )
            add("user", [types.Part(function_response=response)])
    return contents


class GeminiBackend:
    name = PROVIDER
    bounds_silence = True  # `bounded_stream`, with BRAIN_MAX_RETRIES

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 0,
    ) -> None:
        self.timeout = timeout
        self.retries = max_retries
        http = types.HttpOptions(
            base_url=base_url,
            # pinned: function calling with JSON-schema parameters is documented on v1beta
            api_version=API_VERSION,
            # no SDK timeout: it bounds the whole stream (aiohttp's `total`, and the server's
            # deadline through X-Server-Timeout), so a long reply was cut mid-sentence; `_pump`
            # bounds the model's silence instead (`bounded_stream`, as for OpenAI)
            timeout=None,
            # one attempt: `bounded_stream` retries, after the server's retry hint, within
            # BRAIN_REQUEST_TIMEOUT x attempts (the SDK's backoff ignores the hint). Set rather
            # than None, which would let the SDK retry a failed connection after 1-10 s itself
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        # vertexai=False: GOOGLE_GENAI_USE_VERTEXAI in the environment must not move this brain
        # to Vertex AI (another endpoint, another credential) behind the GEMINI_API_KEY setting
        self.client = genai.Client(api_key=api_key, vertexai=False, http_options=http)

    def _config(self, request: ModelRequest) -> types.GenerateContentConfig:
        tools: list[Any] | None = None
        if request.tools:
            tools = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=t.name, description=t.description, parameters_json_schema=t.parameters
                        )
                        for t in request.tools
                    ]
                )
            ]
        tool_config = None
        if tools and request.tool_choice == "none":
            tool_config = types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE)
            )
        return types.GenerateContentConfig(
            system_instruction=request.system_prompt or None,
            temperature=request.temperature,
            max_output_tokens=request.max_tokens,
            tools=tools,
            tool_config=tool_config,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelOutput]:
        # The SDK's stream is a chain of nested async generators that only releases the HTTP
        # connection when garbage-collected; closing the outer one leaves the socket open.
        # So a pump task reads it and closing this stream *cancels* the pump, which unwinds the
        # chain at its network read and closes the connection right away (barge-in).
        queue: asyncio.Queue[Any] = asyncio.Queue()
        pump = asyncio.ensure_future(self._pump(request, queue))
        calls: list[ToolCall] = []
        finish_reason: str | None = None
        texts = 0
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BrainError):
                    raise item
                if isinstance(item, BaseException):
                    raise map_gemini_error(item) from item
                feedback = item.prompt_feedback
                if feedback is not None and feedback.block_reason:
                    # the prompt itself was refused: no candidate will come
                    reason = getattr(feedback.block_reason, "value", feedback.block_reason)
                    raise ProtocolError(f"the model gave no answer (prompt blocked: {reason})", provider=PROVIDER)
                for cand in item.candidates or []:
                    if cand.finish_reason:
                        finish_reason = str(getattr(cand.finish_reason, "value", cand.finish_reason))
                for out in self._outputs(item, calls):
                    texts += 1
                    yield out
        finally:
            if not pump.done():
                pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        if finish_reason is None:
            # the connection closed cleanly mid-answer: the reply so far is not the whole answer
            raise UnavailableError("the model's stream ended before it finished (no finishReason)", provider=PROVIDER)
        check_finish(
            finish_reason,
            answered=bool(texts or calls),
            normal=_NORMAL_FINISH,
            provider=PROVIDER,
            failed_call=_FAILED_CALL,
            called=bool(calls),
        )
        for call in calls:
            yield call

    async def _pump(self, request: ModelRequest, queue: asyncio.Queue[Any]) -> None:
        """Reads the SDK's stream into `queue`, under `bounded_stream`: the request timeout bounds
        each silence (a reply may stream for as long as it flows) and the retries happen there."""

        async def attempt() -> AsyncGenerator[types.GenerateContentResponse, None]:
            stream = await self.client.aio.models.generate_content_stream(
                model=request.model,
                contents=to_gemini_contents(request.messages),  # type: ignore[arg-type]
                config=self._config(request),
            )
            async for chunk in stream:
                yield chunk

        chunks = bounded_stream(
            attempt,
            silence=self.timeout,
            retries=self.retries,
            progress=lambda chunk: bool(chunk.candidates),
            map_error=map_gemini_error,
            retry_hint=gemini_retry_hint,
            provider=PROVIDER,
        )
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    queue.put_nowait(chunk)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, mapped there
            queue.put_nowait(exc)
        else:
            queue.put_nowait(_END)

    @staticmethod
    def _outputs(chunk: types.GenerateContentResponse, calls: list[ToolCall]) -> list[TextChunk]:
        """Text of one chunk (returned) and its function calls (collected into `calls`)."""
        texts: list[TextChunk] = []
        for cand in chunk.candidates or []:
            for part in (cand.content.parts if cand.content else None) or []:
                if part.thought:
                    continue
                if part.text:
                    texts.append(TextChunk(part.text))
                fc = part.function_call
                if fc is not None and fc.name:
                    calls.append(
                        ToolCall(
                            id=fc.id or "call_" + uuid.uuid4().hex[:16],
                            name=fc.name,
                            arguments=dict(fc.args or {}),
                            thought_signature=part.thought_signature,
                        )
                    )
        return texts

    async def aclose(self) -> None:
        try:
            await self.client.aio.aclose()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
