"""A fake Gemini Live (BidiGenerateContent) server on 127.0.0.1, for livekit-plugins-google.

google-genai always dials `wss://`, so the fake serves TLS with a throw-away self-signed
certificate (`FakeGeminiLiveServer.cert_file`; point `SSL_CERT_FILE` at it, which the SDK reads
when it builds its client). It speaks the JSON messages the plugin uses: `setup` ->
`setupComplete`, `realtimeInput.audio` (16 kHz PCM) with an energy-based server-side activity
detection, `serverContent` (`inputTranscription`, `modelTurn` audio at 24 kHz,
`outputTranscription`, `generationComplete`, `turnComplete`, `interrupted`), `toolCall` and
the client's `toolResponse`, after which the model answers on its own (as Gemini does).
Replies are scripted with the same `Say` / `CallTool` as the OpenAI fake.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import ssl
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from aiohttp import WSMsgType, web

from .openai_realtime_server import CallTool, Reply, Say, tone


@dataclass
class GeminiFault:
    """A reply that goes wrong: after `chunks` audio chunks (and words), the server closes the
    socket with `code` / `reason` ("close"), drops the TCP connection without a close frame
    ("drop"), or sends nothing more until the client goes away ("stall")."""

    kind: str
    text: str = "It is sunny and warm and"
    chunks: int = 0
    code: int = 1011
    reason: str = "Internal error encountered."


INPUT_RATE = 16000
CHUNK_MS = 100
PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class FakeGeminiLiveServer:
    def __init__(self, *, api_key: str = "test-key", vad_threshold: float = 300.0, silence_ms: int = 500) -> None:
        self.api_key = api_key
        self.vad_threshold = vad_threshold
        self.end_silence_ms = silence_ms
        self.script: deque[Reply] = deque()
        self.transcripts: deque[str] = deque()
        self.received: list[dict[str, Any]] = []
        self.setups: list[dict[str, Any]] = []
        self.connections = 0
        self.faults_played = 0
        self.answer_tool_results = True
        """False: the model says nothing after a tool response, as Gemini may (its default
        `WHEN_IDLE` scheduling waits for an idle moment that a voice session may not have)."""
        self.started: list[tuple[Any, dict[str, Any] | None]] = []
        """Every reply played, with the client request that started it (None: the user's turn)."""
        self._transport: asyncio.BaseTransport | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-gemini-live-")
        self.cert_file, self._key_file = _self_signed(Path(self._tmp.name))
        self._runner: web.AppRunner | None = None
        self._ws: web.WebSocketResponse | None = None
        self._responding: asyncio.Task[None] | None = None
        self._in_speech = False
        self._user_interrupts = True
        """Activity handling: the user's speech cuts the reply (else NO_INTERRUPTION: the reply
        plays on, and the answer to the user follows it)."""
        self._speech_ms = 0.0
        self._silence_ms = 0.0
        self.port = 0

    async def start(self) -> FakeGeminiLiveServer:
        app = web.Application()
        app.router.add_get("/ws/{method}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self._key_file)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        server = cast(asyncio.Server, site._server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._responding is not None:
            self._responding.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        self._tmp.cleanup()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def drop_connection(self) -> None:
        """Close the TCP connection without a WebSocket close frame (client side: 1006)."""
        assert self._transport is not None, "no client connected"
        self._transport.close()

    def of_key(self, key: str) -> list[dict[str, Any]]:
        """Client messages of one kind, e.g. `tool_response` (snake or camel case)."""
        camel = key.split("_")[0] + "".join(w.title() for w in key.split("_")[1:])
        return [m.get(key) or m[camel] for m in self.received if key in m or camel in m]

    # -- protocol --

    async def _send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        try:
            await ws.send_str(json.dumps(message))
        except (ConnectionResetError, RuntimeError):
            pass

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not request.match_info["method"].endswith("GenerativeService.BidiGenerateContent"):
            return web.Response(status=404)
        if request.headers.get("x-goog-api-key") != self.api_key:
            return web.json_response({"error": {"code": 401, "message": "API key not valid", "status": "UNAUTHENTICATED"}}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        self._transport = request.transport
        self.connections += 1
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            message = json.loads(msg.data)
            self.received.append(message)
            await self._dispatch(message)
        if self._responding is not None:
            self._responding.cancel()
        return ws

    async def _dispatch(self, message: dict[str, Any]) -> None:
        # the SDK sends snake_case keys and URL-safe base64; the API accepts both spellings
        if "setup" in message:
            self.setups.append(message["setup"])
            config = message["setup"].get("realtimeInputConfig") or message["setup"].get("realtime_input_config") or {}
            handling = config.get("activity_handling") or config.get("activityHandling")
            self._user_interrupts = handling != "NO_INTERRUPTION"
            await self._send({"setupComplete": {}})
        elif (rt := message.get("realtimeInput") or message.get("realtime_input")) is not None:
            audio = rt.get("audio")
            if audio:
                data = audio["data"]
                await self._on_audio(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        elif "toolResponse" in message or "tool_response" in message:
            # Gemini answers tool results by itself
            if self.answer_tool_results:
                self._start_reply(transcript=None)
        elif (content := message.get("clientContent") or message.get("client_content")) is not None:
            # the client asks for a reply (livekit's generate_reply): text turns, turn complete.
            # Like Gemini, client content interrupts the generation in progress.
            if content.get("turnComplete") or content.get("turn_complete"):
                if self._responding is not None and not self._responding.done():
                    self._responding.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._responding
                self._start_reply(transcript=None, request=content)

    async def _on_audio(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        if samples.size == 0:
            return
        ms = samples.size * 1000 / INPUT_RATE
        loud = float(np.sqrt(np.mean(samples**2))) > self.vad_threshold
        if not self._in_speech:
            self._speech_ms = self._speech_ms + ms if loud else 0.0
            if self._speech_ms >= 60:
                self._in_speech, self._silence_ms = True, 0.0
                if self._user_interrupts and self._responding is not None and not self._responding.done():
                    self._responding.cancel()  # it reports the interruption itself
            return
        self._silence_ms = 0.0 if loud else self._silence_ms + ms
        if self._silence_ms >= self.end_silence_ms:
            self._in_speech, self._speech_ms = False, 0.0
            self._start_reply(transcript=self.transcripts.popleft() if self.transcripts else "(unscripted)")

    def _start_reply(self, transcript: str | None, request: dict[str, Any] | None = None) -> None:
        reply = self.script.popleft() if self.script else Say("(unscripted reply)", audio_ms=200)
        self.started.append((reply, request))
        current = self._responding
        if current is not None and not current.done() and not self._user_interrupts:
            self._responding = asyncio.ensure_future(self._reply_after(current, reply, transcript))
        else:
            self._responding = asyncio.ensure_future(self._reply(reply, transcript))

    async def _reply_after(self, current: asyncio.Task[None], reply: Reply, transcript: str | None) -> None:
        """NO_INTERRUPTION: the answer to what the user said while the model spoke comes after
        that turn, once the model has had a moment to think (as Gemini's answers do)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(current)
        await asyncio.sleep(0.3)
        await self._reply(reply, transcript)

    def started_by(self, reply: Any) -> dict[str, Any] | None:
        """The client's `clientContent` that started `reply` (None: the user's speech did)."""
        return next((req for r, req in self.started if r is reply), None)

    def requested_texts(self) -> list[str]:
        """The text of every reply the client asked for."""
        out = []
        for _, req in self.started:
            if req is not None:
                out.append(" ".join(p.get("text", "") for t in req.get("turns", []) for p in t.get("parts", [])))
        return out

    async def _reply(self, reply: Reply, transcript: str | None) -> None:
        if transcript is not None:
            await self._send({"serverContent": {"inputTranscription": {"text": transcript}}})
        if isinstance(reply, CallTool):
            call = {"id": reply.call_id, "name": reply.name, "args": reply.arguments}
            await self._send({"toolCall": {"functionCalls": [call]}})
            return
        if isinstance(reply, GeminiFault):
            await self._fail(reply)
            return
        if not isinstance(reply, Say):
            raise TypeError(f"the Gemini fake cannot play {type(reply).__name__}")
        words = reply.text.split(" ")
        audio = tone(reply.audio_ms)
        step = 24000 * 2 * CHUNK_MS // 1000
        chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
        try:
            for i in range(max(len(words), len(chunks))):
                if i < len(chunks):
                    data = base64.b64encode(chunks[i]).decode()
                    await self._send({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}]}}})
                if i < len(words):
                    await self._send({"serverContent": {"outputTranscription": {"text": (" " if i else "") + words[i]}}})
                await asyncio.sleep(0)
            await self._send({"serverContent": {"generationComplete": True}})
            # like Gemini, end the turn only once the client has had time to play the audio,
            # so speech until then is a barge-in
            await asyncio.sleep(reply.audio_ms / 1000)
        except asyncio.CancelledError:
            await self._send({"serverContent": {"interrupted": True}})
        await self._send({"serverContent": {"turnComplete": True}})

    async def _fail(self, fault: GeminiFault) -> None:
        self.faults_played += 1
        words = fault.text.split(" ")
        step = 24000 * 2 * CHUNK_MS // 1000
        audio = tone(CHUNK_MS * max(1, fault.chunks))
        for i in range(fault.chunks):
            data = base64.b64encode(audio[i * step : (i + 1) * step]).decode()
            await self._send({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}]}}})
            if i < len(words):
                await self._send({"serverContent": {"outputTranscription": {"text": (" " if i else "") + words[i]}}})
            await asyncio.sleep(0)
        ws = self._ws
        if fault.kind == "close" and ws is not None:
            await ws.close(code=fault.code, message=fault.reason.encode())
        elif fault.kind == "drop" and ws is not None and self._transport is not None:
            self._transport.close()  # no close frame: what a dead network looks like
        elif fault.kind == "stall":
            try:
                await asyncio.Event().wait()  # until the client's next request interrupts it
            except asyncio.CancelledError:
                await self._send({"serverContent": {"interrupted": True}})
                await self._send({"serverContent": {"turnComplete": True}})
