"""How each livekit speech's outcome reaches the brain: heard text, merged turns, discarded ones.

The speech handles are stand-ins with the attributes livekit's `SpeechHandle` exposes; the brain
is a real one (offline backend or a scripted one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.turn_tracker import TurnTracker
from brain import BrainConfig, ToolCall, create_voice_brain

from .agent_fakes import ScriptedBackend, Step


@dataclass
class Msg:
    text_content: str
    type: str = "message"
    role: str = "assistant"


@dataclass
class FakeSpeech:
    id: str
    interrupted: bool = False
    scheduled: bool = True
    chat_items: list[Any] = field(default_factory=list)
    callbacks: list[Callable[[Any], None]] = field(default_factory=list)

    def add_done_callback(self, cb: Callable[[Any], None]) -> None:
        self.callbacks.append(cb)

    def done(self) -> None:
        for cb in self.callbacks:
            cb(self)


def _brain(backend: Any = None) -> Any:
    return create_voice_brain(BrainConfig(_env_file=None), backend=backend)  # type: ignore[call-arg]


async def _run(brain: Any, tracker: TurnTracker, text: str, speech: FakeSpeech) -> tuple[Any, str]:
    tracked = tracker.begin(text, speech)
    reply = "".join([d async for d in brain.stream_reply(tracked.turn)])
    return tracked, reply


async def test_interrupted_after_audio_keeps_only_what_was_heard() -> None:
    brain = _brain()
    tracker = TurnTracker(brain, "c1", user_id="alice")
    speech = FakeSpeech("s1", interrupted=True)
    tracked, reply = await _run(brain, tracker, "hello there", speech)
    assert tracked.turn.user_id == "alice"
    heard = reply[:12]
    tracker.audio_started(speech)
    speech.chat_items.append(Msg(heard))
    speech.done()
    assert tracked.outcome == "interrupted" and tracked.spoken == heard
    assistant = [m.content for m in brain.history("c1") if m.role == "assistant"]
    assert assistant == [heard]
    assert tracker.pending_merge is None


async def test_cut_off_before_audio_merges_into_the_next_turn() -> None:
    brain = _brain()
    tracker = TurnTracker(brain, "c1")
    outcomes: list[str] = []
    tracker.on_outcome(lambda t: outcomes.append(t.outcome))
    first = FakeSpeech("s1", interrupted=True, scheduled=True)
    t1, _ = await _run(brain, tracker, "tell me", first)  # (no tool: the offline model echoes)
    first.done()  # no audio ever started
    assert t1.outcome == "merged" and tracker.pending_merge == "tell me"

    second = FakeSpeech("s2", interrupted=True)
    t2, _ = await _run(brain, tracker, "a story", second)
    assert t2.turn.transcript == "tell me a story"
    second.done()  # cut off again, before audio: the merge carries everything said so far
    assert tracker.pending_merge == "tell me a story"

    third = FakeSpeech("s3")
    t3, _ = await _run(brain, tracker, "about cats", third)
    assert t3.turn.transcript == "tell me a story about cats"
    tracker.audio_started(third)
    third.done()
    assert t3.outcome == "completed" and tracker.pending_merge is None
    assert outcomes == ["merged", "merged", "completed"]
    # only the turn that was answered remains in the brain's memory
    assert [m.content for m in brain.history("c1") if m.role == "user"] == ["tell me a story about cats"]


async def test_discarded_preemptive_generation_is_dropped_without_merging() -> None:
    brain = _brain()
    tracker = TurnTracker(brain, "c1")
    preemptive = FakeSpeech("s1", interrupted=True, scheduled=False)
    t1, _ = await _run(brain, tracker, "tell me a", preemptive)
    preemptive.done()
    assert t1.outcome == "discarded" and tracker.pending_merge is None
    final = FakeSpeech("s2")
    t2, _ = await _run(brain, tracker, "tell me a joke", final)
    assert t2.turn.transcript == "tell me a joke"
    assert [m.content for m in brain.history("c1") if m.role == "user"] == ["tell me a joke"]


async def test_a_turn_whose_tool_ran_is_kept_and_not_merged() -> None:
    backend = ScriptedBackend([Step(calls=[ToolCall("c1", "get_weather", {"city": "Oslo"})]), Step(text=["Sunny."])])
    brain = _brain(backend)
    tracker = TurnTracker(brain, "c1")
    speech = FakeSpeech("s1", interrupted=True)
    tracked, _ = await _run(brain, tracker, "weather in Oslo", speech)
    assert tracked.tool_ran
    speech.done()
    # kept with its tool call: merging the words into the next turn would say them twice
    # (and invite the model to run the tool again)
    assert tracked.outcome == "interrupted" and tracker.pending_merge is None
    history = brain.history("c1")
    assert [m.content for m in history if m.role == "user"] == ["weather in Oslo"]
    assert any(m.role == "tool" for m in history)  # the tool's effect is not forgotten
    assert not any(m.role == "assistant" and m.content for m in history)  # but nothing was heard


async def test_a_thread_tool_cut_off_while_running_counts_as_ran() -> None:
    """A plain-function tool cannot be stopped: interrupted while it runs, its call stays in
    memory (with the brain's "may or may not have been carried out"), not forgotten."""
    import asyncio
    import threading

    from brain import make_tool

    started, release = threading.Event(), threading.Event()

    def charge(amount: int) -> str:
        """Charge the card."""
        started.set()
        release.wait(10)
        return "charged"

    backend = ScriptedBackend([Step(calls=[ToolCall("c1", "charge", {"amount": 40})]), Step(text=["Done."])])
    brain = create_voice_brain(BrainConfig(_env_file=None, tools=[]), backend=backend, tools=[make_tool(charge)])  # type: ignore[call-arg]
    tracker = TurnTracker(brain, "c1")
    speech = FakeSpeech("s1", interrupted=True)
    tracked = tracker.begin("charge my card forty", speech)
    task = asyncio.ensure_future(brain.stream_reply(tracked.turn).__anext__())
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    speech.done()
    assert tracked.tool_ran and tracked.outcome == "interrupted" and tracker.pending_merge is None
    results = [m.content for m in brain.history("c1") if m.role == "tool"]
    assert len(results) == 1 and results[0].startswith("INTERRUPTED"), results


async def test_a_generated_greeting_cut_off_before_audio_is_dropped_not_merged() -> None:
    """The greeting prompt is the agent's, not the user's: it must not be prefixed to their words."""
    brain = _brain()
    tracker = TurnTracker(brain, "c1")
    greeting = FakeSpeech("s0", interrupted=True, scheduled=True)
    t0 = tracker.begin("Greet the user warmly.", greeting, scripted=True)
    "".join([d async for d in brain.stream_reply(t0.turn)])
    greeting.done()
    assert t0.outcome == "discarded" and tracker.pending_merge is None
    t1, _ = await _run(brain, tracker, "hello", FakeSpeech("s1"))
    assert t1.turn.transcript == "hello"
    assert [m.content for m in brain.history("c1") if m.role == "user"] == ["hello"]


async def test_speech_without_handle_and_unknown_speech_are_ignored() -> None:
    brain = _brain()
    tracker = TurnTracker(brain, "c1")
    tracked = tracker.begin("hi", None)
    assert tracked.speech_id is None and tracker.find(tracked.turn.turn_id) is tracked
    tracker.audio_started(FakeSpeech("nope"))
    tracker.audio_started(None)
    tracker.close()


def test_a_reply_whose_audio_failed_then_was_cut_off_before_any_audio_reports_nothing_heard() -> None:
    """Its TTS failed, then the user cut in before any audio played (merged into the next turn):
    `turn.done` said the whole reply text, which nobody heard."""
    from types import SimpleNamespace

    from agent.turn_tracker import TrackedTurn
    from agent.voice_session import VoiceSession
    from brain import Turn
    from brain.events import TurnDone

    turn = Turn("what is the weather", "c")
    done = TurnDone(conversation_id="c", turn_id=turn.turn_id, reason="completed", text="It is sunny in Paris.")
    recorded: list[tuple[str, str, str]] = []
    session = SimpleNamespace(  # what the two methods use of a VoiceSession
        _tts_failed={turn.turn_id}, _uncommitted={}, conversation_id="c", bridge=None, _release=lambda _: None,
        brain=SimpleNamespace(record_spoken=lambda *a: recorded.append(a)), latency=SimpleNamespace(claim=lambda _: None, no_reply=lambda _: None),
    )

    def reported(tracked: TrackedTurn) -> tuple[str, str]:
        VoiceSession._on_turn_outcome(session, tracked)  # type: ignore[arg-type]
        out = VoiceSession._as_heard(session, done, tracked)  # type: ignore[arg-type]
        return out.reason, out.text

    merged = TrackedTurn(turn=turn, user_text=turn.transcript, outcome="merged")
    assert reported(merged) == ("error", "")
    assert recorded == []  # the tracker settled a merged turn's memory already
    heard = TrackedTurn(turn=turn, user_text=turn.transcript, audio_started=True, outcome="completed", heard="It is")
    assert reported(heard) == ("error", "It is")
    assert recorded == [("c", turn.turn_id, "It is")]
