"""Backpressure, retries, transports, presence, controls and config of the bridge."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from brain import TextDelta, ToolStarted
from bridge import (
    BridgeConfig,
    BridgeOptions,
    JsonLinesTransport,
    LiveKitRoomTransport,
    MemoryTransport,
    agent_session_start_options,
    attach_event_bridge,
)
from bridge.outbound import OutboundQueue
from tests.bridge_fakes import FakeClient, FakeRoom

CONV = "c"


def envelopes(t: MemoryTransport) -> list[dict[str, Any]]:
    return [json.loads(s.envelope_json) for s in t.sent]


def delta(turn: str, text: str) -> TextDelta:
    return TextDelta(conversation_id=CONV, turn_id=turn, text=text)


class GatedTransport(MemoryTransport):
    """Blocks every send until `gate` is set: a stalled network."""

    def __init__(self, participants: list[str]) -> None:
        super().__init__(participants)
        self.gate = asyncio.Event()

    async def send(self, envelope_json: str, destination: list[str] | None) -> None:
        await self.gate.wait()
        await super().send(envelope_json, destination)


async def test_slow_transport_merges_deltas_without_losing_text_or_events() -> None:
    t = MemoryTransport(["alice"], delay=0.002)
    b = attach_event_bridge(t, brain=None, agent_name="a", served_identity="alice")
    words = [f"w{i} " for i in range(3000)]
    for i, w in enumerate(words):
        b.publish_event(delta("t1", w))  # the producer never waits
        if i % 500 == 0:
            b.publish_metrics("t1", {"i": i})
            await asyncio.sleep(0)
    assert b._queue.stats.peak_bytes < 256 * 1024
    await b.aclose()
    out = envelopes(t)
    assert "".join(e["data"]["delta"] for e in out if e["type"] == "agent.text") == "".join(words)
    assert [e["data"]["i"] for e in out if e["type"] == "metrics"] == list(range(0, 3000, 500))
    assert len([e for e in out if e["type"] == "agent.text"]) < 100  # merged, not one per delta
    assert [e["seq"] for e in out] == list(range(1, len(out) + 1))
    # merging never crosses an event or a turn boundary: text between two metrics stays between them
    kinds = [e["type"] for e in out]
    assert kinds[1] == "agent.text" and kinds[2] == "metrics"


async def test_deltas_of_different_turns_never_merge() -> None:
    t = GatedTransport(["alice"])
    b = attach_event_bridge(t, brain=None, agent_name="a", served_identity="alice")
    for turn, text in [("a", "1"), ("a", "2"), ("b", "3"), ("a", "4")]:
        b.publish_event(delta(turn, text))
    t.gate.set()
    await b.aclose()
    out = [(e["turn"], e["data"]["delta"]) for e in envelopes(t) if e["type"] == "agent.text"]
    assert out == [("a", "12"), ("b", "3"), ("a", "4")]


async def test_failed_publishes_are_retried() -> None:
    t = MemoryTransport(["alice"], fail_next=2)
    b = attach_event_bridge(t, brain=None, agent_name="a", served_identity="alice",
                            options=BridgeOptions(send_attempts=3, retry_base_delay=0.001))
    b.publish_transcript("hi", final=True)
    await b.aclose()
    assert [e["type"] for e in envelopes(t)] == ["session.hello", "user.transcript"]
    assert b.stats.retries == 2 and b.stats.failed == 0


async def test_publish_failure_is_reported_as_error_envelope_and_log(caplog: pytest.LogCaptureFixture) -> None:
    t = MemoryTransport(["alice"])
    b = attach_event_bridge(t, brain=None, agent_name="a", served_identity="alice",
                            options=BridgeOptions(send_attempts=2, retry_base_delay=0.001))
    await b.flush(5)
    t.fail_next = 2  # both attempts for the next envelope fail
    with caplog.at_level(logging.WARNING, logger="bridge"):
        b.publish_transcript("lost", final=True)
        await b.aclose()
    out = envelopes(t)
    assert [e["seq"] for e in out] == [1, 3]  # the gap shows the loss
    assert out[1]["type"] == "error" and out[1]["data"]["code"] == "publish_failed"
    assert "seq 2 (user.transcript)" in out[1]["data"]["message"]
    assert any("seq=2" in r.getMessage() for r in caplog.records)
    assert b.stats.failed == 1


class HangingTransport(MemoryTransport):
    """The first `hangs` sends never complete (a wedged connection); later ones work."""

    def __init__(self, hangs: int) -> None:
        super().__init__(["alice"])
        self.hangs = hangs

    async def send(self, envelope_json: str, destination: list[str] | None) -> None:
        if self.hangs > 0:
            self.hangs -= 1
            await asyncio.Event().wait()
        await super().send(envelope_json, destination)


async def test_a_hung_send_times_out_and_is_retried() -> None:
    t = HangingTransport(hangs=1)
    b = attach_event_bridge(t, brain=None, agent_name="a", served_identity="alice",
                            options=BridgeOptions(send_timeout=0.3, send_attempts=2, retry_base_delay=0.001))
    b.publish_transcript("after the hang", final=True)
    assert await b.flush(5)
    await b.aclose()
    out = envelopes(t)
    assert [e["type"] for e in out] == ["session.hello", "user.transcript"]
    assert b.stats.retries == 1 and b.stats.failed == 0


async def test_stalled_transport_keeps_memory_bounded_and_says_so() -> None:
    t = GatedTransport(["alice"])
    b = attach_event_bridge(t, brain=None, agent_name="a", served_identity="alice",
                            options=BridgeOptions(max_queue_items=8))
    for i in range(50):
        b.publish_metrics(None, {"i": i})
        b.publish_event(delta("t", "x"))  # text is always accepted (merged)
    assert len(b._queue) <= 8 + 8 + 2  # limit + text items + the overflow notice
    t.gate.set()
    await b.aclose()
    out = envelopes(t)
    errors = [e for e in out if e["type"] == "error"]
    assert [e["data"]["code"] for e in errors] == ["queue_overflow"]
    assert "".join(e["data"]["delta"] for e in out if e["type"] == "agent.text") == "x" * 50
    assert b.stats.refused > 0


def test_queue_accounting() -> None:
    q = OutboundQueue(max_items=2, max_bytes=10_000)
    q.put_text("t", 1, "héllo ")
    q.put_text("t", 1, "wörld")
    assert len(q) == 1 and q.stats.merged == 1
    item = q.pop()
    assert item is not None and item.text is not None and item.text.decode() == "héllo wörld"
    assert q.stats.items == 0 and q.stats.bytes == 0
    with pytest.raises(ValueError):
        OutboundQueue(max_items=0)


# -- the LiveKit transport on a fake room -----------------------------------------------------


async def test_livekit_transport_addresses_only_present_audience() -> None:
    room = FakeRoom(["bob"])
    b = attach_event_bridge(room, brain=None, agent_name="a", served_identity="alice", allowed_identities=["sup"])
    b.publish_transcript("nobody here yet", final=True)
    await b.flush(5)
    assert room.local_participant.sends == []  # served participant absent: not broadcast to bob
    room.connect("alice")
    b.publish_transcript("now", final=True)
    await b.flush(5)
    sends = room.local_participant.sends
    assert all(s.destination_identities == ["alice"] and s.topic == "voice-agent.events" for s in sends)
    hello = json.loads(sends[0].text)
    assert hello["type"] == "session.hello" and hello["data"]["client"] == "alice"
    assert hello["seq"] == 2  # seq 1 (the first transcript) was published to nobody
    assert FakeClient(room, "bob").envelopes == []
    await b.aclose()
    assert room.local_participant.rpc_handlers == {}


async def test_served_identity_learnt_after_attaching() -> None:
    room = FakeRoom(["late-user", "other"])
    b = attach_event_bridge(room, brain=None, agent_name="a", served_identity=None)
    client = FakeClient(room, "late-user")
    assert (await client.send({"v": 1, "type": "agent.interrupt"}))["data"]["code"] == "forbidden"
    b.served_identity = "late-user"
    await b.flush(5)
    assert [e["type"] for e in client.envelopes] == ["session.hello"]
    assert FakeClient(room, "other").envelopes == []
    assert (await client.send({"v": 1, "type": "agent.interrupt"}))["data"]["code"] == "unsupported"
    await b.aclose()


async def test_broadcast_mode_and_custom_topic() -> None:
    room = FakeRoom(["alice", "bob"])
    b = attach_event_bridge(room, brain=None, agent_name="a", served_identity="alice", topic="my.topic",
                            options=BridgeOptions(broadcast=True, control_method="my.control"))
    await b.flush(5)
    assert "my.control" in room.local_participant.rpc_handlers
    assert {s.topic for s in room.local_participant.sends} == {"my.topic"}
    assert all(s.destination_identities is None for s in room.local_participant.sends)
    assert len(room.local_participant.sends) == 2  # a hello for each present client
    await b.aclose()


async def test_room_disconnect_cancels_pending_and_rpc_replies_reach_the_caller() -> None:
    from brain import BrainConfig, Turn, create_voice_brain

    room = FakeRoom(["alice"])
    brain = create_voice_brain(BrainConfig(_env_file=None))
    b = attach_event_bridge(LiveKitRoomTransport(room), brain=brain, agent_name="a", served_identity="alice")
    alice = FakeClient(room, "alice")
    task = asyncio.create_task(_consume(brain.stream_reply(Turn("book a table", CONV, user_id="alice"))))
    [req] = await alice.wait_for("hitl.request")
    room.close()
    await asyncio.wait_for(task, 10)
    await b.flush(5)
    [resolved] = alice.of_type("hitl.resolved")
    assert resolved["data"]["outcome"] == "cancelled" and resolved["data"]["by"] == "system:session_closed"
    late = await alice.respond(req["data"]["request_id"], "approve")
    assert late["data"]["code"] == "expired"
    await b.aclose()


async def test_a_session_closed_with_a_reason_ends_with_session_ended_after_everything_else() -> None:
    """How a session ended (the worker shutting down, the user gone, ...) was told to nobody: a
    client saw its approvals cancelled and the agent leave, whatever the reason. `aclose(ended)`
    publishes `session.ended` after the cancelled approval and its tool's end, and nothing after
    it (here the brain's turn goes on; in the agent, livekit has ended it by then)."""
    from brain import BrainConfig, Turn, create_voice_brain
    from bridge.protocol import envelope_adapter

    t = MemoryTransport(["alice"])
    brain = create_voice_brain(BrainConfig(_env_file=None))
    b = attach_event_bridge(t, brain=brain, agent_name="a", served_identity="alice", conversation_id=CONV)
    task = asyncio.create_task(_consume(brain.stream_reply(Turn("book a table", CONV, user_id="alice"))))
    async with asyncio.timeout(10):
        while not any(e["type"] == "hitl.request" for e in envelopes(t)):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    await b.aclose(ended="shutdown")
    await asyncio.wait_for(task, 10)
    out = envelopes(t)
    types = [e["type"] for e in out]
    assert types.index("hitl.resolved") < types.index("tool.finished") < len(types) - 1, types
    assert types.count("session.ended") == 1 and types[-1] == "session.ended", types
    assert out[-1]["data"] == {"reason": "shutdown"} and out[-1]["turn"] is None
    assert [e["seq"] for e in out] == list(range(1, len(out) + 1))
    envelope_adapter.validate_python(out[-1])

    t2 = MemoryTransport(["alice"])
    b2 = attach_event_bridge(t2, brain=None, agent_name="a", served_identity="alice")
    await b2.aclose()  # no reason given (a bridge used on its own): nothing claims why
    assert [e["type"] for e in envelopes(t2)] == ["session.hello"]


async def _consume(gen: Any) -> str:
    return "".join([d async for d in gen])


async def test_new_request_after_the_served_participant_left_is_cancelled_at_once() -> None:
    from brain import ApprovalResolved, BrainConfig, ToolFinished, Turn, create_voice_brain

    room = FakeRoom(["alice"])
    brain = create_voice_brain(BrainConfig(_env_file=None, hitl_timeout=30))
    seen: list[object] = []
    brain.subscribe(seen.append)
    b = attach_event_bridge(room, brain=brain, agent_name="a", served_identity="alice")
    room.disconnect_participant("alice")
    # the bound is a deadlock guard only: what proves "at once" is who resolved it, below
    reply = await asyncio.wait_for(_consume(brain.stream_reply(Turn("book a table", CONV, user_id="alice"))), 10)
    resolved = [(e.outcome, e.decided_by) for e in seen if isinstance(e, ApprovalResolved)]
    assert resolved == [("cancelled", "system:participant_left")]  # not a timeout, not a decision
    assert [e.status for e in seen if isinstance(e, ToolFinished)] == ["cancelled"]
    assert "won't" in reply
    assert brain.approvals.pending(CONV) == []
    await b.aclose()


def test_json_lines_transport_prints_one_envelope_per_line() -> None:
    async def run() -> str:
        buf = io.StringIO()
        b = attach_event_bridge(JsonLinesTransport(buf, participants=["user"]), brain=None, agent_name="a",
                                served_identity="user")
        b.publish_event(delta("t", "hello"))
        await b.aclose()
        return buf.getvalue()

    lines = asyncio.run(run()).splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["session.hello", "agent.text"]


def test_attach_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running asyncio event loop"):
        attach_event_bridge(MemoryTransport(), brain=None, agent_name="a", served_identity=None)


# -- controls: interrupt and typed text -------------------------------------------------------


class RecordingControls:
    def __init__(self, fail: bool = False, hang: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail
        self.hang = hang

    async def interrupt(self, sender: str) -> None:
        if self.hang:
            await asyncio.sleep(60)
        if self.fail:
            raise RuntimeError("boom")
        self.calls.append(("interrupt", sender))

    async def user_text(self, sender: str, text: str) -> None:
        self.calls.append(("user_text", sender, text))


async def test_controls_are_routed_and_acknowledged() -> None:
    ctl = RecordingControls()
    t = MemoryTransport(["alice"])
    b = attach_event_bridge(t, brain=None, agent_name="a", served_identity="alice", controls=ctl)
    ack = json.loads(await t.deliver("alice", '{"v":1,"id":"i1","type":"agent.interrupt","data":{}}'))
    assert ack == {**ack, "type": "ack", "id": "i1", "data": {"type": "agent.interrupt", "request_id": None}}
    ack2 = json.loads(await t.deliver("alice", '{"v":1,"type":"user.text","data":{"text":"what time is it"}}'))
    assert ack2["type"] == "ack"
    forbidden = json.loads(await t.deliver("eve", '{"v":1,"type":"agent.interrupt"}'))
    assert forbidden["data"]["code"] == "forbidden"
    assert ctl.calls == [("interrupt", "alice"), ("user_text", "alice", "what time is it")]
    await b.flush(5)
    hello = envelopes(t)[0]
    assert hello["data"]["capabilities"] == ["hitl", "interrupt", "user_text"]
    await b.aclose()


async def test_typed_text_is_taken_from_the_served_participant_only() -> None:
    """A supervisor's `user.text` used to become the served user's turn: stored in their memory,
    run by tools with their `ToolContext.user_id`, its approvals addressed to them. A supervisor
    may still stop the agent and answer approvals."""
    ctl = RecordingControls()
    t = MemoryTransport(["alice", "supervisor"])
    b = attach_event_bridge(t, brain=None, agent_name="a", served_identity="alice", controls=ctl,
                            allowed_identities=["supervisor"])
    refused = json.loads(await t.deliver("supervisor", '{"v":1,"id":"s1","type":"user.text","data":{"text":"refund it"}}'))
    assert refused["type"] == "error" and refused["id"] == "s1" and refused["data"]["code"] == "forbidden"
    assert "serves" in refused["data"]["message"]
    stop = json.loads(await t.deliver("supervisor", '{"v":1,"type":"agent.interrupt"}'))
    typed = json.loads(await t.deliver("alice", '{"v":1,"type":"user.text","data":{"text":"hello"}}'))
    assert stop["type"] == "ack" and typed["type"] == "ack"
    assert ctl.calls == [("interrupt", "supervisor"), ("user_text", "alice", "hello")]
    await b.aclose()


@pytest.mark.parametrize(("controls", "code"), [(None, "unsupported"), (RecordingControls(fail=True), "internal"),
                                                (RecordingControls(hang=True), "internal")])
async def test_control_failures_are_reported_to_the_sender(controls: Any, code: str) -> None:
    t = MemoryTransport(["alice"])
    b = attach_event_bridge(t, brain=None, agent_name="a", served_identity="alice", controls=controls,
                            options=BridgeOptions(control_timeout=0.05))
    reply = json.loads(await t.deliver("alice", '{"v":1,"type":"agent.interrupt","data":{}}'))
    assert reply["type"] == "error" and reply["data"]["code"] == code
    await b.aclose()


# -- configuration ----------------------------------------------------------------------------


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_ALLOWED_IDENTITIES", "sup, ops ,")
    monkeypatch.setenv("BRIDGE_REPORT_OVERRIDES", "get_weather=full, book_table=none")
    monkeypatch.setenv("BRIDGE_TOPIC", "x.events")
    cfg = BridgeConfig(_env_file=None)
    kw = cfg.attach_kwargs()
    assert kw["allowed_identities"] == ("sup", "ops") and kw["topic"] == "x.events"
    assert kw["report_overrides"] == {"get_weather": "full", "book_table": "none"}
    assert cfg.session_start_options() == {"session_host": False}
    monkeypatch.setenv("BRIDGE_REPORT_OVERRIDES", "get_weather=loud")
    with pytest.raises(ValidationError, match="BRIDGE_REPORT_OVERRIDES"):
        BridgeConfig(_env_file=None)


def test_agent_session_broadcast_toggle_exists_in_livekit_agents() -> None:
    from livekit.agents import AgentSession

    assert "session_host" in inspect.signature(AgentSession.start).parameters
    assert agent_session_start_options() == {"session_host": False}
    assert agent_session_start_options(True) == {"session_host": True}


async def test_tool_events_of_other_conversations_are_ignored() -> None:
    t = MemoryTransport(["alice"])
    b = attach_event_bridge(t, brain=None, agent_name="a", served_identity="alice", conversation_id=CONV)
    b.publish_event(ToolStarted(conversation_id="other", turn_id="t", call_id="c", name="x", arguments={}, report="full"))
    await b.aclose()
    assert [e["type"] for e in envelopes(t)] == ["session.hello"]
