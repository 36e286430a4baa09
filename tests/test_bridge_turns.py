"""Ordering and exactly-once `turn.done` through completed, interrupted and failed turns."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from brain import (
    BrainConfig,
    ModelRequest,
    TextChunk,
    TextDelta,
    Turn,
    TurnDone,
    UnavailableError,
    VoiceBrain,
    create_voice_brain,
)
from bridge import MemoryTransport, attach_event_bridge
from tests.bridge_fakes import wait_until

CONV = "c"


class FlakyBackend:
    """Says two words, then fails like a provider outage would."""

    name = "flaky"

    async def stream(self, request: ModelRequest) -> AsyncIterator[Any]:
        yield TextChunk("Let me ")
        await asyncio.sleep(0)
        yield TextChunk("see")
        raise UnavailableError("upstream 503", provider="flaky")

    async def aclose(self) -> None:
        return None


def envelopes(t: MemoryTransport) -> list[dict[str, Any]]:
    return [json.loads(s.envelope_json) for s in t.sent]


def check_turn_invariants(out: list[dict[str, Any]]) -> dict[str, str]:
    """Gapless seq; one turn.done per turn, after every other envelope of that turn. Returns reasons."""
    assert [e["seq"] for e in out] == list(range(1, len(out) + 1))
    done: dict[str, str] = {}
    for e in out:
        turn = e["turn"]
        if turn is None:
            continue
        assert turn not in done, f"{e['type']} after turn.done of {turn}"
        if e["type"] == "turn.done":
            done[turn] = e["data"]["reason"]
    return done


async def test_completed_interrupted_and_failed_turns_each_end_once() -> None:
    brain = create_voice_brain(BrainConfig(_env_file=None))
    flaky = VoiceBrain(FlakyBackend(), settings=brain.settings)
    t = MemoryTransport(["alice"])
    bridge = attach_event_bridge(t, brain=brain, agent_name="a", served_identity="alice", conversation_id=CONV)
    unsubscribe = flaky.subscribe(bridge.publish_event)  # a second brain feeding the same bridge

    completed = [d async for d in brain.stream_reply(Turn("hello there", CONV, turn_id="t1"))]
    async with contextlib.aclosing(brain.stream_reply(Turn("tell me a long story", CONV, turn_id="t2"))) as gen:
        async for _ in gen:
            break  # barge-in after the first delta
    failed = [d async for d in flaky.stream_reply(Turn("anything", CONV, turn_id="t3"))]
    # an interrupted turn that was waiting for approval
    task = asyncio.create_task(_drain(brain.stream_reply(Turn("book a table", CONV, turn_id="t4", user_id="alice"))))
    await wait_until(lambda: any(e["type"] == "hitl.request" for e in envelopes(t)))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # late or repeated events for finished turns change nothing
    bridge.publish_event(TurnDone(conversation_id=CONV, turn_id="t1", reason="error"))
    bridge.publish_event(TextDelta(conversation_id=CONV, turn_id="t2", text="too late"))
    unsubscribe()
    await bridge.aclose()

    out = envelopes(t)
    reasons = check_turn_invariants(out)
    assert reasons == {"t1": "completed", "t2": "interrupted", "t3": "error", "t4": "interrupted"}
    texts = {tid: "".join(e["data"]["delta"] for e in out if e["type"] == "agent.text" and e["turn"] == tid)
             for tid in reasons}
    assert texts["t1"] == "".join(completed)
    assert texts["t3"] == "".join(failed) and texts["t3"].startswith("Let me see")
    assert "too late" not in texts["t2"]
    t3 = [e["type"] for e in out if e["turn"] == "t3"]
    assert t3.index("error") < t3.index("turn.done")
    t4 = [e for e in out if e["turn"] == "t4"]
    assert [e["type"] for e in t4][-3:] == ["hitl.resolved", "tool.finished", "turn.done"]
    assert t4[-3]["data"]["outcome"] == "cancelled" and t4[-2]["data"]["status"] == "cancelled"


async def _drain(gen: AsyncIterator[str]) -> None:
    async for _ in gen:
        pass


async def test_many_turns_keep_seq_gapless_and_order() -> None:
    brain = create_voice_brain(BrainConfig(_env_file=None))
    t = MemoryTransport(["alice"], delay=0.0005)  # slow enough that deltas merge
    bridge = attach_event_bridge(t, brain=brain, agent_name="a", served_identity="alice", conversation_id=CONV)
    replies = {}
    for i in range(20):
        tid = f"t{i}"
        text = "what is the weather in Oslo" if i % 3 == 0 else f"message number {i}"
        bridge.publish_transcript(text, final=True, turn_id=tid)
        replies[tid] = "".join([d async for d in brain.stream_reply(Turn(text, CONV, turn_id=tid))])
    await bridge.aclose()
    out = envelopes(t)
    reasons = check_turn_invariants(out)
    assert reasons == {f"t{i}": "completed" for i in range(20)}
    for tid, reply in replies.items():
        got = "".join(e["data"]["delta"] for e in out if e["type"] == "agent.text" and e["turn"] == tid)
        assert got == reply
        first = next(e["type"] for e in out if e["turn"] == tid)
        assert first == "user.transcript"
