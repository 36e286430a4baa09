"""Streaming STT: the real livekit-plugins-deepgram against a fake Deepgram server on 127.0.0.1,
in the whole voice pipeline (VAD, turns, brain, local TTS): turns, the stall deadline, the
hand-over in a chain, and `TURN_MODE=stt`."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from providers import SpeechSettings

from .agent_fakes import AUDIO, settings
from .fakes.deepgram_server import FakeDeepgram


@pytest.fixture
async def fake_deepgram() -> AsyncIterator[FakeDeepgram]:
    fake = FakeDeepgram()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.aclose()


SETTLE = 90.0
"""Seconds of silence (audio time, 2.5x faster than real time) the session may take to go quiet:
the fake server recognises with pocketsphinx, which on a loaded 2-core machine finalises JFK's
sentence ~20 audio seconds after it ends, and the reply then plays for ~12 s (a limit of 40 was
exceeded by a few seconds with both cores busy)."""


def _simulation(
    fake: FakeDeepgram, events: io.StringIO, stt_providers: str = "deepgram", turn_mode: str = "vad", **overrides: Any
) -> Any:
    from agent.simulate import Simulation
    from agent.turns import TurnSettings
    from agent.worker import load_vad

    speech = SpeechSettings(
        _env_file=None,  # type: ignore[call-arg]
        STT_PROVIDERS=stt_providers,
        TTS_PROVIDERS="local",
        DEEPGRAM_API_KEY="dg-placeholder",
        DEEPGRAM_BASE_URL=fake.base_url,
    )
    if turn_mode == "vad":
        turn = TurnSettings(_env_file=None, min_endpointing_delay=1.6)  # type: ignore[call-arg]  # JFK's pauses are mid-turn
    else:
        turn = TurnSettings(_env_file=None, mode=turn_mode)  # type: ignore[call-arg]
    s = settings(speech=speech, turn=turn, **overrides)
    # faster than real time: the deadlines are wall-clock seconds, the fake endpoints on audio time
    return Simulation(s, vad=load_vad(s), speed=2.5, conversation_id="stall", events=events)


async def play_and_settle(sim: Any, audio: Any, *, limit: float, fake: FakeDeepgram) -> bool:
    """`agent_fakes.play_and_settle`, but the session is not closed while the fake server still
    owes a final result for speech it received, nor before the session has gone quiet after the
    last final was sent (the fake's decoding lags on a loaded machine, and a transcript arriving
    as the session closes is dropped by livekit: "speech scheduling is paused")."""
    try:
        await sim.start()
        await sim.play(audio)
        for _ in range(10):
            sent = fake.finals_sent
            if not await sim.settle(limit=limit):
                return False
            if not fake.busy and fake.finals_sent == sent:
                return True
            while fake.busy:  # the microphone goes on delivering silence meanwhile
                await sim.io.mic.play_silence(0.1)
        return False
    finally:
        await sim.aclose()


def _envelopes(events: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(x) for x in events.getvalue().splitlines() if x.startswith("{")]


async def test_deepgram_stream_answers_turns(fake_deepgram: FakeDeepgram) -> None:
    """A healthy streaming connection: one connection, the words arrive, no stall is reported."""
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE
    from agent.stream_guard import StallGuardSTT

    events = io.StringIO()
    sim = _simulation(fake_deepgram, events)  # the default deadline (10 s): a healthy provider
    assert isinstance(sim.session.stt, StallGuardSTT)
    assert await play_and_settle(sim, decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE), limit=SETTLE, fake=fake_deepgram)
    assert len(fake_deepgram.connections) == 1
    conn = fake_deepgram.connections[0]
    assert conn.authorization == "Token dg-placeholder" and conn.query["model"] == "nova-3"
    heard = " ".join(sim.result.user_turns).lower()
    assert "country" in heard and "fellow" in heard, heard
    assert sim.result.reply_seconds > 0.5
    assert [e for e in _envelopes(events) if e["type"] == "error"] == []


async def test_stalled_deepgram_connection_is_replaced_and_loses_no_words(fake_deepgram: FakeDeepgram) -> None:
    """The first connection takes the audio and never answers. After the VAD's first segment
    ends the transcript is owed; past the deadline the connection counts as stalled, a new one
    is opened and given the unanswered speech, so the words spoken into the dead connection
    ("and so my fellow americans") still reach the brain, and clients hear of the timeout."""
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE

    fake_deepgram.modes = ["stall"]
    events = io.StringIO()
    # 3 s: short enough to keep the test quick, long enough for the fake's slowest transcription
    sim = _simulation(fake_deepgram, events, provider_timeout=3.0)
    assert await play_and_settle(sim, decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE), limit=SETTLE, fake=fake_deepgram)
    first, *others = fake_deepgram.connections
    # the dead connection was open while "and so my fellow americans" (0.35-2.24 s) was spoken
    assert first.mode == "stall" and first.audio_seconds > 2.5 and first.transcripts == []
    assert len(others) == 1
    assert "fellow" in others[0].transcripts[0], others[0].transcripts  # ...and it was replayed
    heard = " ".join(sim.result.user_turns).lower()
    assert "fellow" in heard and "country" in heard, heard
    errors = [e["data"] for e in _envelopes(events) if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["timeout"], errors
    assert "no transcript within 3 s" in errors[0]["message"]
    assert sim.result.reply_seconds > 0.5


async def test_stalled_provider_in_a_chain_hands_over_to_the_next(fake_deepgram: FakeDeepgram) -> None:
    """STT_PROVIDERS=deepgram,local and Deepgram stalls on every connection: after the first
    stall the chain moves on to the local STT, which is given the unanswered speech, so the
    whole sentence is transcribed; clients hear of the timeout and of Deepgram going away."""
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE

    fake_deepgram.modes = ["stall"] * 10
    events = io.StringIO()
    sim = _simulation(fake_deepgram, events, provider_timeout=3.0, stt_providers="deepgram,local")
    assert await play_and_settle(sim, decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE), limit=SETTLE, fake=fake_deepgram)
    assert all(c.transcripts == [] for c in fake_deepgram.connections)
    heard = " ".join(sim.result.user_turns).lower()
    # the sentence from its first words, spoken into the stalled connection, as pocketsphinx
    # hears them ("and so my fellow americans ... what you can do for your country")
    assert re.search(r"\band \w+ my fellow american", heard) and "what you can do for" in heard, heard
    errors = [e["data"] for e in _envelopes(events) if e["type"] == "error"]
    assert sorted(e["code"] for e in errors) == ["timeout", "unavailable"], errors
    assert any(e["message"].startswith("deepgram,local: no transcript within") for e in errors), errors
    assert any(e["code"] == "unavailable" and "deepgram" in e["message"] for e in errors), errors
    assert sim.result.reply_seconds > 0.5


async def test_failed_provider_in_a_chain_hands_its_unanswered_speech_to_the_next(fake_deepgram: FakeDeepgram) -> None:
    """STT_PROVIDERS=deepgram,local and every Deepgram connection closes with 1011 after 2.5 s of
    audio it never answered. livekit's chain moves on to the local STT by itself, but would give
    it only the audio from then on; the guard hands the new provider the unanswered speech, so
    the words spoken into the failed connection ("and so my fellow americans") are transcribed."""
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE

    fake_deepgram.modes = ["fail"] * 10
    events = io.StringIO()
    sim = _simulation(fake_deepgram, events, stt_providers="deepgram,local")
    assert await play_and_settle(sim, decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE), limit=SETTLE, fake=fake_deepgram)
    first = fake_deepgram.connections[0]
    assert first.mode == "fail" and first.audio_seconds >= 2.5 and first.transcripts == []
    heard = " ".join(sim.result.user_turns).lower()
    assert re.search(r"\band \w+ my fellow american", heard) and "what you can do for" in heard, heard
    errors = [e["data"] for e in _envelopes(events) if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["unavailable"], errors
    assert "deepgram" in errors[0]["message"], errors
    assert sim.result.reply_seconds > 0.5


async def test_failed_provider_recovers_while_the_chain_runs_on_the_next(fake_deepgram: FakeDeepgram) -> None:
    """Deepgram's first connection fails, later ones work: the chain hands over to the local STT
    (with the unanswered speech) and keeps probing Deepgram with the live audio; the probe's
    first transcript makes Deepgram available again. (The probe that livekit's chain opened at
    the failure belonged to the stream the guard closed; the next stream must start its own.)"""
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE
    from providers.deadlines import WrappedSTT

    fake_deepgram.modes = ["fail"]
    events = io.StringIO()
    sim = _simulation(fake_deepgram, events, stt_providers="deepgram,local")
    assert await play_and_settle(sim, decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE), limit=SETTLE, fake=fake_deepgram)
    heard = " ".join(sim.result.user_turns).lower()
    assert "fellow american" in heard and "what you can do for" in heard, heard
    probes = [c for c in fake_deepgram.connections[1:] if c.transcripts]
    assert probes, [(c.mode, c.audio_seconds) for c in fake_deepgram.connections]
    chain = sim.session.stt
    while isinstance(chain, WrappedSTT):
        chain = chain.inner
    assert [status.available for status in chain._status] == [True, True]


async def test_stt_turn_mode_follows_the_providers_endpoints(fake_deepgram: FakeDeepgram) -> None:
    """TURN_MODE=stt: the provider's end of speech ends the turn. This provider waits for 1.5 s
    of quiet, so JFK's two 1 s pauses stay inside one turn, where the default VAD rule (0.86 s)
    answers in them (BENCHMARKS.md, config (d): 2 premature replies on JFK)."""
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE

    fake_deepgram.endpoint = 1.5
    events = io.StringIO()
    sim = _simulation(fake_deepgram, events, turn_mode="stt")
    assert sim.session.turn_detection == "stt"
    assert await play_and_settle(sim, decode_file(AUDIO / "jfk_16k_mono.wav", INPUT_RATE), limit=SETTLE, fake=fake_deepgram)
    assert len(sim.result.user_turns) == 1, sim.result.user_turns
    heard = " ".join(sim.result.user_turns).lower()
    assert "fellow" in heard and "country" in heard, heard
    assert sim.result.reply_seconds > 0.5
    assert [e for e in _envelopes(events) if e["type"] == "error"] == []


WORDS = "hello there my friend"
"""What the quick fake says for every result (no recognition: these tests are about the connection)."""


def _quick_simulation(
    fake: FakeDeepgram, events: io.StringIO, *, reply: str = "Okay.", **overrides: Any
) -> Any:
    """A session on `fake` answering `WORDS` at once, its brain replying `reply`, 4x real time,
    with a 1 s stall deadline (the fake answers in milliseconds)."""
    from agent.simulate import Simulation
    from agent.worker import load_vad
    from brain import BrainConfig, create_voice_brain

    from .agent_fakes import ScriptedBackend, Step

    fake.words = WORDS
    speech = SpeechSettings(
        _env_file=None,  # type: ignore[call-arg]
        STT_PROVIDERS="deepgram",
        TTS_PROVIDERS="local",
        DEEPGRAM_API_KEY="dg-placeholder",
        DEEPGRAM_BASE_URL=fake.base_url,
    )
    s = settings(speech=speech, **{"provider_timeout": 1.0, **overrides})
    brain = create_voice_brain(BrainConfig(_env_file=None), backend=ScriptedBackend([Step(text=[reply])]))  # type: ignore[call-arg]
    return Simulation(s, vad=load_vad(s), brain=brain, speed=4.0, conversation_id="stall", events=events)


def _first_utterance() -> Any:
    from agent.audio_files import decode_file
    from agent.simulate import INPUT_RATE

    return decode_file(AUDIO / "multi_utterance_16k_mono.wav", INPUT_RATE).slice(0.0, 2.3)  # speech 0.03-2.02 s


async def test_a_reconnection_that_stalls_too_is_timed_out_as_well(fake_deepgram: FakeDeepgram) -> None:
    """The first two connections take the audio and never answer, the third works. Each stalled
    connection is caught by the deadline and the next one is given the unanswered speech, so the
    words reach the brain through the third. (The timer that caught the first stall was not
    re-armed for the reconnection: a second stall went unnoticed, and the turn hung, unanswered
    and with no further error, until the provider answered on its own, if ever.)"""
    fake_deepgram.modes = ["stall", "stall"]
    events = io.StringIO()
    sim = _quick_simulation(fake_deepgram, events, provider_max_retry=2)
    # the hang guard: 40 audio seconds are 10 s here; the whole exchange takes about 4
    assert await play_and_settle(sim, _first_utterance(), limit=40.0, fake=fake_deepgram)
    assert [c.mode for c in fake_deepgram.connections] == ["stall", "stall", "ok"]
    assert fake_deepgram.connections[2].transcripts[:1] == [WORDS]  # the replayed speech
    assert sim.result.user_turns == [WORDS]
    assert sim.io.transcript.segments == ["Okay."]
    errors = [e["data"] for e in _envelopes(events) if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["timeout", "timeout"], errors


async def test_a_provider_that_stays_stalled_gives_up_with_an_apology(fake_deepgram: FakeDeepgram) -> None:
    """Every connection takes the audio and never answers. With AGENT_PROVIDER_MAX_RETRY=1 the
    second stall gives up: one recoverable and one final `timeout` envelope, and the user hears
    the STT apology instead of silence. (livekit-agents starts its retry count over after an
    attempt that outlived the connect timeout, which every stalled one does: the guard reopened
    stalled connections forever, a `timeout` envelope each time, and the user heard nothing.)"""
    from agent.config import DEFAULT_STT_APOLOGY

    fake_deepgram.modes = ["stall"] * 20
    events = io.StringIO()
    sim = _quick_simulation(fake_deepgram, events, provider_max_retry=1)
    assert await play_and_settle(sim, _first_utterance(), limit=40.0, fake=fake_deepgram)
    assert sim.result.user_turns == []
    assert sim.io.transcript.segments == [DEFAULT_STT_APOLOGY]
    errors = [e["data"] for e in _envelopes(events) if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["timeout", "timeout"], errors
    assert not any(e["fatal"] for e in errors), errors
    done = [e["data"] for e in _envelopes(events) if e["type"] == "turn.done"]
    assert [d["reason"] for d in done] == ["error"], done
