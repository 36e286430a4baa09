"""Gemini streaming through the official `google-genai` SDK."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
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
from ..memory import Message, ToolCall
from .base import ModelOutput, ModelRequest, TextChunk

PROVIDER = "gemini"


def map_gemini_error(exc: BaseException) -> BrainError:
    if isinstance(exc, genai_errors.APIError):
        status = int(exc.code) if isinstance(exc.code, int) else 500
        return error_for_status(status, exc.message or str(exc), provider=PROVIDER)
    if isinstance(exc, TimeoutError):
        return ProviderTimeoutError(str(exc) or "request timed out", provider=PROVIDER)
    if isinstance(exc, genai_errors.UnknownApiResponseError | ValueError):
        return ProtocolError(str(exc), provider=PROVIDER)
    return UnavailableError(f"{type(exc).__name__}: {exc}", provider=PROVIDER)


def to_gemini_contents(messages: list[Message]) -> list[types.Content]:
    contents: list[types.Content] = []
    for m in messages:
        if m.role == "user":
            contents.append(types.Content(role="user", parts=[types.Part(text=m.content)]))
        elif m.role == "assistant":
            parts: list[types.Part] = []
            if m.content:
                parts.append(types.Part(text=m.content))
            for c in m.tool_calls:
                parts.append(types.Part(function_call=types.FunctionCall(id=c.id, name=c.name, args=c.arguments)))
            if parts:
                contents.append(types.Content(role="model", parts=parts))
        else:
            part = types.Part(
                function_response=types.FunctionResponse(
                    id=m.tool_call_id, name=m.name or "", response={"result": m.content}
                )
            )
            # consecutive tool results of one step travel together in one user content
            if contents and contents[-1].role == "user" and all(
                p.function_response is not None for p in contents[-1].parts or []
            ):
                (contents[-1].parts or []).append(part)
            else:
                contents.append(types.Content(role="user", parts=[part]))
    return contents


class GeminiBackend:
    name = PROVIDER

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 0,
    ) -> None:
        http = types.HttpOptions(
            base_url=base_url,
            timeout=int(timeout * 1000),
            retry_options=types.HttpRetryOptions(attempts=max_retries + 1),
        )
        self.client = genai.Client(api_key=api_key, http_options=http)

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
        return types.GenerateContentConfig(
            system_instruction=request.system_prompt or None,
            temperature=request.temperature,
            max_output_tokens=request.max_tokens,
            tools=tools,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelOutput]:
        try:
            stream = await self.client.aio.models.generate_content_stream(
                model=request.model,
                contents=to_gemini_contents(request.messages),  # type: ignore[arg-type]
                config=self._config(request),
            )
        except Exception as exc:
            raise map_gemini_error(exc) from exc
        calls: list[ToolCall] = []
        try:
            async for chunk in stream:
                for cand in chunk.candidates or []:
                    for part in (cand.content.parts if cand.content else None) or []:
                        if part.thought:
                            continue
                        if part.text:
                            yield TextChunk(part.text)
                        fc = part.function_call
                        if fc is not None and fc.name:
                            args: dict[str, Any] = dict(fc.args or {})
                            calls.append(
                                ToolCall(id=fc.id or "call_" + uuid.uuid4().hex[:12], name=fc.name, arguments=args)
                            )
        except Exception as exc:
            raise map_gemini_error(exc) from exc
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        for call in calls:
            yield call

    async def aclose(self) -> None:
        try:
            await self.client.aio.aclose()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
