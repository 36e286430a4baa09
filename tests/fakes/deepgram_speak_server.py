"""A fake Deepgram streaming TTS server (`/v1/speak`) on 127.0.0.1, for the real
livekit-plugins-deepgram TTS.

The plugin opens a WebSocket, sends the text word by word as `{"type": "Speak", "text": ...}`
messages and a `{"type": "Flush"}` when its segment's text is complete; the server answers each
flush with linear16 audio (binary messages) and `{"type": "Flushed"}`, as Deepgram's Aura API
does. The audio is a tone whose length follows the text (`tone_seconds`).

`first_byte_delay`, `speedup` and `auto_sentences` make it behave more like a real server, for
`benchmarks/tts_chain_stream.py`; the tests leave them off. Each flushed segment behaves as the next entry of `faults` says (then "ok"): "ok" answers as
above; "stall" sends nothing and keeps the socket open (a provider stuck mid-session); "drop"
sends the first third of the audio, then closes the socket with 1011 (a provider failing
half-way through a sentence).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
from aiohttp import WSMsgType, web

CHUNK_SECONDS = 0.05
_SENTENCE_THEN_MORE = re.compile(r"([.!?]+)\s+\S")


def tone_seconds(text: str, per_char: float = 0.02) -> float:
    """The length of the fake's audio for a segment's text."""
    return round(per_char * len(text.strip()) + 0.1, 3)


def _tone(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * math.pi * 330.0 * t) * 8000).astype(np.int16).tobytes()


@dataclass
class Segment:
    text: str
    speaks: int
    """How many Speak messages carried it (the plugin sends word by word)."""
    fault: str


@dataclass
class FakeDeepgramSpeak:
    faults: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    """Every flushed segment, in the order the flushes arrived."""
    words: list[tuple[float, str]] = field(default_factory=list)
    """Every Speak message: (time.monotonic(), text)."""
    queries: list[dict[str, str]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    first_byte_delay: float = 0.0
    """Seconds before each piece of audio starts (a real server's time to first byte)."""
    speedup: float = 0.0
    """Audio is sent at this many times real time (0: all at once)."""
    seconds_per_char: float = 0.02
    """Audio length per character of text (speech is about 0.065; tests keep it short)."""
    auto_sentences: bool = False
    """Speak each sentence as soon as it is complete, before any flush (benchmarks)."""
    base_url: str = ""
    _runner: web.AppRunner | None = None
    _sockets: set[web.WebSocketResponse] = field(default_factory=set)
    _word: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/speak", self._speak)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1/speak"

    async def aclose(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for_words(self, count: int = 1) -> None:
        """Until `count` Speak messages have arrived (callers bound the wait: a hang guard)."""
        while len(self.words) < count:
            self._word.clear()
            await self._word.wait()

    async def _speak(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        self.queries.append(dict(request.query))
        self.authorizations.append(request.headers.get("Authorization", ""))
        rate = int(request.query.get("sample_rate", "24000"))
        jobs: asyncio.Queue[tuple[bytes, str] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(ws, jobs, rate))
        text, speaks = "", 0
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                kind = data.get("type")
                if kind == "Speak":
                    self.words.append((time.monotonic(), data.get("text", "")))
                    self._word.set()
                    text += data.get("text", "")
                    speaks += 1
                    while self.auto_sentences and (m := _SENTENCE_THEN_MORE.search(text)):
                        # like a server that starts speaking each sentence once it is complete
                        head, text = text[: m.end(1)], text[m.end(1) :]
                        jobs.put_nowait((_tone(tone_seconds(head, self.seconds_per_char), rate), "audio"))
                elif kind == "Flush" and not text.strip():  # the plugin flushes when it closes a socket
                    jobs.put_nowait((b"", "flushed"))
                elif kind == "Flush":
                    fault = self.faults.pop(0) if self.faults else "ok"
                    self.segments.append(Segment(" ".join(text.split()), speaks, fault))
                    audio = _tone(tone_seconds(text, self.seconds_per_char), rate)
                    text, speaks = "", 0
                    if fault == "stall":
                        continue
                    if fault == "drop":
                        jobs.put_nowait((audio[: len(audio) // 3 // 2 * 2], "drop"))
                    else:
                        jobs.put_nowait((audio, "flushed"))
                elif kind == "Close":
                    break
            jobs.put_nowait(None)
            await sender
        finally:
            sender.cancel()
            self._sockets.discard(ws)
        await ws.close()
        return ws

    async def _send(self, ws: web.WebSocketResponse, jobs: asyncio.Queue[tuple[bytes, str] | None], rate: int) -> None:
        """Audio in order: each job's first bytes after `first_byte_delay`, then paced at
        `speedup` times real time."""
        step = int(CHUNK_SECONDS * rate) * 2
        try:
            while (job := await jobs.get()) is not None:
                audio, then = job
                if audio and self.first_byte_delay:
                    await asyncio.sleep(self.first_byte_delay)
                for i in range(0, len(audio), step):
                    await ws.send_bytes(audio[i : i + step])
                    if self.speedup:
                        await asyncio.sleep(CHUNK_SECONDS / self.speedup)
                if then == "drop":
                    await ws.close(code=1011, message=b"internal error")
                    return
                if then == "flushed":
                    await ws.send_str(json.dumps({"type": "Flushed", "sequence_id": len(self.segments)}))
        except ConnectionError:  # the client went away mid-answer (it closed a stream it no longer needs)
            return
