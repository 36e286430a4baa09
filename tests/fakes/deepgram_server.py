"""A fake Deepgram live-transcription server on 127.0.0.1, for the real livekit-plugins-deepgram.

`/v1/listen` takes the plugin's WebSocket: binary PCM16 audio and `KeepAlive` / `Finalize` /
`CloseStream` text messages. It answers like Deepgram's live API does, with `Results`
messages: it finds speech by energy, sends an interim result (the words of the last
`interim_every` seconds: a short decode, so interims keep their pace however long the segment)
every `interim_every` seconds of audio while a segment is open, and after `endpoint` seconds of quiet the segment's
transcript as a final result (`is_final` and `speech_final`). The words are real: they are
transcribed by the project's local STT (pocketsphinx, in its own process), unless `words` is
set: then every result says those words (no recognition: for tests about the connection, not
the words, which must run fast).

Recognition runs behind the socket reader, in order, so the audio keeps being read while a slow
decode runs; `busy` says whether speech already received is still owed its final result (a
segment open, or a result not sent yet): a test waits for it before it ends the session, so a
final that a loaded machine decodes late is not lost to the session closing.

Each connection behaves as the next entry of `modes` says (then "ok"):
"ok" answers as above; "stall" accepts the audio and never answers (the socket stays up and
pings are answered: what a provider stuck mid-session looks like to the client); "fail" accepts
`fail_after` seconds of audio without answering, then closes the socket with 1011 (an internal
error: what a provider crashing mid-utterance looks like).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from livekit import rtc
from livekit.agents import stt

WINDOW = 0.02
THRESHOLD = 1000.0  # RMS of a 20 ms window (int16) above which it counts as speech


@dataclass
class Connection:
    mode: str
    query: dict[str, str]
    authorization: str
    audio_seconds: float = 0.0
    transcripts: list[str] = field(default_factory=list)
    """The final transcripts sent."""
    interims: int = 0


@dataclass
class FakeDeepgram:
    modes: list[str] = field(default_factory=list)
    endpoint: float = 0.3
    interim_every: float = 1.0
    fail_after: float = 2.5
    words: str | None = None
    connections: list[Connection] = field(default_factory=list)
    _recognizer: stt.STT | None = None
    _runner: web.AppRunner | None = None
    _owed: int = 0
    """Results queued or being decoded, over all connections."""
    _open: set[int] = field(default_factory=set)
    """Connections (by index) with a speech segment not finalised yet."""
    base_url: str = ""

    @property
    def busy(self) -> bool:
        """Speech received is still owed its final result."""
        return self._owed > 0 or bool(self._open)

    @property
    def finals_sent(self) -> int:
        return sum(len(c.transcripts) for c in self.connections)

    async def start(self) -> None:
        from providers import SpeechSettings, create_stt

        if self.words is None:
            self._recognizer = create_stt(SpeechSettings(_env_file=None, STT_PROVIDERS="local"))
        app = web.Application()
        app.router.add_get("/v1/listen", self._listen)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1/listen"

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._recognizer is not None:
            await self._recognizer.aclose()

    async def _listen(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        index = len(self.connections)
        conn = Connection(
            mode=self.modes[index] if index < len(self.modes) else "ok",
            query=dict(request.query),
            authorization=request.headers.get("Authorization", ""),
        )
        self.connections.append(conn)
        rate = int(request.query.get("sample_rate", "16000"))
        segment = _Segmenter(rate, self.endpoint, self.interim_every)
        results: asyncio.Queue[tuple[bytes, float, bool]] = asyncio.Queue()

        async def answer_in_order() -> None:
            while True:
                pcm, start, final = await results.get()
                try:
                    await self._answer(ws, conn, pcm, start, rate, final=final)
                except Exception:  # noqa: BLE001 - the client went away: owed nothing more
                    pass
                finally:
                    self._owed -= 1
                    results.task_done()

        def queue(out: list[tuple[bytes, float, bool]]) -> None:
            for item in out:
                self._owed += 1
                results.put_nowait(item)
            if segment.speech:
                self._open.add(index)
            else:
                self._open.discard(index)

        answering = asyncio.create_task(answer_in_order())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    conn.audio_seconds += len(msg.data) / 2 / rate
                    if conn.mode == "fail" and conn.audio_seconds >= self.fail_after:
                        await ws.close(code=1011, message=b"internal error")
                        return ws
                    if conn.mode in ("stall", "fail"):
                        continue
                    queue(segment.push(msg.data))
                elif msg.type == WSMsgType.TEXT:
                    kind = json.loads(msg.data).get("type")
                    if conn.mode == "ok" and kind in ("Finalize", "CloseStream"):
                        queue(segment.finish())
                    if kind == "CloseStream":
                        await results.join()  # the results asked for go out before the close
                        break
        finally:
            self._open.discard(index)
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
            self._owed -= results.qsize()
        await ws.close()
        return ws

    async def _answer(
        self, ws: web.WebSocketResponse, conn: Connection, pcm: bytes, start: float, rate: int, *, final: bool
    ) -> None:
        if self.words is not None:
            text = self.words
        else:
            assert self._recognizer is not None
            event = await self._recognizer.recognize(rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2))
            text = event.alternatives[0].text if event.alternatives else ""
        if final:
            conn.transcripts.append(text)
        else:
            conn.interims += 1
        await ws.send_str(json.dumps(_results(text, start, len(pcm) / 2 / rate, final=final)))


class _Segmenter:
    """Speech segments by energy: a segment ends after `endpoint` seconds below the threshold.
    Yields (audio, start, final): the last `interim_every` seconds every `interim_every` seconds
    while a segment is open, and the whole segment when it ends."""

    def __init__(self, rate: int, endpoint: float, interim_every: float) -> None:
        self.window = int(rate * WINDOW) * 2
        self.quiet_needed = int(endpoint / WINDOW)
        self.interim_windows = int(interim_every / WINDOW)
        self.pending = b""
        self.speech = bytearray()
        self.position = 0.0
        self.start = 0.0
        self.quiet = 0
        self.since_interim = 0

    def push(self, data: bytes) -> list[tuple[bytes, float, bool]]:
        out: list[tuple[bytes, float, bool]] = []
        self.pending += data
        while len(self.pending) >= self.window:
            chunk, self.pending = self.pending[: self.window], self.pending[self.window :]
            samples = np.frombuffer(chunk, dtype=np.int16).astype(np.float64)
            loud = float(np.sqrt(np.mean(samples**2))) > THRESHOLD
            if loud:
                if not self.speech:
                    self.start = self.position
                self.quiet = 0
            if self.speech or loud:
                self.speech += chunk
                self.since_interim += 1
                if not loud:
                    self.quiet += 1
                if self.quiet >= self.quiet_needed:
                    out.extend(self.finish())
                elif self.since_interim >= self.interim_windows:
                    self.since_interim = 0
                    recent = self.speech[-self.interim_windows * self.window :]
                    out.append((bytes(recent), self.start, False))
            self.position += WINDOW
        return out

    def finish(self) -> list[tuple[bytes, float, bool]]:
        if not self.speech:
            return []
        out = [(bytes(self.speech), self.start, True)]
        self.speech.clear()
        self.quiet = 0
        self.since_interim = 0
        return out


def _results(text: str, start: float, duration: float, *, final: bool) -> dict[str, Any]:
    words = text.split()
    step = duration / max(1, len(words))
    return {
        "type": "Results",
        "is_final": final,
        "speech_final": final,
        "start": start,
        "duration": duration,
        "metadata": {"request_id": "fake-request"},
        "channel": {
            "alternatives": [
                {
                    "transcript": text,
                    "confidence": 0.9,
                    "words": [
                        {"word": w, "start": start + i * step, "end": start + (i + 1) * step, "confidence": 0.9}
                        for i, w in enumerate(words)
                    ],
                }
            ]
        },
    }
