"""Preemptive generation and tools: a reply livekit starts before the user's turn is over.

With preemptive generation on (the default), livekit-agents calls `llm_node` on the first final
transcript, before the end of the turn is decided; if the user goes on talking it throws that
generation away and starts another for the whole turn. The brain runs tools inside `llm_node`,
so a thrown-away generation must run none, publish nothing and leave no trace in memory.

Real `AgentSession`, Silero VAD, the local STT and TTS; the user's words are synthesised with
the local TTS and fed faster than real time.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.audio_files import DecodedAudio
from agent.simulate import INPUT_RATE, Simulation, synthesize_utterance
from agent.turns import TurnSettings
from agent.worker import load_vad
from brain import (
    ApprovalDecision,
    ApprovalRequest,
    InProcessApprovalGate,
    ModelRequest,
    TextChunk,
    ToolCall,
    Turn,
    TurnDone,
    create_voice_brain,
    tool,
)

from .agent_fakes import settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def vad():
    return load_vad(settings())


class NotingBackend:
    """A model that, for each user message, says a few words and calls `note` (no approval) and
    `send_note` (approval) with what the user said; after the results it says "Done."."""

    name = "noting"

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[Any]:
        self.requests.append(request)
        last = request.messages[-1]
        if last.role == "user":
            yield TextChunk("Let me write that down.")
            n = len(self.requests)
            yield ToolCall(f"a{n}", "note", {"text": last.content})
            yield ToolCall(f"b{n}", "send_note", {"text": last.content})
        else:
            yield TextChunk("Done.")

    async def aclose(self) -> None:
        pass


class Notebook:
    def __init__(self) -> None:
        self.noted: list[str] = []
        self.sent: list[str] = []
        self.asked: list[str] = []

        @tool
        def note(text: str) -> str:
            """Write down what the user said."""
            self.noted.append(text)
            return "noted"

        @tool(requires_approval=True, approval_prompt="Send the note?")
        def send_note(text: str) -> str:
            """Send the note to the user's team."""
            self.sent.append(text)
            return "sent"

        self.tools = [note, send_note]

    def approve(self, request: ApprovalRequest) -> ApprovalDecision:
        self.asked.append(request.turn_id)
        return ApprovalDecision.approve(by="user")


def _silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(seconds * INPUT_RATE)


def _envelopes(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


async def _run(
    vad: Any, audio: DecodedAudio, *, min_delay: float, speed: float = 4.0
) -> tuple[Simulation, NotingBackend, Notebook, io.StringIO]:
    book = Notebook()
    backend = NotingBackend()
    s = settings(turn=TurnSettings(_env_file=None, min_endpointing_delay=min_delay, max_endpointing_delay=max(3.0, min_delay)))  # type: ignore[call-arg]
    assert s.turn.preemptive_generation  # the default
    brain = create_voice_brain(s.brain, backend=backend, tools=book.tools, approvals=InProcessApprovalGate(policy=book.approve))
    events = io.StringIO()
    sim = Simulation(s, vad=vad, brain=brain, speed=speed, conversation_id="preemptive", events=events)
    try:
        await sim.start()
        await sim.play(audio)
        assert await sim.settle(limit=30)
    finally:
        await sim.aclose()
    return sim, backend, book, events


async def test_a_discarded_preemptive_generation_runs_no_tool_and_leaves_no_trace(vad) -> None:
    first = await synthesize_utterance("Please write down that I like green tea.")
    second = await synthesize_utterance("And also black coffee.")
    # the user pauses 1.2 s mid-turn: long enough for a final transcript (and so a preemptive
    # generation, which reaches its tools at once), far shorter than the 6 s endpointing delay.
    # (Delays scale with the speed, but an overloaded machine's VAD falls behind in wall time:
    # at 4x with a 3 s delay it had not yet heard the second utterance when the delay, 0.75 s
    # of wall time, ran out, and the turn ended in the pause. 2x and 6 s leave 3 s.)
    audio = DecodedAudio(first.pcm + _silence(1.2) + second.pcm, INPUT_RATE, INPUT_RATE, 1)
    sim, backend, book, events = await _run(vad, audio, min_delay=6.0, speed=2.0)

    discarded = [t for t in sim.result.turns if t.outcome == "discarded"]
    answered = [t for t in sim.result.turns if t.outcome == "completed"]
    # the scenario happened: a generation began on the first words and was thrown away
    assert discarded, [(t.outcome, t.turn.transcript) for t in sim.result.turns]
    assert len(answered) == 1, [(t.outcome, t.turn.transcript) for t in sim.result.turns]
    whole = answered[0].turn.transcript
    # (the words vary with the recogniser's segments: the whole turn is longer than what the
    # thrown-away generation answered)
    assert all(len(whole.split()) > len(t.turn.transcript.split()) for t in discarded), whole

    # the tools ran once, for the whole turn, after it was committed; one approval was asked
    assert book.noted == [whole] and book.sent == [whole]
    assert book.asked == [answered[0].turn.turn_id]

    # clients heard nothing of the thrown-away generation
    env = _envelopes(events)
    gone = {t.turn.turn_id for t in discarded}
    assert not [e for e in env if e.get("turn") in gone], [e for e in env if e.get("turn") in gone]
    done = [e for e in env if e["type"] == "turn.done"]
    assert [(e["turn"], e["data"]["reason"]) for e in done] == [(answered[0].turn.turn_id, "completed")]

    # the answered turn's first request held only its own user message (no trace in memory)
    first_request = next(r for r in backend.requests if r.messages[-1].content == whole)
    assert [m.role for m in first_request.messages] == ["user"]
    assert [m.content for m in sim.brain.history("preemptive") if m.role == "user"] == [whole]


async def test_a_kept_preemptive_generation_runs_its_tools_once_after_the_turn_is_committed(vad) -> None:
    audio = await synthesize_utterance("Please write down that I like green tea.")
    sim, backend, book, events = await _run(vad, audio, min_delay=2.0)

    turns = [t for t in sim.result.turns if t.outcome != "discarded"]  # (an early partial's, if any)
    assert [t.outcome for t in turns] == ["completed"], [(t.outcome, t.turn.transcript) for t in sim.result.turns]
    (kept,) = turns
    assert kept.turn.go_ahead is not None  # it was begun before the turn was committed
    assert book.noted == [kept.turn.transcript] and book.sent == [kept.turn.transcript]
    assert book.asked == [kept.turn.turn_id]
    env = _envelopes(events)
    kinds = [e["type"] for e in env if e.get("turn") == kept.turn.turn_id and e["type"] != "metrics"]
    assert kinds[0] == "agent.text" and kinds[-1] == "turn.done", kinds
    assert "tool.started" in kinds and "hitl.request" in kinds
    assert "".join(e["data"]["delta"] for e in env if e["type"] == "agent.text") == "Let me write that down. Done."
    assert sim.io.transcript.segments and "Done." in " ".join(sim.io.transcript.segments)


@pytest.mark.parametrize("given", [True, False])
async def test_a_turn_waits_for_its_go_ahead_before_any_tool_and_runs_none_if_refused(given: bool) -> None:
    """The brain alone (no LiveKit): a turn's text streams while its go-ahead is pending; no tool
    runs and no approval is asked until it is given; refused, the turn ends `interrupted`."""
    book = Notebook()
    brain = create_voice_brain(settings().brain, backend=NotingBackend(), tools=book.tools,
                               approvals=InProcessApprovalGate(policy=book.approve))
    events: list[object] = []
    brain.subscribe(events.append)
    gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def go_ahead() -> bool:
        return await gate

    turn = Turn("note this", conversation_id="c", go_ahead=go_ahead)
    deltas: list[str] = []

    async def consume() -> None:
        async for d in brain.stream_reply(turn):
            deltas.append(d)

    task = asyncio.create_task(consume())
    for _ in range(50):
        await asyncio.sleep(0)
    assert deltas == ["Let me write that down."]  # the text did not wait
    assert book.noted == [] and book.sent == [] and book.asked == [] and not task.done()
    gate.set_result(given)
    await asyncio.wait_for(task, 5)
    (done,) = [e for e in events if isinstance(e, TurnDone)]
    if given:
        assert book.noted == ["note this"] and book.sent == ["note this"] and book.asked == [turn.turn_id]
        assert done.reason == "completed" and deltas[-1].strip() == "Done."
    else:
        assert book.noted == [] and book.sent == [] and book.asked == []
        assert done.reason == "interrupted" and deltas == ["Let me write that down."]
    await brain.aclose()
