"""openai STT/TTS through the real livekit-plugins-openai against a fake server on 127.0.0.1,
and FallbackAdapter hand-over when the first provider fails mid-turn."""

from __future__ import annotations

import base64
import io
import json
import re
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import web
from livekit import rtc
from livekit.agents import stt, tts
from livekit.agents.vad import VAD
from livekit.plugins import silero

from providers import SpeechSettings, create_stt, create_tts

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
TONE_RATE = 24_000  # what the plugin expects for pcm; wav / mp3 carry their own rate


def _tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(TONE_RATE * seconds)) / TONE_RATE
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def _encode(pcm: np.ndarray, fmt: str) -> tuple[bytes, str]:
    if fmt == "pcm":
        return pcm.tobytes(), "audio/pcm"
    buf = io.BytesIO()
    if fmt == "wav":
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(TONE_RATE)
            w.writeframes(pcm.tobytes())
        return buf.getvalue(), "audio/wav"
    if fmt == "mp3":
        with av.open(buf, "w", format="mp3") as out:
            stream = out.add_stream("mp3", rate=TONE_RATE, layout="mono")
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.rate = TONE_RATE
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
        return buf.getvalue(), "audio/mpeg"
    raise AssertionError(f"the fake does not serve {fmt}")


@dataclass
class FakeOpenAIAudio:
    """`/v1/audio/transcriptions` and `/v1/audio/speech`, answering like OpenAI does."""

    transcript: str = "hello from the fake server"
    stt_status: int = 200
    stt_error: str = "boom"
    tts_mode: str = "ok"  # ok | drop: accept the request, then close before any audio
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    async def transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        with wave.open(io.BytesIO(upload.file.read())) as w:
            audio = {
                "rate": w.getframerate(),
                "channels": w.getnchannels(),
                "frames": w.getnframes(),
            }
        self.requests.append(
            {"path": request.path, **{k: form[k] for k in form if k != "file"}, **audio}
        )
        if self.stt_status != 200:
            body = {
                "error": {"message": self.stt_error, "type": "server_error", "param": None, "code": None}
            }
            return web.json_response(body, status=self.stt_status)
        return web.json_response({"text": self.transcript})

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"path": request.path, **body})
        if self.tts_mode == "drop":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b": accepted\n\n")
            assert request.transport is not None
            request.transport.close()  # the connection dies mid-response
            return response
        audio, content_type = _encode(_tone(), body.get("response_format", "mp3"))
        if body.get("stream_format") == "sse":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for i in range(0, len(audio), 2000):
                delta = base64.b64encode(audio[i : i + 2000]).decode()
                event = {"type": "speech.audio.delta", "audio": delta}
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
            done = {"type": "speech.audio.done", "usage": {"input_tokens": 5, "output_tokens": 9}}
            await response.write(f"data: {json.dumps(done)}\n\n".encode())
            await response.write_eof()
            return response
        return web.Response(body=audio, content_type=content_type)


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAIAudio]:
    fake = FakeOpenAIAudio()
    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", fake.transcriptions)
    app.router.add_post("/v1/audio/speech", fake.speech)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    yield fake
    await runner.cleanup()


@pytest.fixture(scope="module")
def vad() -> VAD:
    return silero.VAD.load()


def _settings(fake: FakeOpenAIAudio, **values: Any) -> SpeechSettings:
    return SpeechSettings(
        _env_file=None, OPENAI_API_KEY="sk-placeholder", OPENAI_BASE_URL=fake.base_url, **values
    )


def _jfk() -> list[rtc.AudioFrame]:
    with wave.open(str(AUDIO / "jfk_16k_mono.wav")) as w:
        pcm = w.readframes(w.getnframes())
    return [rtc.AudioFrame(pcm, 16000, 1, len(pcm) // 2)]


async def test_openai_stt_through_plugin(fake_openai: FakeOpenAIAudio) -> None:
    engine = create_stt(
        _settings(fake_openai, STT_PROVIDERS="openai", OPENAI_STT_MODEL="whisper-x")
    )
    try:
        event = await engine.recognize(_jfk())
    finally:
        await engine.aclose()
    assert event.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    assert event.alternatives[0].text == "hello from the fake server"
    (req,) = fake_openai.requests
    assert req["model"] == "whisper-x" and req["language"] == "en"
    assert (req["rate"], req["channels"]) == (16000, 1)
    assert req["frames"] == 16000 * 11  # the whole utterance was uploaded as WAV


@pytest.mark.parametrize(
    ("model", "response_format", "sse"),
    [("gpt-4o-mini-tts", "mp3", True), ("tts-1", "pcm", False), ("tts-1", "wav", False)],
)
async def test_openai_tts_through_plugin(
    fake_openai: FakeOpenAIAudio, model: str, response_format: str, sse: bool
) -> None:
    settings = _settings(
        fake_openai,
        TTS_PROVIDERS="openai",
        OPENAI_TTS_MODEL=model,
        OPENAI_TTS_VOICE="nova",
        OPENAI_TTS_RESPONSE_FORMAT=response_format,
    )
    engine = create_tts(settings)
    try:
        frames = [ev.frame async for ev in engine.synthesize("Hello from the test.")]
    finally:
        await engine.aclose()
    (req,) = fake_openai.requests
    assert (req["model"], req["voice"], req["input"]) == (model, "nova", "Hello from the test.")
    assert req["response_format"] == response_format
    assert (req.get("stream_format") == "sse") is sse
    audio = rtc.combine_audio_frames(frames)
    assert (audio.sample_rate, audio.num_channels) == (24000, 1)
    assert audio.duration == pytest.approx(1.0, abs=0.1)
    samples = np.frombuffer(audio.data, dtype=np.int16).astype(np.float64)
    assert np.sqrt(np.mean(samples**2)) > 3000  # the tone, not silence


async def test_stt_fallback_hands_the_turn_to_the_next_provider(
    fake_openai: FakeOpenAIAudio, vad: VAD
) -> None:
    fake_openai.stt_status = 500
    engine = create_stt(_settings(fake_openai, STT_PROVIDERS="openai,local"), vad=vad)
    assert isinstance(engine, stt.FallbackAdapter)
    changes: list[tuple[str, bool]] = []
    engine.on(
        "stt_availability_changed", lambda ev: changes.append((ev.stt.provider, ev.available))
    )
    try:
        event = await engine.recognize(_jfk())
    finally:
        await engine.aclose()
    assert len(fake_openai.requests) >= 1  # the primary was asked first and failed
    assert "country" in event.alternatives[0].text.split()  # ...the local STT answered
    assert (changes[0][1], len(changes)) == (False, 1)


@pytest.mark.usefixtures("redacted_logs")
async def test_a_failing_chain_member_is_reported_with_its_own_code_and_no_key(
    fake_openai: FakeOpenAIAudio, caplog: pytest.LogCaptureFixture
) -> None:
    """STT_PROVIDERS=openai,local and openai answers 401 naming the (masked) key, as OpenAI does:
    the local STT transcribes, and clients get one `auth` error envelope (not a bare
    `unavailable`) naming openai, with no part of the key in it, nor in the log (livekit's
    adapter logs the provider's message too)."""
    from agent.voice_session import VoiceSession, build_agent_session
    from agent.worker import load_vad
    from brain import create_voice_brain
    from bridge import MemoryTransport
    from providers import LocalTTS

    from .agent_fakes import settings

    fake_openai.stt_status = 401
    fake_openai.stt_error = "Incorrect API key provided: sk-plac*******lder. You can find your API key at https://platform.openai.com/account/api-keys."
    s = settings(speech=_settings(fake_openai, STT_PROVIDERS="openai,local", TTS_PROVIDERS="local"))
    vad = load_vad(s)
    engine = create_stt(s.speech, vad=vad)
    session = build_agent_session(s, vad=vad, stt=engine, tts=LocalTTS())
    voice = VoiceSession(s, brain=create_voice_brain(s.brain), session=session, conversation_id="auth")
    transport = MemoryTransport(participants=["user"])
    bridge = voice.attach_bridge(transport, served_identity="user")
    assert bridge is not None
    try:
        event = await engine.recognize(_jfk())
        await bridge.aclose()
    finally:
        await session.aclose()
        await engine.aclose()
    assert fake_openai.requests and "country" in event.alternatives[0].text.split()
    errors = [e["data"] for e in map(json.loads, (x.envelope_json for x in transport.sent)) if e["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("auth", False)], errors
    message = errors[0]["message"]
    assert message.startswith("openai failed (") and "Incorrect API key provided: [redacted]" in message, message
    assert "next provider" in message and "plac" not in message and "lder" not in message
    assert [(r.provider, r.code) for r in voice.errors] == [("openai", "auth")]
    assert "switching to next STT" in caplog.text and "provider=openai code=auth" in caplog.text
    assert "plac" not in caplog.text and "lder" not in caplog.text


async def test_stt_chain_failing_mid_session_loses_no_words(fake_openai: FakeOpenAIAudio) -> None:
    """The whole pipeline with STT_PROVIDERS=openai,local and openai answering 500: the
    utterance being recognised when openai fails reaches the local STT whole, the turn is
    answered, and clients hear which provider failed."""
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE, Simulation
    from agent.turns import TurnSettings
    from agent.worker import load_vad
    from providers.factory import BatchFallbackSTT

    from .agent_fakes import play_and_settle, settings

    fake_openai.stt_status = 500
    speech = _settings(fake_openai, STT_PROVIDERS="openai,local", TTS_PROVIDERS="local")
    turn = TurnSettings(_env_file=None, min_endpointing_delay=1.6)  # type: ignore[call-arg]  # JFK's pauses are mid-turn
    s = settings(speech=speech, turn=turn)
    events = io.StringIO()
    sim = Simulation(s, vad=load_vad(s), speed=2.0, conversation_id="chain", events=events)
    assert isinstance(sim.stt, BatchFallbackSTT) and not sim.stt.capabilities.streaming
    assert await play_and_settle(sim, decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE), limit=40)
    assert fake_openai.requests  # openai was asked first, and failed
    heard = " ".join(sim.result.user_turns).lower()
    # the sentence from its first words ("and so my fellow americans"), as the local STT heard them
    assert re.search(r"\band \w+ my fellow american", heard), heard
    assert sim.result.reply_seconds > 0.5
    envelopes = [json.loads(x) for x in events.getvalue().splitlines() if x.startswith("{")]
    errors = [e["data"] for e in envelopes if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["unavailable"], errors
    assert errors[0]["message"].startswith("openai failed"), errors  # the configured name


async def test_tts_fallback_when_the_primary_drops_mid_response(
    fake_openai: FakeOpenAIAudio,
) -> None:
    fake_openai.tts_mode = "drop"
    engine = create_tts(_settings(fake_openai, TTS_PROVIDERS="openai,local"))
    assert isinstance(engine, tts.FallbackAdapter)
    assert engine.sample_rate == 24000  # the chain's highest rate; local audio is resampled
    text = "This reply is spoken by the second provider. It has two sentences."
    frames: list[rtc.AudioFrame] = []
    try:
        async with engine.stream() as stream:
            stream.push_text(text)
            stream.end_input()
            async for ev in stream:
                frames.append(ev.frame)
    finally:
        await engine.aclose()
    # openai does not stream text, so the adapter sent it the first sentence, which failed
    assert fake_openai.requests[0]["input"] == "This reply is spoken by the second provider."
    audio = rtc.combine_audio_frames(frames)
    assert audio.sample_rate == 24000
    assert audio.duration > 3.0  # the whole text, spoken by espeak-ng


async def test_a_chain_is_named_after_its_providers(fake_openai: FakeOpenAIAudio, vad: VAD) -> None:
    """Errors of a whole chain (every provider failed, or the agent's stall guard around it) name
    the chain as configured, not the host of the primary's base URL."""
    from agent.guards import guard_stt
    from providers.provider_errors import provider_name

    settings = _settings(fake_openai, STT_PROVIDERS="openai,local", TTS_PROVIDERS="openai,local")
    stt_chain, tts_chain = create_stt(settings, vad=vad), create_tts(settings)
    try:
        assert provider_name(stt_chain) == provider_name(guard_stt(stt_chain, 10.0)) == "openai,local"
        assert provider_name(tts_chain) == "openai,local"
    finally:
        await stt_chain.aclose()
        await tts_chain.aclose()
