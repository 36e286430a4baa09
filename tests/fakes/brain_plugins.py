"""A tool module (for BRAIN_TOOLS) and a custom backend factory (for BRAIN_BACKEND=module:factory)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from brain import BrainConfig, ModelOutput, ModelRequest, TextChunk, ToolCall, tool


@tool
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@tool(report="args")
async def convert(value: float, unit: Literal["c", "f"] = "c") -> float:
    """Convert a temperature to the other unit."""
    return round(value * 9 / 5 + 32, 1) if unit == "c" else round((value - 32) * 5 / 9, 1)


def not_a_tool() -> None:
    """Plain functions in a tool module are not tools."""


class EchoBackend:
    """Echoes the user; "shout <words>" calls the `shout` tool, then reads its result."""

    name = "echo"

    def __init__(self, model: str) -> None:
        self.model = model
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelOutput]:
        self.requests.append(request)
        last = request.messages[-1]
        if last.role == "tool":
            yield TextChunk(f"The tool said {last.content}.")
            return
        if last.content.startswith("shout ") and any(t.name == "shout" for t in request.tools):
            yield ToolCall("call_shout_1", "shout", {"text": last.content[len("shout ") :]})
            return
        for word in last.content.split():
            yield TextChunk(word + " ")

    async def aclose(self) -> None:
        return None


def make_backend(config: BrainConfig) -> EchoBackend:
    return EchoBackend(config.effective_model)


def make_backend_no_args() -> EchoBackend:
    return EchoBackend("no-args")


def not_a_backend() -> object:
    return object()


def make_backend_wrong_signature(config: BrainConfig, region: str) -> EchoBackend:
    return EchoBackend(region)


def make_backend_that_fails(config: BrainConfig) -> EchoBackend:
    raise RuntimeError("license server unreachable")


async def make_backend_async(config: BrainConfig) -> EchoBackend:
    return EchoBackend("async")


class _SyncStream(EchoBackend):
    def stream(self, request: ModelRequest):  # type: ignore[override]  # the mistake: no `async`
        yield TextChunk("never")


class _NoYieldStream(EchoBackend):
    async def stream(self, request: ModelRequest):  # type: ignore[override]  # the mistake: no `yield`
        return TextChunk("never")


def make_backend_sync_stream() -> EchoBackend:
    return _SyncStream("sync")


def make_backend_no_yield() -> EchoBackend:
    return _NoYieldStream("no-yield")



class _StreamWithoutRequest(EchoBackend):
    async def stream(self):  # type: ignore[override]  # the mistake: no request parameter
        yield TextChunk("never")


class _NumberedName(EchoBackend):
    name = 7  # type: ignore[assignment]  # the mistake: every error event names its backend


def make_backend_stream_without_request() -> EchoBackend:
    return _StreamWithoutRequest("no-request")


def make_backend_numbered_name() -> EchoBackend:
    return _NumberedName("numbered")


class _SyncClose(EchoBackend):
    closed = False

    def aclose(self) -> None:  # type: ignore[override]  # a plain close: tolerated
        self.closed = True


def make_backend_sync_close() -> EchoBackend:
    return _SyncClose("sync-close")


class _Stalling(EchoBackend):
    """"think hard": a first word, then nothing but empty chunks, for ever (a hung upstream
    behind a connection that stays busy); anything else is echoed."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.released = asyncio.Event()
        """Set when the stalled stream was closed (its upstream released)."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelOutput]:
        if request.messages[-1].content != "think hard":
            async for out in super().stream(request):
                yield out
            return
        yield TextChunk("Let me think")
        try:
            while True:
                await asyncio.sleep(0.05)
                yield TextChunk("")
        finally:
            self.released.set()


def make_backend_stalling(config: BrainConfig) -> EchoBackend:
    return _Stalling(config.effective_model)
