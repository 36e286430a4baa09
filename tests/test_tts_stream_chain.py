"""TTS chains led by a streaming provider (`TTS_PROVIDERS=deepgram,local`): the real
livekit-plugins-deepgram TTS against a fake Deepgram `/v1/speak` server on 127.0.0.1, the local
voice behind it. The reply text streams to the primary as it arrives, one sentence per request;
a primary that fails or stalls after it has spoken hands the rest of the reply, from the sentence
it was saying, to the next provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, tts
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    USERDATA_TTS_STARTED_TIME,
    APIConnectOptions,
)
from livekit.agents.utils import http_context

from providers import LocalTTS, SpeechSettings, create_tts
from providers.tts_chains import StreamingSentenceFallbackTTS

from .fakes.deepgram_speak_server import FakeDeepgramSpeak, tone_seconds
from .faults_kit import local_seconds

pytestmark = pytest.mark.timeout(60)

SENTENCES = ["It is sunny in Paris today.", "The wind is calm and the sky is clear.", "Enjoy your afternoon walk by the river."]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDeepgramSpeak]:
    server = FakeDeepgramSpeak()
    await server.start()
    try:
        async with http_context.open():  # the plugin's HTTP session, as in a job
            yield server
    finally:
        await server.aclose()


def _chain(fake: FakeDeepgramSpeak, providers: str = "deepgram,local", timeout: float = 1.0) -> tts.TTS:
    return create_tts(
        SpeechSettings(
            _env_file=None,  # type: ignore[call-arg]
            TTS_PROVIDERS=providers,
            DEEPGRAM_API_KEY="dg-placeholder",
            DEEPGRAM_TTS_BASE_URL=fake.base_url,
            FALLBACK_ATTEMPT_TIMEOUT=timeout,
        )
    )


async def _say(engine: tts.TTS, text: str) -> rtc.AudioFrame:
    """The chain's audio for `text`, pushed word by word as an LLM would."""
    frames: list[rtc.AudioFrame] = []
    async with engine.stream() as stream:
        for word in text.split(" "):
            stream.push_text(word + " ")
        stream.end_input()
        async for ev in stream:
            frames.append(ev.frame)
    return rtc.combine_audio_frames(frames)


class _NoStreamTTS(tts.TTS):
    """A streaming provider that cannot even open a stream (a plugin refusing its options,
    a client already closed)."""

    def __init__(self) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=True), sample_rate=24_000, num_channels=1)

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> tts.ChunkedStream:
        raise APIConnectionError("down")

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> tts.SynthesizeStream:
        raise APIConnectionError("cannot open a stream")


async def test_each_sentence_streams_to_the_primary_as_its_text_arrives(fake: FakeDeepgramSpeak) -> None:
    engine = _chain(fake)
    assert isinstance(engine, StreamingSentenceFallbackTTS) and engine.capabilities.streaming
    assert engine.sample_rate == 24_000  # the chain's highest rate
    frames: list[rtc.AudioFrame] = []
    try:
        async with engine.stream() as stream:
            stream.push_text("It is sunny")
            # the first words reach Deepgram before the sentence is complete (a chain that
            # waited for whole sentences would never get here: the guard would time out)
            async with asyncio.timeout(10):
                await fake.wait_for_words(1)
            stream.push_text(" in Paris today. The wind is calm and the sky is clear.")
            stream.end_input()
            async for ev in stream:
                frames.append(ev.frame)
    finally:
        await engine.aclose()
    assert [s.text for s in fake.segments] == SENTENCES[:2]  # one request per sentence, in order
    assert fake.segments[0].speaks >= 5  # word by word
    assert fake.authorizations[0] == "Token dg-placeholder" and fake.queries[0]["encoding"] == "linear16"
    audio = rtc.combine_audio_frames(frames)
    assert audio.sample_rate == 24_000
    assert audio.duration == pytest.approx(sum(tone_seconds(s) for s in SENTENCES[:2]), abs=0.05)


async def test_the_audio_carries_when_the_text_first_reached_the_provider(fake: FakeDeepgramSpeak) -> None:
    """The session's ttfb and ttfs read that stamp on the TTS's first frame (livekit's adapter
    and a plugin alone put it there); a provider's frames resampled to the chain's rate (here
    the local voice's 22.05 kHz to Deepgram's 24 kHz) lost it, and ttfs went unreported."""
    engine = _chain(fake, "local,deepgram")
    stamps: list[float | None] = []
    try:
        async with engine.stream() as stream:
            stream.push_text(" ".join(SENTENCES[:2]))
            stream.end_input()
            async for ev in stream:
                stamps.append(ev.frame.userdata.get(USERDATA_TTS_STARTED_TIME))
    finally:
        await engine.aclose()
    assert stamps and stamps[0] is not None and stamps[0] > 0


@pytest.mark.parametrize("fault", ["drop", "stall"])
async def test_a_primary_failing_after_it_has_spoken_hands_the_rest_to_the_next(fake: FakeDeepgramSpeak, fault: str) -> None:
    """Deepgram says the first sentence, then fails the second (a third of the way in, or by
    going quiet past FALLBACK_ATTEMPT_TIMEOUT): the local voice says the second sentence whole
    and the third; livekit's adapter dropped everything after the first sentence."""
    fake.faults.extend(["ok", fault])
    engine = _chain(fake)
    changes: list[tuple[str, bool]] = []
    errors: list[Exception] = []
    member = engine._tts_instances[0]  # type: ignore[attr-defined]
    engine.on("tts_availability_changed", lambda ev: changes.append((type(ev.tts).__module__, ev.available)))
    member.on("error", lambda ev: errors.append(ev.error))
    try:
        audio = await _say(engine, " ".join(SENTENCES))
    finally:
        await engine.aclose()
    assert [s.text for s in fake.segments[:2]] == SENTENCES[:2]
    local = [await local_seconds(s) for s in SENTENCES]
    partial = tone_seconds(SENTENCES[1]) / 3 if fault == "drop" else 0.0
    said = tone_seconds(SENTENCES[0]) + partial + local[1] + local[2]
    assert audio.duration == pytest.approx(said, abs=0.3), (audio.duration, said)
    # Deepgram was marked unavailable (its background probe may have found it well again since)
    assert changes[0] == ("livekit.plugins.deepgram.tts", False) and {c[0] for c in changes} == {"livekit.plugins.deepgram.tts"}
    if fault == "stall":
        assert any("no audio within 1 s" in str(e) or "Timeout" in type(e).__name__ for e in errors), errors


async def test_a_stalled_primary_before_any_audio_is_replaced_for_the_whole_reply(fake: FakeDeepgramSpeak) -> None:
    fake.faults.append("stall")
    engine = _chain(fake)
    try:
        audio = await _say(engine, " ".join(SENTENCES[:2]))
    finally:
        await engine.aclose()
    assert [s.text for s in fake.segments[:1]] == SENTENCES[:1]
    local = sum([await local_seconds(s) for s in SENTENCES[:2]])
    assert audio.duration == pytest.approx(local, abs=0.3)


async def test_a_provider_that_cannot_open_a_stream_is_replaced() -> None:
    """`stream()` itself raising fails the sentence like any other failure (the reply waited
    forever for that sentence's audio)."""
    engine = StreamingSentenceFallbackTTS([_NoStreamTTS(), LocalTTS()], attempt_timeout=1.0)
    try:
        async with asyncio.timeout(10):  # a hang guard, not a measurement
            audio = await _say(engine, SENTENCES[0])
    finally:
        await engine.aclose()
    assert audio.duration == pytest.approx(await local_seconds(SENTENCES[0]), abs=0.3)


@pytest.mark.parametrize("reply", ["...", "👍", " ?! "])
async def test_a_reply_without_a_word_is_a_moment_of_silence(fake: FakeDeepgramSpeak, reply: str) -> None:
    """Nothing to say: no provider is asked, and the reply is not failed for want of audio
    (livekit's stream raised "no audio frames were pushed", after its retries)."""
    engine = _chain(fake)
    try:
        audio = await _say(engine, reply)
    finally:
        await engine.aclose()
    assert fake.segments == [] and fake.words == []
    assert 0.0 < audio.duration <= 0.05


async def test_every_provider_failing_is_one_connection_error(fake: FakeDeepgramSpeak) -> None:
    fake.faults.extend(["drop", "drop", "drop", "drop"])
    settings = SpeechSettings(
        _env_file=None,  # type: ignore[call-arg]
        TTS_PROVIDERS="deepgram",
        DEEPGRAM_API_KEY="dg-placeholder",
        DEEPGRAM_TTS_BASE_URL=fake.base_url,
    )
    first, second = create_tts(settings), create_tts(settings)
    engine = StreamingSentenceFallbackTTS([first, second], attempt_timeout=1.0)
    try:
        with pytest.raises(APIConnectionError, match="every TTS of the chain failed"):
            await _say(engine, SENTENCES[0])
    finally:
        await engine.aclose()
    assert len(fake.segments) >= 2  # both were asked


async def test_text_cut_into_sentences_only_where_one_ends() -> None:
    """Decimals, an ellipsis of its own and a "." still waiting for its next token stay inside
    the sentence; a flush closes the open one."""
    from providers.sentence_script import SentenceScript

    script = SentenceScript()
    for token in ["The rate is 3", ".", "5 %", ". ", "...", " and", " more!", " Ok"]:
        script.add(token)
    assert [(s.text, s.closed) for s in script.sentences] == [
        ("The rate is 3.5 %.", True),
        (" ... and more!", True),
        (" Ok", False),
    ]
    script.end()
    assert script.sentences[-1].closed and script.ended


async def test_text_not_cut_after_an_abbreviation() -> None:
    """A title, an initialism or a numbered list's "1." is not the end of a sentence (each was
    sent on its own, said as a sentence of its own)."""
    from providers.sentence_script import SentenceScript

    script = SentenceScript()
    text = (
        "Dr. Smith met J. R. Jones, e.g. in the U.S. last year. Pick one:\n1. Tea\n2. Coffee. "
        "I have 3. Really vs. maybe? Ask Mr. Li at 5 p.m. today. Done"
    )
    for word in text.split(" "):
        script.add(word + " ")
    assert [s.text.strip() for s in script.sentences if s.closed] == [
        "Dr. Smith met J. R. Jones, e.g. in the U.S. last year.",
        "Pick one:\n1. Tea\n2. Coffee.",
        "I have 3.",
        "Really vs. maybe?",
        "Ask Mr. Li at 5 p.m. today.",
    ]


async def test_text_without_spaces_between_sentences_is_cut_at_full_width_stops() -> None:
    """Chinese and Japanese put no space after "。": the whole reply was one sentence (one
    request, and a failure mid-reply had the next provider say all of it again)."""
    from providers.sentence_script import SentenceScript

    script = SentenceScript()
    for token in ["今天", "天气很好。", "我们去", "公园吧！「好", "的。」", "走"]:
        script.add(token)
    assert [(s.text, s.closed) for s in script.sentences] == [
        ("今天天气很好。", True),
        ("我们去公园吧！", True),
        ("「好的。」", True),
        ("走", False),
    ]


async def test_in_the_pipeline_a_failure_mid_reply_is_reported_and_the_reply_finished(fake: FakeDeepgramSpeak) -> None:
    """The whole agent (VAD, STT, brain on the fake OpenAI server, the chain as its TTS): the
    user hears every sentence, the turn is `completed` with the whole text, and clients are told
    that deepgram failed and the next provider took over (not that the reply was cut)."""
    from agent.worker import load_vad
    from tests.fakes.openai_server import text_reply

    from .agent_fakes import settings
    from .faults_kit import APOLOGY, PipelineRig

    fake.faults.extend(["ok", "drop"])
    extra = {"DEEPGRAM_API_KEY": "dg-placeholder", "DEEPGRAM_TTS_BASE_URL": fake.base_url}
    async with PipelineRig(load_vad(settings()), speed=8.0, stt_providers="local", tts_providers="deepgram,local", speech=extra) as rig:
        rig.server.push(text_reply(" ".join(SENTENCES)))
        first = await rig.turn(limit=60.0)
    assert [s.text for s in fake.segments[:2]] == SENTENCES[:2]
    local = [await local_seconds(s) for s in SENTENCES]
    least = tone_seconds(SENTENCES[0]) + local[1] + local[2]
    assert first.audio_seconds >= least - 0.2, (first.audio_seconds, least)
    assert not any(APOLOGY.lower() in said.lower() for said in first.heard), first.heard
    errors = [e["data"] for e in first.of_type("error")]
    assert [(e["code"], e["fatal"]) for e in errors] == [("unavailable", False)], errors
    assert errors[0]["message"].startswith("deepgram failed"), errors
    assert errors[0]["message"].endswith("the next provider in the chain takes over"), errors
    dones = [e["data"] for e in first.of_type("turn.done")]
    assert [d["reason"] for d in dones] == ["completed"] and dones[0]["text"] == " ".join(SENTENCES), dones


async def test_a_client_interrupt_cuts_a_reply_the_chain_is_streaming(fake: FakeDeepgramSpeak) -> None:
    """Barge-in on the streaming chain inside a real session: the reply is cut, its turn ends
    `interrupted` with only what was heard, the sentences not yet begun are never sent to
    Deepgram, and nothing is left running."""
    import io
    import json

    from agent.simulate import Simulation
    from agent.worker import load_vad
    from brain import InProcessApprovalGate, create_voice_brain

    from .agent_fakes import ScriptedBackend, Step, settings
    from .faults_kit import LoopErrors

    fake.seconds_per_char = 0.065  # about the pace of speech: ~2 s for the first sentence
    # the second sentence gets no audio (within the test): with two sentences in flight at most,
    # the fourth and fifth can only be asked for once the second was said
    fake.faults.extend(["ok", "stall"])
    sentences = [*SENTENCES, "Then the clouds come in from the sea.", "Rain is likely after dark."]
    speech = SpeechSettings(
        _env_file=None,  # type: ignore[call-arg]
        TTS_PROVIDERS="deepgram,local",
        DEEPGRAM_API_KEY="dg-placeholder",
        DEEPGRAM_TTS_BASE_URL=fake.base_url,
    )
    s = settings(speech=speech)
    brain = create_voice_brain(s.brain, backend=ScriptedBackend([Step(text=[" ".join(sentences)])]), approvals=InProcessApprovalGate())
    sim = Simulation(s, vad=load_vad(s), brain=brain, speed=4.0, conversation_id="cut", events=io.StringIO())
    errors = LoopErrors()
    errors.install()
    try:
        await sim.start()
        bridge = sim.voice.bridge
        assert bridge is not None

        def message(kind: str, mid: str, data: dict | None = None) -> str:
            return json.dumps({"v": 1, "id": mid, "type": kind, "data": data or {}})

        await bridge.handle_message("user", message("user.text", "t1", {"text": "what is the weather like"}))
        for _ in range(300):
            if sim.io.sink.current_played() > 1.0:
                break
            await sim.io.mic.play_silence(0.1)
        reply = json.loads(await bridge.handle_message("user", message("agent.interrupt", "i1")))
        assert reply["type"] == "ack", reply
        assert await sim.settle(limit=30)
        await sim.io.mic.play_silence(2.0)
    finally:
        await sim.aclose()
        errors.uninstall()
    [seg] = sim.io.sink.segments
    assert seg.interrupted and 0 < seg.played < seg.pushed
    [turn] = sim.result.turns
    assert turn.outcome == "interrupted"
    # what was heard (livekit's estimate, paced on the wall clock: at 4x it may be nothing yet), never the whole reply
    assert sentences[0].startswith(turn.spoken or ""), turn.spoken
    asked = [x.text for x in fake.segments]
    assert asked == sentences[:3], asked  # the rest never left
    assert errors.items == []
