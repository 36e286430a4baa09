"""A scriptable streaming HTTP server on 127.0.0.1 (aiohttp), the base of the provider fakes.

Each request pops the next scripted reply from a queue. A reply is either an `HttpError` or a
`Stream` of actions: `Chunk` (one SSE event), `Raw` (bytes as-is, e.g. malformed data),
`Sleep`, `Hold` (wait until an asyncio.Event is set), `Close` (drop the connection mid-stream).
Every request is recorded with its JSON body and whether the client went away mid-stream.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Chunk:
    """One SSE `data:` event carrying `payload` as JSON."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class Raw:
    """Bytes written as they are (malformed chunks, odd framing)."""

    data: bytes


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Hold:
    """Stop sending until `event` is set (by the test), e.g. to prove deltas are not buffered."""

    event: asyncio.Event


@dataclass(frozen=True)
class Close:
    """Drop the TCP connection without finishing the response."""


Action = Chunk | Raw | Sleep | Hold | Close


@dataclass
class Stream:
    actions: list[Action] = field(default_factory=list)
    finish: bool = True
    """Write the provider's end-of-stream marker (if any) and end the response properly."""

    def then(self, *more: Action) -> Stream:
        return Stream([*self.actions, *more], self.finish)


@dataclass(frozen=True)
class HttpError:
    """An HTTP error status with a provider-shaped error body (`body` overrides the default)."""

    status: int
    message: str = "scripted error"
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers, e.g. `Retry-After` on a 429."""


Reply = Stream | HttpError


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    match: dict[str, str] = field(default_factory=dict)
    """Path parameters the provider fake extracted (e.g. Gemini's api version and model)."""
    sent_chunks: int = 0
    completed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the whole scripted stream was written."""
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the client went away before the stream was complete."""
    server_closed: bool = False
    """The script dropped the connection on purpose (`Close`)."""


class ScriptedServer:
    """Subclasses define the wire shape: routes, SSE framing, end marker and error bodies."""

    sse_separator = b"\n\n"
    end_marker: bytes | None = None

    def __init__(self, *, default: Reply | None = None, strict: bool = True) -> None:
        self.script: deque[Reply] = deque()
        self.default = default
        """Served when the script is empty (benchmarks); None answers 500 instead."""
        self.strict = strict
        """Reject requests a real provider would reject (see `check`) with a 400."""
        self.context_limit: int | None = None
        """A model's context: a request whose history (`history_size`) is larger is refused the
        way the provider refuses one past its model's context (`context_error`), and the script
        is left as it was."""
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._request_seen = asyncio.Condition()

    # -- lifecycle -----------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, body: Any) -> str | None:
        """A reason the real provider would refuse this request body, or None."""
        return None

    def history_size(self, body: Any) -> int:
        """What a request's history weighs against `context_limit` (the fake's "tokens")."""
        raise NotImplementedError

    def context_error(self, size: int) -> HttpError:
        """The provider's answer to a request past its model's context."""
        raise NotImplementedError

    def sent(self, payload: dict[str, Any]) -> None:
        """Called with each chunk written (a fake that must remember what it told the client)."""

    async def start(self) -> ScriptedServer:
        app = web.Application()
        self.routes(app)
        # handler_cancellation: a client disconnect cancels the handler, which we record
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ScriptedServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting -------------------------------------------------------------------------

    def push(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def push_many(self, replies: Iterable[Reply]) -> None:
        self.script.extend(replies)

    async def wait_requests(self, n: int) -> RecordedRequest:
        """Wait until at least `n` requests arrived; returns the n-th."""
        async with self._request_seen:
            await self._request_seen.wait_for(lambda: len(self.requests) >= n)
        return self.requests[n - 1]

    # -- serving ---------------------------------------------------------------------------

    async def serve(self, request: web.Request, match: dict[str, str] | None = None) -> web.StreamResponse:
        try:
            body: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            match=match or {},
        )
        self.requests.append(rec)
        async with self._request_seen:
            self._request_seen.notify_all()
        problem = self.check(body) if self.strict else None
        if problem is not None:
            return self._error_response(400, problem)
        if self.context_limit is not None and (size := self.history_size(body)) > self.context_limit:
            err = self.context_error(size)
            return self._error_response(err.status, err.message, err.body, err.headers)
        if self.script:
            reply = self.script.popleft()
        elif self.default is not None:
            reply = self.default
        else:
            return self._error_response(500, "fake server: no scripted reply left")
        if isinstance(reply, HttpError):
            return self._error_response(reply.status, reply.message, reply.body, reply.headers)
        return await self._stream(request, rec, reply)

    def _error_response(
        self, status: int, message: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response(body if body is not None else self.error_body(status, message), status=status, headers=headers)

    async def _stream(self, request: web.Request, rec: RecordedRequest, reply: Stream) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
            for action in reply.actions:
                if isinstance(action, Chunk):
                    await resp.write(b"data: " + json.dumps(action.payload).encode() + self.sse_separator)
                    rec.sent_chunks += 1
                    self.sent(action.payload)
                elif isinstance(action, Raw):
                    await resp.write(action.data)
                elif isinstance(action, Sleep):
                    await asyncio.sleep(action.seconds)
                elif isinstance(action, Hold):
                    await action.event.wait()
                elif isinstance(action, Close):
                    rec.server_closed = True
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
            if reply.finish:
                if self.end_marker is not None:
                    await resp.write(self.end_marker)
                await resp.write_eof()
            rec.completed.set()
            return resp
        except (asyncio.CancelledError, ConnectionResetError):
            if not rec.completed.is_set() and not rec.server_closed:
                rec.disconnected.set()
            raise
