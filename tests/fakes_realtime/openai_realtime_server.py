"""A fake OpenAI Realtime server (GA event names) on 127.0.0.1 for livekit-plugins-openai.

It speaks enough of the protocol for the plugin's RealtimeModel: `session.update`,
`input_audio_buffer.append` with a simple energy-based server VAD (speech_started /
speech_stopped / committed, the user item and its transcription), `conversation.item.create`
/ `delete` / `truncate`, `response.create` / `cancel`, and responses made of assistant audio
with its transcript or a function call.

Replies are scripted: every response (after a detected user turn, or on `response.create`)
pops the next `Say` / `CallTool` / `Calls` / `Fail` from `script`, whatever the client asked for: so a test
that scripts what the model says must check what the client requested in `received` (every
client event, across reconnections) or `started` (each reply with the `response.create` that
started it, None when the server started it itself). Tests can also inject raw frames, drop
the TCP connection without a close frame (the client sees 1006) and wait for client events.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from aiohttp import WSMsgType, web

SAMPLE_RATE = 24000
CHUNK_MS = 100


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def tone(ms: int, freq: float = 220.0, amplitude: int = 6000) -> bytes:
    """PCM16 mono 24 kHz sine: the fake's synthetic 'speech'."""
    n = SAMPLE_RATE * ms // 1000
    t = np.arange(n) / SAMPLE_RATE
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes()


@dataclass
class Say:
    """An assistant message: `text` as transcript deltas and `audio_ms` of audio."""

    text: str
    audio_ms: int = 400
    drop_connection_after_chunks: int | None = None
    """Drop the TCP connection (no close frame) after this many audio chunks."""


@dataclass
class CallTool:
    """A function call item; the client runs it and sends `function_call_output`."""

    name: str
    arguments: dict[str, Any] | str
    """An object, or the raw text to send (e.g. JSON cut off mid-way)."""
    call_id: str = field(default_factory=lambda: _id("call"))


@dataclass
class Calls:
    """One response with several function call items (the model calls tools in parallel)."""

    calls: list[CallTool]


@dataclass
class Fail:
    """A response that fails server-side (`response.done` with status `failed`)."""

    type: str = "invalid_request_error"
    code: str = "inference_rate_limit_exceeded"
    message: str = "Rate limit reached, retry later"


Reply = Say | CallTool | Calls | Fail


@dataclass
class _Conn:
    ws: web.WebSocketResponse
    request: web.Request
    # server VAD state
    in_speech: bool = False
    speech_ms: float = 0.0
    silence_ms: float = 0.0
    audio_ms: float = 0.0
    item_id: str | None = None
    responding: asyncio.Task[None] | None = None
    response_id: str | None = None


class FakeRealtimeServer:
    def __init__(
        self,
        *,
        api_key: str = "test-key",
        vad_threshold: float = 300.0,
        min_speech_ms: int = 60,
        silence_ms: int = 500,
    ) -> None:
        self.api_key = api_key
        self.vad_threshold = vad_threshold
        self.min_speech_ms = min_speech_ms
        self.end_silence_ms = silence_ms
        self.script: deque[Reply] = deque()
        self.transcripts: deque[str] = deque()
        self.received: list[dict[str, Any]] = []
        self.started: list[tuple[Reply, dict[str, Any] | None]] = []
        """Every reply played, in order, with the client's `response.create` that started it (or None)."""
        self.connections = 0
        self.rejected_connections = 0
        self.items: list[dict[str, Any]] = []
        self._conn: _Conn | None = None
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle --

    async def start(self) -> FakeRealtimeServer:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = cast(asyncio.Server, site._server)
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._conn is not None and self._conn.responding is not None:
            self._conn.responding.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- test helpers --

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == type_]

    def requested_instructions(self) -> list[str]:
        """The `instructions` of every `response.create` the client sent, in order ("" if none)."""
        return [str((e.get("response") or {}).get("instructions") or "") for e in self.of_type("response.create")]

    def started_by(self, reply: Reply) -> dict[str, Any] | None:
        """The `response.create` that started the scripted `reply` (None: the server's own VAD did)."""
        for played, request in self.started:
            if played is reply:
                return request
        raise AssertionError(f"{reply!r} was never played")

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(_wait(), within)

    async def send_raw(self, data: str) -> None:
        """Send a text frame as-is (e.g. a malformed event) on the live connection."""
        assert self._conn is not None, "no client connected"
        await self._conn.ws.send_str(data)

    async def send_event(self, event: dict[str, Any]) -> None:
        assert self._conn is not None, "no client connected"
        await self._send(self._conn, event)

    def drop_connection(self) -> None:
        """Close the TCP connection without a WebSocket close frame (client side: 1006)."""
        assert self._conn is not None, "no client connected"
        transport = self._conn.request.transport
        assert transport is not None
        transport.abort()

    # -- protocol --

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _send(self, conn: _Conn, event: dict[str, Any]) -> None:
        event.setdefault("event_id", _id("event"))
        if conn.ws.closed:
            return
        try:
            await conn.ws.send_str(json.dumps(event))
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away (or we dropped it); nothing to tell it

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.rejected_connections += 1
            await self._notify()
            return web.json_response(
                {"error": {"type": "invalid_request_error", "code": "invalid_api_key", "message": "Incorrect API key provided"}},
                status=401,
            )
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws=ws, request=request)
        self._conn = conn
        self.connections += 1
        self.items = []  # a new connection is a new server-side conversation
        await self._send(conn, {"type": "session.created", "session": {"type": "realtime", "id": _id("sess")}})
        await self._notify()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                self.received.append(event)
                await self._dispatch(conn, event)
                await self._notify()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if conn.responding is not None:
                conn.responding.cancel()
            if self._conn is conn:
                self._conn = None
            await self._notify()
        return ws

    async def _dispatch(self, conn: _Conn, event: dict[str, Any]) -> None:
        t = event.get("type")
        if t == "session.update":
            await self._send(conn, {"type": "session.updated", "session": event.get("session", {})})
        elif t == "input_audio_buffer.append":
            await self._on_audio(conn, base64.b64decode(event["audio"]))
        elif t == "input_audio_buffer.clear":
            conn.in_speech, conn.speech_ms, conn.silence_ms = False, 0.0, 0.0
            await self._send(conn, {"type": "input_audio_buffer.cleared"})
        elif t == "conversation.item.create":
            item = dict(event["item"])
            item.setdefault("id", _id("item"))
            await self._add_item(conn, item)
        elif t == "conversation.item.delete":
            self.items = [i for i in self.items if i["id"] != event["item_id"]]
            await self._send(conn, {"type": "conversation.item.deleted", "item_id": event["item_id"]})
        elif t == "conversation.item.truncate":
            await self._send(
                conn,
                {
                    "type": "conversation.item.truncated",
                    "item_id": event["item_id"],
                    "content_index": event.get("content_index", 0),
                    "audio_end_ms": event.get("audio_end_ms", 0),
                },
            )
        elif t == "response.create":
            metadata = (event.get("response") or {}).get("metadata")
            self._start_response(conn, metadata, request=event)
        elif t == "response.cancel":
            if conn.responding is not None and not conn.responding.done():
                conn.responding.cancel()
            else:
                await self._send(
                    conn,
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "code": "response_cancel_not_active",
                            "message": "Cancellation failed: no active response found",
                        },
                    },
                )

    async def _add_item(self, conn: _Conn, item: dict[str, Any]) -> None:
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(item)
        await self._send(conn, {"type": "conversation.item.added", "previous_item_id": previous, "item": item})

    # -- server VAD --

    async def _on_audio(self, conn: _Conn, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        if samples.size == 0:
            return
        ms = samples.size * 1000 / SAMPLE_RATE
        conn.audio_ms += ms
        loud = float(np.sqrt(np.mean(samples**2))) > self.vad_threshold
        if not conn.in_speech:
            conn.speech_ms = conn.speech_ms + ms if loud else 0.0
            if conn.speech_ms >= self.min_speech_ms:
                conn.in_speech, conn.silence_ms = True, 0.0
                conn.item_id = _id("item")
                if conn.responding is not None and not conn.responding.done():
                    conn.responding.cancel()  # interrupt_response: the server stops its reply
                await self._send(
                    conn,
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": int(conn.audio_ms - conn.speech_ms),
                        "item_id": conn.item_id,
                    },
                )
            return
        conn.silence_ms = 0.0 if loud else conn.silence_ms + ms
        if conn.silence_ms >= self.end_silence_ms:
            conn.in_speech, conn.speech_ms = False, 0.0
            await self._end_user_turn(conn)

    async def _end_user_turn(self, conn: _Conn) -> None:
        item_id = conn.item_id or _id("item")
        previous = self.items[-1]["id"] if self.items else None
        await self._send(
            conn, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": int(conn.audio_ms), "item_id": item_id}
        )
        await self._send(
            conn, {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous}
        )
        await self._add_item(
            conn,
            {
                "id": item_id,
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}],
            },
        )
        transcript = self.transcripts.popleft() if self.transcripts else "(unscripted)"
        await self._send(
            conn,
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
            },
        )
        self._start_response(conn, None)

    # -- responses --

    def _start_response(self, conn: _Conn, metadata: dict[str, Any] | None, request: dict[str, Any] | None = None) -> None:
        reply = self.script.popleft() if self.script else Say("(unscripted reply)", audio_ms=200)
        self.started.append((reply, request))
        conn.responding = asyncio.ensure_future(self._respond(conn, reply, metadata))

    async def _respond(self, conn: _Conn, reply: Reply, metadata: dict[str, Any] | None) -> None:
        response_id = _id("resp")
        conn.response_id = response_id
        base = {"response_id": response_id, "output_index": 0}
        await self._send(
            conn,
            {
                "type": "response.created",
                "response": {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": [], "metadata": metadata},
            },
        )
        item: dict[str, Any]
        if isinstance(reply, Fail):
            error = {"type": reply.type, "code": reply.code, "message": reply.message}
            await self._done(conn, response_id, "failed", [], {"type": "failed", "error": error})
            return
        if isinstance(reply, CallTool | Calls):
            done: list[dict[str, Any]] = []
            for index, call in enumerate(reply.calls if isinstance(reply, Calls) else [reply]):
                base = {"response_id": response_id, "output_index": index}
                args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
                item = {"id": _id("item"), "type": "function_call", "status": "in_progress", "call_id": call.call_id, "name": call.name, "arguments": ""}
                await self._send(conn, {"type": "response.output_item.added", **base, "item": item})
                await self._add_item(conn, dict(item))
                await self._send(conn, {"type": "response.function_call_arguments.delta", **base, "item_id": item["id"], "call_id": call.call_id, "delta": args})
                await self._send(conn, {"type": "response.function_call_arguments.done", **base, "item_id": item["id"], "call_id": call.call_id, "arguments": args})
                item = {**item, "status": "completed", "arguments": args}
                self.items[-1] = item
                await self._send(conn, {"type": "response.output_item.done", **base, "item": item})
                done.append(item)
            await self._done(conn, response_id, "completed", done)
            return

        item = {"id": _id("item"), "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        part = {**base, "item_id": item["id"], "content_index": 0}
        status = "completed"
        spoken = ""
        try:
            await self._send(conn, {"type": "response.output_item.added", **base, "item": item})
            await self._add_item(conn, dict(item))
            await self._send(conn, {"type": "response.content_part.added", **part, "part": {"type": "audio", "transcript": ""}})
            words = reply.text.split(" ")
            audio = tone(reply.audio_ms)
            step = SAMPLE_RATE * 2 * CHUNK_MS // 1000
            chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
            for i in range(max(len(words), len(chunks))):
                if i < len(words):
                    delta = words[i] if i == 0 else " " + words[i]
                    spoken += delta
                    await self._send(conn, {"type": "response.output_audio_transcript.delta", **part, "delta": delta})
                if i < len(chunks):
                    if reply.drop_connection_after_chunks is not None and i >= reply.drop_connection_after_chunks:
                        self.drop_connection()
                        return
                    await self._send(conn, {"type": "response.output_audio.delta", **part, "delta": base64.b64encode(chunks[i]).decode()})
                await asyncio.sleep(0)  # let a barge-in (speech_started) cancel us between chunks
        except asyncio.CancelledError:
            status = "cancelled"
        if status == "completed":
            await self._send(conn, {"type": "response.output_audio.done", **part})
            await self._send(conn, {"type": "response.output_audio_transcript.done", **part, "transcript": spoken})
            await self._send(conn, {"type": "response.content_part.done", **part, "part": {"type": "audio", "transcript": spoken}})
        final_item = {**item, "status": "completed" if status == "completed" else "incomplete", "content": [{"type": "output_audio", "transcript": spoken}]}
        await self._send(conn, {"type": "response.output_item.done", **base, "item": final_item})
        await self._done(conn, response_id, status, [final_item])

    async def _done(
        self, conn: _Conn, response_id: str, status: str, output: list[dict[str, Any]], details: dict[str, Any] | None = None
    ) -> None:
        if details is None and status == "cancelled":
            details = {"type": "cancelled", "reason": "turn_detected"}
        await self._send(
            conn,
            {
                "type": "response.done",
                "response": {
                    "id": response_id,
                    "object": "realtime.response",
                    "status": status,
                    "status_details": details,
                    "output": output,
                    "usage": {"total_tokens": 10, "input_tokens": 4, "output_tokens": 6},
                },
            },
        )
        await self._notify()
