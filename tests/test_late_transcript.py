"""A batch STT whose last segment is recognised after the endpointing delay ran out.

livekit-agents then commits the turn with the words it has, and takes the late words for a turn
of their own, which cuts off the reply to the first part. The agent holds its reply's first words
while a segment of the user's speech is still being recognised: the late words then end the held
reply before any of it is heard, and the whole utterance is answered as one turn.

Real `AgentSession`, Silero VAD and the local TTS; the user's words are synthesised with the local
TTS; the recogniser answers with placeholders, its second answer held back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit.agents import stt

from agent.audio_files import DecodedAudio
from agent.simulate import INPUT_RATE, Simulation, synthesize_utterance
from agent.turns import TurnSettings
from agent.worker import load_vad

from .agent_fakes import play_and_settle, settings

pytestmark = pytest.mark.timeout(120)


class LateSTT(stt.STT):
    """Names each segment it hears ("first part", "second part", ...); from the second segment
    on, it answers `late` wall-clock seconds after it is asked."""

    WORDS = ["first part", "second part", "third part", "fourth part"]

    def __init__(self, late: float) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.late = late
        self.count = 0

    async def _recognize_impl(self, buffer: Any, *, language: Any = None, conn_options: Any = None) -> stt.SpeechEvent:
        index = self.count
        self.count += 1
        if index >= 1:
            await asyncio.sleep(self.late)
        text = self.WORDS[min(index, len(self.WORDS) - 1)]
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[stt.SpeechData(language="en", text=text)]
        )


def _silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(seconds * INPUT_RATE)


async def test_words_recognised_after_the_endpointing_delay_join_the_turn_before_any_reply_audio() -> None:
    first = await synthesize_utterance("Please write down that I like green tea.")
    second = await synthesize_utterance("And also black coffee.")
    # a 1 s pause: two VAD segments (0.5 s of silence ends one), one turn (a 2 s delay)
    audio = DecodedAudio(first.pcm + _silence(1.0) + second.pcm, INPUT_RATE, INPUT_RATE, 1)
    s = settings(turn=TurnSettings(_env_file=None, min_endpointing_delay=2.0))  # type: ignore[call-arg]
    engine = LateSTT(late=3.0)  # wall-clock: at 2x, 3 times the endpointing delay
    sim = Simulation(s, vad=load_vad(s), stt=engine, speed=2.0, conversation_id="late")
    assert await play_and_settle(sim, audio, limit=60)

    assert engine.count == 2, engine.count  # the scenario: two segments, the second one late
    # livekit committed "first part" alone (the late words were not in yet): that turn waited
    # for them and gave its words to the turn they became; nothing was said in between
    assert sim.result.user_turns == ["first part", "second part"]
    outcomes = [(t.outcome, t.turn.transcript) for t in sim.result.turns]
    answered = [t for t in sim.result.turns if t.outcome != "discarded"]  # (a preemptive start)
    assert [(t.outcome, t.turn.transcript) for t in answered] == [("completed", "first part second part")], outcomes
    assert answered[0].audio_started and sim.result.reply_seconds > 0.5
    assert "first part second part" in " ".join(sim.io.transcript.segments)  # the offline brain echoes it
    history = [m.content for m in sim.brain.history("late") if m.role == "user"]
    assert history == ["first part second part"], history


async def test_a_turn_is_answered_as_usual_when_every_segment_is_recognised_in_time() -> None:
    first = await synthesize_utterance("Please write down that I like green tea.")
    audio = DecodedAudio(first.pcm, INPUT_RATE, INPUT_RATE, 1)
    s = settings()
    engine = LateSTT(late=0.0)
    sim = Simulation(s, vad=load_vad(s), stt=engine, speed=2.0, conversation_id="on-time")
    assert await play_and_settle(sim, audio, limit=60)
    assert [(t.outcome, t.turn.transcript) for t in sim.result.turns] == [("completed", "first part")]

