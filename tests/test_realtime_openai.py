"""Realtime mode end to end: livekit-plugins-openai's RealtimeModel against a local fake server.

Real user speech goes in (faster than real time), the fake's server VAD detects the turn, and
assistant audio + transcript come back through the real plugin and AgentSession. The brain's
tools, approval gate and events are the ones pipeline mode uses.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from agent.realtime import INTERRUPTED_OUTPUT
from brain import ApprovalDecision, tool
from tests.fakes_realtime import CallTool, Fail, Say
from tests.fakes_realtime.harness import RealtimeHarness

pytestmark = pytest.mark.timeout(60)

SENT: list[dict[str, str]] = []


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"Sunny and 21 degrees in {city}"


@tool(requires_approval=True, report="args", approval_prompt="Send an email to {to}?")
def send_email(to: str, body: str) -> str:
    """Send an email."""
    SENT.append({"to": to, "body": body})
    return f"sent to {to}"


def _appended_audio_seconds(h: RealtimeHarness) -> float:
    n = sum(len(base64.b64decode(e["audio"])) for e in h.server.of_type("input_audio_buffer.append"))
    return n / 2 / 24000


async def test_turn_with_audio_in_gives_audio_and_transcript_out() -> None:
    async with RealtimeHarness(tools=[get_weather]) as h:
        h.server.transcripts.append("hello there")
        h.server.script.append(Say("Hi! How can I help you today?", audio_ms=500))
        h.user_says()
        done = await h.turn_done()

        # the brain's tool definitions are the session's function tools, with their schema
        tools = [t for e in h.server.of_type("session.update") for t in e["session"].get("tools") or []]
        assert [t["name"] for t in tools] == ["get_weather"]
        assert tools[0]["parameters"]["properties"]["city"]["type"] == "string"
        assert any(e["session"].get("instructions") == "You are a test assistant." for e in h.server.of_type("session.update"))

        # user audio reached the model (resampled to 24 kHz) and the server VAD found one turn
        assert _appended_audio_seconds(h) >= 2.0
        assert len(h.server.of_type("response.create")) == 0  # the server answered on its own VAD

        started = h.of_type("turn.started")
        assert len(started) == 1 and started[0].turn_id == done.turn_id
        assert started[0].transcript == "hello there"
        finals = [e for e in h.session_events if e.type == "user_input_transcribed" and e.is_final]
        assert [e.transcript for e in finals] == ["hello there"]

        assert done.reason == "completed"
        assert done.text == "Hi! How can I help you today?"
        assert h.texts(done.turn_id) == "Hi! How can I help you today?"
        played = sum(f.samples_per_channel for f in h.sink.frames) / 24000
        assert played == pytest.approx(0.5, abs=0.01)
        assert h.sink.segments == [(pytest.approx(0.5, abs=0.01), False)]
        assert h.errors() == []


async def test_tool_call_runs_through_the_brain_with_approval() -> None:
    SENT.clear()
    async with RealtimeHarness(tools=[send_email, get_weather]) as h:
        call = CallTool("send_email", {"to": "ada@example.com", "body": "hi"}, call_id="call_approve_1")
        h.server.transcripts.append("email ada")
        h.server.script.extend([call, Say("Done, the email is sent.", audio_ms=300)])
        h.user_says()

        await h.wait_until(lambda: bool(h.of_type("approval.requested")))
        request = h.of_type("approval.requested")[0]
        assert request.call_id == "call_approve_1"
        assert request.prompt == "Send an email to ada@example.com?"
        assert SENT == []  # nothing runs before the decision
        assert h.brain.approvals.resolve(request.request_id, ApprovalDecision.approve(by="tester")).value == "ok"

        done = await h.turn_done()
        assert done.reason == "completed"
        assert done.text == "Done, the email is sent."
        assert SENT == [{"to": "ada@example.com", "body": "hi"}]

        kinds = [e.type for e in h.events if e.turn_id == done.turn_id and e.type != "text.delta"]
        assert kinds == ["turn.started", "tool.started", "approval.requested", "approval.resolved", "tool.finished", "turn.done"]
        resolved = h.of_type("approval.resolved")[0]
        assert (resolved.outcome, resolved.decided_by, resolved.call_id) == ("approved", "tester", "call_approve_1")
        finished = h.of_type("tool.finished")[0]
        assert (finished.call_id, finished.status, finished.result) == ("call_approve_1", "ok", "sent to ada@example.com")

        # the model got the tool's output under the same call id, then was asked to go on
        outputs = [e["item"] for e in h.server.of_type("conversation.item.create") if e["item"]["type"] == "function_call_output"]
        assert [(o["call_id"], o["output"]) for o in outputs] == [("call_approve_1", "sent to ada@example.com")]
        assert len(h.server.of_type("response.create")) == 1

        # a rejected call is not run; the model is told so
        h.server.transcripts.append("email bob")
        h.server.script.extend(
            [CallTool("send_email", {"to": "bob@example.com", "body": "x"}, call_id="call_reject_1"), Say("OK, I won't.", audio_ms=200)]
        )
        h.user_says()
        await h.wait_until(lambda: len(h.of_type("approval.requested")) == 2)
        h.brain.approvals.resolve(h.of_type("approval.requested")[1].request_id, ApprovalDecision.reject("not now", by="tester"))
        second = await h.turn_done(2)
        assert second.reason == "completed"
        assert SENT == [{"to": "ada@example.com", "body": "hi"}]
        outputs = [e["item"] for e in h.server.of_type("conversation.item.create") if e["item"]["type"] == "function_call_output"]
        assert outputs[-1]["call_id"] == "call_reject_1"
        assert outputs[-1]["output"].startswith("REJECTED by the user: not now")
        assert h.of_type("tool.finished")[-1].status == "cancelled"


async def test_barge_in_interrupts_the_reply_exactly_once() -> None:
    async with RealtimeHarness() as h:
        long_reply = "Once upon a time there was a very long story that went on and on"
        h.server.transcripts.extend(["tell me a story", "stop"])
        h.server.script.extend([Say(long_reply, audio_ms=4000), Say("Okay.", audio_ms=300)])
        h.user_says()
        await h.agent_speaking()
        h.user_says()  # the user talks over the agent

        await h.turn_done(2)
        first_id, second_id = (e.turn_id for e in h.of_type("turn.started"))
        by_turn = {d.turn_id: d for d in h.done_turns()}
        first, second = by_turn[first_id], by_turn[second_id]
        assert first.reason == "interrupted"
        assert second.reason == "completed" and second.text == "Okay."
        assert [d.turn_id for d in h.done_turns()].count(first.turn_id) == 1
        assert len({d.turn_id for d in h.done_turns()}) == len(h.done_turns()) == 2

        # playback stopped early and the server was told how much of the item was heard
        position, interrupted = h.sink.segments[0]
        assert interrupted and position < 4.0
        truncates = h.server.of_type("conversation.item.truncate")
        assert len(truncates) == 1
        assert 0 < truncates[0]["audio_end_ms"] < 4000


async def test_malformed_server_events_are_reported_and_the_session_goes_on() -> None:
    async with RealtimeHarness() as h:
        h.server.transcripts.extend(["one", "two"])
        h.server.script.extend([Say("First.", audio_ms=200), Say("Second.", audio_ms=200)])
        h.user_says()
        await h.turn_done(1)

        await h.server.send_raw("{not json")
        await h.server.send_raw("[1, 2, 3]")
        await h.server.send_raw(json.dumps({"type": "response.some_future_event", "x": 1}))  # unknown: ignored
        await h.wait_until(lambda: len(h.errors()) >= 2)

        errors = h.errors()
        assert [(e.code, e.provider, e.fatal) for e in errors] == [("protocol", "openai-realtime", False)] * 2
        assert errors[0].message.startswith("openai-realtime sent a malformed message: not JSON")

        h.user_says()
        second = await h.turn_done(2)
        assert (second.reason, second.text) == ("completed", "Second.")
        assert h.server.connections == 1  # no reconnection was needed


def assert_apology_requested(h: RealtimeHarness, scripted: Say, apology: str) -> None:
    """The fake plays `scripted` whatever it is asked: check that the agent asked for the apology."""
    request = h.server.started_by(scripted)
    assert request is not None, "the scripted apology was not started by a response.create from the agent"
    assert apology in request["response"]["instructions"]
    assert request["response"].get("tool_choice") == "none"  # the apology calls no tool
    assert [i for i in h.server.requested_instructions() if apology in i] == [request["response"]["instructions"]]


async def test_abrupt_close_mid_reply_reconnects_apologises_and_goes_on() -> None:
    async with RealtimeHarness(apology="Sorry, I lost you for a moment.") as h:
        h.server.transcripts.extend(["tell me something", "and now?"])
        scripted_apology = Say("Sorry, I lost you for a moment.", audio_ms=300)  # played whatever was asked
        h.server.script.extend(
            [
                Say("Here is a long answer that will be cut", audio_ms=2000, drop_connection_after_chunks=3),
                scripted_apology,
                Say("Now it works.", audio_ms=300),
            ]
        )
        h.user_says()
        broken = await h.turn_done(1)
        assert broken.reason == "error"
        assert h.model.last_close_code == 1006

        errors = h.errors()
        assert [(e.code, e.provider, e.fatal, e.turn_id) for e in errors] == [
            ("unavailable", "openai-realtime", False, broken.turn_id)
        ]

        apology = await h.turn_done(2)
        assert (apology.reason, apology.text) == ("completed", "Sorry, I lost you for a moment.")
        create = h.server.of_type("response.create")
        assert len(create) == 1 and "Sorry, I lost you for a moment." in create[0]["response"]["instructions"]
        assert_apology_requested(h, scripted_apology, "Sorry, I lost you for a moment.")
        assert h.server.connections == 2

        h.user_says()
        after = await h.turn_done(3)
        assert (after.reason, after.text) == ("completed", "Now it works.")


async def test_failed_response_is_reported_and_followed_by_an_apology() -> None:
    async with RealtimeHarness(apology="Sorry, please say that again.") as h:
        h.server.transcripts.extend(["hello", "hello again"])
        scripted_apology = Say("Sorry, please say that again.", audio_ms=200)  # played whatever was asked
        h.server.script.extend([Fail(), scripted_apology, Say("Hi!", audio_ms=200)])
        h.user_says()
        failed = await h.turn_done(1)
        assert failed.reason == "error"
        [error] = h.errors()
        assert (error.code, error.provider, error.fatal, error.turn_id) == ("rate_limited", "openai-realtime", False, failed.turn_id)
        apology = await h.turn_done(2)
        assert (apology.reason, apology.text) == ("completed", "Sorry, please say that again.")
        # the apology was asked for by the agent, after the failed reply (which its own VAD started)
        failed_reply, failed_request = h.server.started[0]
        assert isinstance(failed_reply, Fail) and failed_request is None
        assert_apology_requested(h, scripted_apology, "Sorry, please say that again.")

        h.user_says()
        after = await h.turn_done(3)
        assert (after.reason, after.text) == ("completed", "Hi!")
        assert h.server.connections == 1


async def test_rejected_api_key_is_a_fatal_auth_error() -> None:
    async with RealtimeHarness(api_key="wrong-key", max_retry=0) as h:
        await h.wait_until(lambda: bool(h.errors()))
        [error] = h.errors()
        assert (error.code, error.provider, error.fatal) == ("auth", "openai-realtime", True)
        assert error.message.startswith("openai-realtime: ") and "401" in error.message
        assert "wrong-key" not in error.message
        assert h.server.rejected_connections == 1


async def test_barge_in_during_a_pending_approval_cancels_the_call() -> None:
    SENT.clear()
    async with RealtimeHarness(tools=[send_email]) as h:
        h.server.transcripts.extend(["email ada", "no wait"])
        h.server.script.extend(
            [CallTool("send_email", {"to": "ada@example.com", "body": "hi"}, call_id="call_barge_1"), Say("Okay, stopped.", audio_ms=200)]
        )
        h.user_says()
        await h.wait_until(lambda: bool(h.of_type("approval.requested")))
        h.user_says()  # the user talks instead of answering the approval

        await h.turn_done(2)
        first_id, second_id = (e.turn_id for e in h.of_type("turn.started"))
        by_turn = {d.turn_id: d for d in h.done_turns()}
        assert by_turn[first_id].reason == "interrupted"
        assert (by_turn[second_id].reason, by_turn[second_id].text) == ("completed", "Okay, stopped.")
        resolved = h.of_type("approval.resolved")
        assert [(e.call_id, e.outcome) for e in resolved] == [("call_barge_1", "cancelled")]
        assert [(e.call_id, e.status) for e in h.of_type("tool.finished")] == [("call_barge_1", "cancelled")]
        assert SENT == []
        assert h.brain.approvals.pending() == []  # type: ignore[attr-defined]
        # the model learns the call was cancelled, and no reply to it is requested
        outputs = [e["item"] for e in h.server.of_type("conversation.item.create") if e["item"]["type"] == "function_call_output"]
        assert [(o["call_id"], o["output"].split(":")[0]) for o in outputs] == [("call_barge_1", "CANCELLED")]
        assert h.server.of_type("response.create") == []


@tool
async def slow_lookup(key: str) -> str:
    """Look something up (slowly)."""
    await asyncio.sleep(30)
    return "found"


@pytest.mark.parametrize("pending", ["approval", "tool"])
async def test_a_call_cut_off_by_the_end_of_the_session_is_not_called_a_user_interruption(pending: str) -> None:
    """The session closes (the user left) while a call waits for its approval or runs: it is
    cancelled, and clients and the model are told the session ended, not that the user
    interrupted (they were)."""
    SENT.clear()
    async with RealtimeHarness(tools=[send_email, slow_lookup]) as h:
        call = (CallTool("send_email", {"to": "ada@example.com", "body": "hi"}, call_id="call_c")
                if pending == "approval" else CallTool("slow_lookup", {"key": "k"}, call_id="call_c"))
        h.server.script.extend([call, Say("Done.", audio_ms=200)])
        h.session.generate_reply(user_input="go")
        await h.wait_until(lambda: bool(h.of_type("approval.requested" if pending == "approval" else "tool.started")))
        await h.session.aclose()
        outputs = [e["item"]["output"] for e in h.server.of_type("conversation.item.create")
                   if e["item"]["type"] == "function_call_output"]
    (finished,) = h.of_type("tool.finished")
    expected = "session closed before approval" if pending == "approval" else "session closed"
    assert (finished.call_id, finished.status, finished.error) == ("call_c", "cancelled", expected)
    assert [o.split(";")[0] for o in outputs] == ["CANCELLED: the session ended before this finished"], outputs
    assert SENT == []


async def test_a_turn_cut_off_during_its_approval_ends_while_the_next_reply_plays() -> None:
    """livekit holds the interrupted reply open (and the cancelled call's output back) until the
    next reply has played; the interrupted turn still ends at the barge-in, after its approval
    and call were cancelled, not after the next turn's answer."""
    SENT.clear()
    async with RealtimeHarness(tools=[send_email]) as h:
        h.server.transcripts.extend(["email ada", "no wait"])
        h.server.script.extend(
            [CallTool("send_email", {"to": "ada@example.com", "body": "hi"}, call_id="call_cut_1"),
             Say("Okay, I will not send it.", audio_ms=1000)]
        )
        h.user_says()
        await h.wait_until(lambda: bool(h.of_type("approval.requested")))
        h.user_says()  # the user talks instead of answering the approval

        second = await h.turn_done(2)
        first_id, second_id = (e.turn_id for e in h.of_type("turn.started"))
        first = h.done_turns()[0]
        assert (first.turn_id, first.reason) == (first_id, "interrupted")
        assert (second.turn_id, second.reason, second.text) == (second_id, "completed", "Okay, I will not send it.")
        kinds = [e.type for e in h.events if e.turn_id == first_id]
        assert kinds == ["turn.started", "tool.started", "approval.requested", "approval.resolved", "tool.finished", "turn.done"]
        assert h.of_type("approval.resolved")[0].outcome == "cancelled"
        assert SENT == []
        # the model is still told the call was cancelled (livekit sends it once the reply played)
        await h.server.wait_for(lambda: bool([e for e in h.server.of_type("conversation.item.create")
                                              if e["item"]["type"] == "function_call_output"]))
        outputs = [e["item"] for e in h.server.of_type("conversation.item.create") if e["item"]["type"] == "function_call_output"]
        assert [(o["call_id"], o["output"]) for o in outputs] == [("call_cut_1", INTERRUPTED_OUTPUT)]
        assert h.server.of_type("response.create") == []
        assert len(h.done_turns()) == 2
