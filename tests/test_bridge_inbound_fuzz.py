"""Bad input: every client message gets exactly one well-formed reply, nothing escapes, nothing changes.

Specific cases first, then property-based fuzzing (hypothesis) with random text, random JSON and
mutations of valid messages, against a bridge whose brain has a real approval waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brain import BrainConfig, Turn, create_voice_brain
from bridge import EventBridge, MemoryTransport, attach_event_bridge
from bridge.protocol import SCHEMA_PATH, reply_adapter
from tests.bridge_fakes import FakeClient, FakeRoom, FakeRpcError, wait_until

CONV = "c"
REPLY_SCHEMA = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())["Reply"])


class Controls:
    def __init__(self) -> None:
        self.calls = 0

    async def interrupt(self, sender: str) -> None:
        self.calls += 1

    async def user_text(self, sender: str, text: str) -> None:
        self.calls += 1


class Harness:
    """A bridge on a memory transport, with one approval request pending in a real brain."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.controls = Controls()
        self.loop.run_until_complete(self._setup())

    async def _setup(self) -> None:
        self.brain = create_voice_brain(BrainConfig(_env_file=None, hitl_timeout=3600))
        self.transport = MemoryTransport(["alice", "mallory"])
        self.bridge: EventBridge = attach_event_bridge(
            self.transport, brain=self.brain, agent_name="a", served_identity="alice",
            conversation_id=CONV, controls=self.controls,
        )
        self.turn = asyncio.create_task(self._consume())
        pending = await wait_until(lambda: self.brain.approvals.pending(CONV))
        self.request_id = pending[0].request_id

    async def _consume(self) -> None:
        async for _ in self.brain.stream_reply(Turn("book a table for two", CONV, user_id="alice")):
            pass

    def send(self, sender: str, raw: Any) -> dict[str, Any]:
        reply = self.loop.run_until_complete(self.bridge.handle_message(sender, raw))
        parsed: dict[str, Any] = json.loads(reply)
        REPLY_SCHEMA.validate(parsed)
        reply_adapter.validate_python(parsed)
        return parsed

    def still_pending(self) -> bool:
        return self.brain.approvals.get(self.request_id) is not None

    def close(self) -> None:
        async def end() -> None:
            await self.bridge.aclose()
            self.turn.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.turn

        self.loop.run_until_complete(end())
        self.loop.close()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def valid(rid: str) -> list[dict[str, Any]]:
    return [
        {"v": 1, "id": "m1", "type": "hitl.respond", "data": {"request_id": rid, "decision": "approve"}},
        {"v": 1, "type": "hitl.respond", "data": {"request_id": rid, "decision": "reject", "reason": "no"}},
        {"v": 1, "type": "hitl.respond",
         "data": {"request_id": rid, "decision": "approve", "arguments": {"restaurant": "x", "party_size": 2}}},
        {"v": 1, "type": "agent.interrupt", "data": {}},
        {"v": 1, "type": "user.text", "data": {"text": "hello"}},
        {"v": 1, "id": "s1", "type": "session.sync", "data": {}},
    ]


CASES: list[tuple[str, Any, str]] = [
    ("alice", "{not json", "malformed_json"),
    ("alice", "", "malformed_json"),
    ("alice", b"\xff\xfe", "malformed_json"),
    ("alice", "[" * 4000 + "]" * 4000, "malformed_json"),
    ("alice", "[1, 2]", "invalid_message"),
    ("alice", '"hitl.respond"', "invalid_message"),
    ("alice", '{"type": "agent.interrupt"}', "invalid_message"),
    ("alice", '{"v": 2, "type": "agent.interrupt"}', "unsupported_version"),
    ("alice", '{"v": true, "type": "agent.interrupt"}', "unsupported_version"),
    ("alice", '{"v": "1", "type": "agent.interrupt"}', "unsupported_version"),
    ("alice", '{"v": 1, "type": "agent.dance"}', "unknown_type"),
    ("alice", '{"v": 1, "type": 7}', "invalid_message"),
    ("alice", '{"v": 1, "type": "hitl.respond", "data": {"request_id": 5, "decision": "approve"}}', "invalid_message"),
    ("alice", '{"v": 1, "type": "hitl.respond", "data": {"request_id": "r", "decision": "maybe"}}', "invalid_message"),
    ("alice", '{"v": 1, "type": "hitl.respond", "data": {"request_id": "r", "decision": "approve", "x": 1}}', "invalid_message"),
    ("alice", '{"v": 1, "type": "hitl.respond", "data": {"request_id": "r", "decision": "approve", "arguments": [1]}}', "invalid_message"),
    ("alice", '{"v": 1, "type": "user.text", "data": {"text": ""}}', "invalid_message"),
    ("alice", '{"v": 1, "type": "user.text", "data": {"text": "  \\n "}}', "invalid_message"),
    # Python's parser would take these; JSON has neither, and NaN passes every range check
    ("alice", '{"v": 1, "type": "hitl.respond", "data": {"request_id": "r", "decision": "approve", "arguments": {"n": NaN}}}', "malformed_json"),
    ("alice", '{"v": 1, "type": "hitl.respond", "data": {"request_id": "r", "decision": "approve", "arguments": {"n": -Infinity}}}', "malformed_json"),
    ("alice", '{"v": 1, "type": "user.text", "data": {"text": 42}}', "invalid_message"),
    ("alice", json.dumps({"v": 1, "type": "user.text", "data": {"text": "x" * 9000}}), "too_large"),
    ("alice", '{"v": 1, "type": "hitl.respond", "data": {"request_id": "hitl_nope", "decision": "approve"}}', "unknown_request"),
    ("mallory", '{"v": 1, "type": "agent.interrupt", "data": {}}', "forbidden"),
    ("", '{"v": 1, "type": "agent.interrupt", "data": {}}', "forbidden"),
]


@pytest.mark.parametrize(("sender", "raw", "code"), CASES)
def test_each_bad_message_gets_its_specific_error(harness: Harness, sender: str, raw: Any, code: str) -> None:
    before = harness.controls.calls
    reply = harness.send(sender, raw)
    assert reply["type"] == "error" and reply["data"]["code"] == code, reply
    assert harness.still_pending() and harness.controls.calls == before


def test_forged_decision_for_the_real_request_is_forbidden(harness: Harness) -> None:
    reply = harness.send("mallory", json.dumps(valid(harness.request_id)[0]))
    assert reply["data"]["code"] == "forbidden" and reply["id"] == "m1"
    assert harness.still_pending()


async def test_oversized_rpc_payload_is_refused_before_the_bridge() -> None:
    room = FakeRoom(["alice"])
    b = attach_event_bridge(room, brain=None, agent_name="a", served_identity="alice")
    client = FakeClient(room, "alice")
    with pytest.raises(FakeRpcError):
        await client.send("x" * (16 * 1024))
    reply = await client.send(json.dumps({"v": 1, "type": "user.text", "data": {"text": "y" * 9000}}))
    assert reply["data"]["code"] == "too_large"
    await b.aclose()


# -- property-based fuzzing -------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = ["v", "type", "id", "data", "request_id", "decision", "arguments", "reason", "text"]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid message (for an unknown request id) with one to three random mutations."""
    msg: Any = json.loads(json.dumps(draw(st.sampled_from(valid("hitl_unknown")))))
    for _ in range(draw(st.integers(1, 3))):
        target = msg["data"] if isinstance(msg, dict) and isinstance(msg.get("data"), dict) and draw(st.booleans()) else msg
        op = draw(st.sampled_from(["drop", "set", "add", "retype", "wrap"]))
        if not isinstance(target, dict):
            break
        if op == "drop" and target:
            target.pop(draw(st.sampled_from(sorted(target))), None)
        elif op == "set" and target:
            target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
        elif op == "add":
            target[draw(st.sampled_from(KEYS) | st.text(max_size=6))] = draw(json_values)
        elif op == "retype":
            msg["type"] = draw(st.sampled_from(["hitl.respond", "agent.interrupt", "user.text", "session.sync", "HITL.RESPOND", ""]))
        elif op == "wrap":
            msg = draw(st.sampled_from([[msg], {"msg": msg}, json.dumps(msg)]))
    text = json.dumps(msg)
    if draw(st.integers(0, 9)) == 0:  # sometimes cut it short
        text = text[: draw(st.integers(0, len(text)))]
    return text


messages = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=100),
    json_values.map(json.dumps),
    mutated(),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sender=st.sampled_from(["alice", "mallory", "", "alice "]), raw=messages)
def test_fuzzed_messages_are_always_answered_and_change_nothing(harness: Harness, sender: str, raw: Any) -> None:
    reply = harness.send(sender, raw)  # raises if no valid reply came back
    if reply["type"] == "ack":
        assert sender == "alice" and reply["data"]["type"] in ("agent.interrupt", "user.text", "session.sync")
    else:
        assert reply["data"]["code"] in (
            "too_large", "malformed_json", "invalid_message", "unsupported_version", "unknown_type",
            "forbidden", "unknown_request", "invalid_arguments",
        )
    assert harness.still_pending()
