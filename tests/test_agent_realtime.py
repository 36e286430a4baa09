"""Realtime mode through the agent layer (`AGENT_MODE=realtime`): the same bridge envelopes as
pipeline mode, the worker's realtime branch, and provider failures reported the same way.

Pipeline mode: the agent's real session on recorded speech with livekit-plugins-openai STT/TTS
and the brain's OpenAI backend against a local fake. Realtime mode: `RealtimeVoiceSession` on
livekit-plugins-openai's realtime model against `FakeRealtimeServer`. In both, a client approves
a tool call over the bridge (`hitl.respond`), as a browser would.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agent.worker import load_vad
from brain import tool
from tests.fakes.openai_server import text_reply, tool_reply
from tests.fakes_realtime import Calls, CallTool, Say

from .agent_fakes import settings
from .faults_kit import ANSWER, APOLOGY, TIMEOUT, FaultTransport, PipelineRig, RealtimeRig

pytestmark = pytest.mark.timeout(90)

SENT: list[str] = []


@tool(requires_approval=True, report="args", approval_prompt="Send an email to {to}?")
def send_email(to: str, body: str) -> str:
    """Send an email."""
    SENT.append(to)
    return f"sent to {to}"


@pytest.fixture(scope="module")
def vad():
    return load_vad(settings())


async def _approve_over_the_bridge(transport: FaultTransport) -> dict[str, Any]:
    """Play the client: answer the first hitl.request with hitl.respond (approve)."""
    while not any(e["type"] == "hitl.request" for e in transport.envelopes):  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    request = next(e for e in transport.envelopes if e["type"] == "hitl.request")
    message = {"v": 1, "id": "m1", "type": "hitl.respond",
               "data": {"request_id": request["data"]["request_id"], "decision": "approve"}}
    return dict(json.loads(await transport.deliver("user", json.dumps(message))))


CONTROL = ("user.transcript", "tool.started", "hitl.request", "hitl.resolved", "tool.finished", "turn.done", "error")


def _flow(envelopes: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The envelopes a client acts on, without text deltas and metrics (their count varies)."""
    out: list[tuple[str, Any]] = []
    for e in envelopes:
        if e["type"] not in CONTROL or (e["type"] == "user.transcript" and not e["data"]["final"]):
            continue
        detail = {
            "tool.started": lambda d: (d["tool"], d["arguments"]),
            "hitl.request": lambda d: (d["tool"], d["prompt"], d["for"]),
            "hitl.resolved": lambda d: (d["outcome"], d["by"]),
            "tool.finished": lambda d: (d["tool"], d["status"]),
            "turn.done": lambda d: d["reason"],
            "user.transcript": lambda d: d["text"],
            "error": lambda d: d["code"],
        }[e["type"]](e["data"])
        out.append((e["type"], detail))
    return out


ARGS = {"to": "ada@example.com", "body": "hi"}


async def test_realtime_envelopes_match_pipeline_mode(vad) -> None:
    SENT.clear()
    # pipeline: STT -> brain (tool call, approved by the client) -> TTS
    async with PipelineRig(vad, speed=4.0, tools=[send_email]) as rig:
        rig.server.push(tool_reply(("call_p1", "send_email", ARGS), text="One moment."), text_reply(ANSWER))
        approving = asyncio.ensure_future(_approve_over_the_bridge(rig.transport))
        pipeline = await rig.turn()
        ack_pipeline = await approving
    # realtime: the model calls the same tool, the same gate asks the same client
    async with RealtimeRig(tools=[send_email]) as rig:
        rig.server.script.extend([CallTool("send_email", ARGS, call_id="call_r1"), Say(ANSWER, audio_ms=300)])
        approving = asyncio.ensure_future(_approve_over_the_bridge(rig.transport))
        realtime = await rig.turn()
        ack_realtime = await approving

    assert ack_pipeline["type"] == ack_realtime["type"] == "ack"
    assert SENT == ["ada@example.com", "ada@example.com"]  # ran once in each mode, after approval
    expected = [
        ("user.transcript", "what is the weather in paris"),
        ("tool.started", ("send_email", ARGS)),
        ("hitl.request", ("send_email", "Send an email to ada@example.com?", "user")),
        ("hitl.resolved", ("approved", "user")),
        ("tool.finished", ("send_email", "ok")),
        ("turn.done", "completed"),
    ]
    assert _flow(pipeline.envelopes) == expected
    assert _flow(realtime.envelopes) == expected
    for obs in (pipeline, realtime):
        turn_ids = {e["turn"] for e in obs.envelopes if e["type"] in ("tool.started", "hitl.request", "turn.done")}
        assert len(turn_ids) == 1 and None not in turn_ids  # one turn carries the tool call and its answer
        assert ANSWER in " ".join(obs.heard)
        text = "".join(e["data"]["delta"] for e in obs.envelopes if e["type"] == "agent.text")
        assert ANSWER in text


async def test_provider_error_is_reported_once_with_the_stable_code_in_both_modes(vad) -> None:
    from tests.fakes_realtime.openai_realtime_server import Fail

    async with PipelineRig(vad, speed=8.0) as rig:
        rig.arm("tts", "rate_limit")
        pipeline = await rig.turn()
        reports = list(rig.sim.voice.errors)
    async with RealtimeRig() as rig:
        rig.server.script.extend([Fail(), Say("Sorry, something went wrong on my side.", audio_ms=200)])
        realtime = await rig.turn(expect_turns=2)
        reports += rig.voice.errors

    for obs in (pipeline, realtime):
        [error] = obs.of_type("error")
        assert (error["data"]["code"], error["data"]["fatal"]) == ("rate_limited", False)
        dones = obs.turn_dones()
        assert len(dones[error["turn"]]) == 1 and dones[error["turn"]][0]["data"]["reason"] == "error"
    assert [(r.provider, r.code) for r in reports] == [("openai", "rate_limited"), ("openai-realtime", "rate_limited")]
    assert pipeline.of_type("error")[0]["data"]["message"].startswith("openai: ")
    assert realtime.of_type("error")[0]["data"]["message"].startswith("openai-realtime: ")


async def test_worker_runs_a_realtime_session_in_a_room() -> None:
    """`VoiceWorker.run_session` with AGENT_MODE=realtime on livekit's mock room."""
    from livekit.agents.ipc.mock_room import create_mock_room
    from livekit.agents.testing import fake_job_context

    from agent.realtime_session import RealtimeVoiceSession
    from agent.worker import VoiceWorker
    from providers.realtime import RealtimeSettings
    from tests.fakes_realtime import FakeRealtimeServer

    server = await FakeRealtimeServer().start()
    rt = RealtimeSettings(_env_file=None, openai_api_key="test-key", openai_base_url=server.base_url,
                          max_retry=0, connect_timeout=5.0)
    worker = VoiceWorker(settings(mode="realtime", realtime=rt, greeting_mode="say", greeting="Hello from realtime."))
    server.script.append(Say("Hello from realtime.", audio_ms=200))
    room = create_mock_room()
    try:
        with fake_job_context(room=room) as ctx:
            worker.setup(ctx.proc)
            assert "vad" not in ctx.proc.userdata  # realtime mode loads no local VAD
            ctx.shutdown = lambda reason="": None  # type: ignore[method-assign]
            voice = await asyncio.wait_for(worker.run_session(ctx), 30)
            try:
                assert isinstance(voice, RealtimeVoiceSession)
                assert voice.session.llm is voice.model and voice.session.tts is None and voice.session.stt is None
                methods = [c.args[0] for c in room.local_participant.register_rpc_method.call_args_list]
                assert "voice-agent.control" in methods  # the bridge is on the room
                # the greeting is generated by the model (there is no TTS to say it)
                await server.wait_for(lambda: bool(server.of_type("response.create")), 15)
                create = server.of_type("response.create")[0]
                assert "Hello from realtime." in create["response"]["instructions"]
                # the brain's tools (BRAIN_TOOLS: the example tools) are the session's function tools
                declared = {t["name"] for e in server.of_type("session.update") for t in e["session"].get("tools") or []}
                assert {"get_weather", "book_table"} <= declared
            finally:
                await voice.aclose()  # type: ignore[union-attr]
    finally:
        await server.aclose()
        room.reset_mock()  # the mock keeps every call's arguments (the whole session) alive


def test_agent_mode_is_read_from_the_environment(monkeypatch, tmp_path) -> None:
    from pydantic import ValidationError

    from agent.config import AgentSettings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENT_MODE", "realtime")
    monkeypatch.setenv("REALTIME_PROVIDER", "gemini-live")
    s = AgentSettings()
    assert s.mode == "realtime" and s.realtime.provider == "gemini-live"
    monkeypatch.setenv("AGENT_MODE", "speech-to-speech")
    with pytest.raises(ValidationError, match="mode"):
        AgentSettings()


async def test_a_fatal_model_error_ends_the_session_and_cancels_the_pending_approval() -> None:
    """livekit-agents 1.8 never emits `close` after a fatal realtime error (its `aclose`
    re-raises the model's failure): the session must end anyway, with one fatal `error`, the
    pending approval cancelled as `system:session_closed`, and no stall report after it. A call
    of the same response that was running is cut off as a failure of the turn (it was called
    "turn interrupted", as if the user had talked over it)."""
    @tool(requires_approval=True, report="args", approval_prompt="Send an email to {to}?")
    async def send_email(to: str, body: str) -> str:
        """Send an email."""
        return "sent"

    @tool
    async def slow_lookup(key: str) -> str:
        """Look something up (slowly)."""
        await asyncio.sleep(30)
        return "found"

    async with RealtimeRig(tools=[send_email, slow_lookup]) as rig:
        rig.server.transcripts.append("email ada")
        rig.server.script.append(Calls([CallTool("send_email", {"to": "ada@example.com", "body": "hi"}, call_id="c_fatal"),
                                        CallTool("slow_lookup", {"key": "k"}, call_id="c_running")]))
        rig.input.push_speech(rig.samples, rig.rate, trailing_silence_s=1.0)
        await rig.wait(lambda: any(e["type"] == "hitl.request" for e in rig.transport.envelopes))
        await rig.server.send_event({"type": "error", "error": {
            "type": "insufficient_quota", "code": "insufficient_quota", "message": "You exceeded your current quota"}})
        await rig.wait(rig.voice.closed.is_set)
        await asyncio.sleep(TIMEOUT + 0.5)  # past the turn's stall deadline
        envelopes = rig.transport.envelopes
    errors = [e["data"] for e in envelopes if e["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("rate_limited", True)], errors
    (resolved,) = [e["data"] for e in envelopes if e["type"] == "hitl.resolved"]
    assert (resolved["outcome"], resolved["by"]) == ("cancelled", "system:session_closed")
    assert rig.brain.approvals.pending() == []
    finished = {e.call_id: (e.status, e.error) for e in rig.brain_events if e.type == "tool.finished"}
    assert finished["c_running"] == ("cancelled", "turn failed"), finished
    assert (envelopes[-1]["type"], envelopes[-1]["data"]) == ("session.ended", {"reason": "error"})


async def test_a_rejected_key_is_one_fatal_error_not_one_per_retry() -> None:
    """REALTIME_MAX_RETRY=3 retries the connection; the attempts before the last are logged,
    not reported: clients get one `error` (fatal), and the session ends."""
    rig = RealtimeRig()
    rig.server.api_key = "another-key"
    async with rig:
        await rig.wait(rig.voice.closed.is_set)
        errors = [e["data"] for e in rig.transport.envelopes if e["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("auth", True)], errors
    assert "test-key" not in errors[0]["message"]


async def test_a_rejected_key_while_the_greeting_waits_is_one_fatal_error_and_no_apology() -> None:
    """The greeting (on by default) is a reply in flight while the rejected key is retried:
    still one `error` (fatal), the greeting's turn ends `error`, and no apology for a "lost
    connection" is asked for (it was: two more `error`s, and an apology turn failing in turn)."""
    rig = RealtimeRig(greeting="Hello!")
    rig.server.api_key = "another-key"
    async with rig:
        await rig.wait(lambda: any(e["type"] == "error" and e["data"]["fatal"] for e in rig.transport.envelopes))
        await rig.wait(lambda: not rig.voice.tracker._open)
        assert rig.voice.bridge is not None and await rig.voice.bridge.flush(2.0)
        envelopes = list(rig.transport.envelopes)
    errors = [(e["turn"], e["data"]["code"], e["data"]["fatal"]) for e in envelopes if e["type"] == "error"]
    dones = [(e["turn"], e["data"]["reason"]) for e in envelopes if e["type"] == "turn.done"]
    assert len(dones) == 1 and dones[0][1] == "error", dones
    assert errors == [(dones[0][0], "auth", True)], errors
    assert rig.server.rejected_connections == 4  # the first attempt and REALTIME_MAX_RETRY=3 retries


async def test_barge_in_while_a_plain_function_tool_runs_tells_the_model_it_may_have_happened() -> None:
    """A thread cannot be stopped: as in pipeline mode, the model must not be told the action
    was not done (here it was: the SMS went out after the barge-in)."""
    import threading

    release = threading.Event()
    sent: list[str] = []

    @tool
    def send_sms(to: str) -> str:
        """Send an SMS."""
        release.wait(10)
        sent.append(to)
        return f"sms sent to {to}"

    from tests.fakes_realtime.harness import RealtimeHarness

    async with RealtimeHarness(tools=[send_sms]) as h:
        h.server.transcripts.extend(["text ada", "wait"])
        h.server.script.extend([CallTool("send_sms", {"to": "ada"}, call_id="call_t1"), Say("Okay.", audio_ms=200)])
        h.user_says()
        await h.wait_until(lambda: bool(h.of_type("tool.started")))
        h.user_says()
        await h.wait_until(lambda: bool(h.of_type("tool.finished")))
        release.set()
        await h.wait_until(lambda: any(e["item"]["type"] == "function_call_output"
                                       for e in h.server.of_type("conversation.item.create")))
        outputs = [e["item"]["output"] for e in h.server.of_type("conversation.item.create")
                   if e["item"]["type"] == "function_call_output"]
    (finished,) = h.of_type("tool.finished")
    assert finished.status == "cancelled" and "may still complete" in (finished.error or "")
    assert outputs and outputs[0].startswith("INTERRUPTED") and "may or may not" in outputs[0], outputs


async def test_malformed_tool_arguments_are_refused_not_repaired() -> None:
    """livekit-agents repairs cut-off JSON (`{"amount": 10` runs as amount=10); like pipeline
    mode, the model is told the arguments were not JSON and the tool does not run."""
    from tests.fakes_realtime.harness import RealtimeHarness

    refunds: list[tuple[str, float]] = []

    @tool
    def refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        refunds.append((order_id, amount))
        return "refunded"

    async with RealtimeHarness(tools=[refund]) as h:
        h.server.transcripts.append("refund order A1")
        h.server.script.extend([CallTool("refund", '{"order_id": "A1", "amount": 10', call_id="call_cut"),
                                Say("Sorry, that did not work.", audio_ms=200)])
        h.user_says()
        await h.wait_until(lambda: any(e["item"]["type"] == "function_call_output"
                                       for e in h.server.of_type("conversation.item.create")))
        (output,) = [e["item"]["output"] for e in h.server.of_type("conversation.item.create")
                     if e["item"]["type"] == "function_call_output"]
    assert refunds == []
    assert output.startswith("ERROR: arguments were not valid JSON")
    (finished,) = h.of_type("tool.finished")
    assert (finished.call_id, finished.status) == ("call_cut", "error")


async def test_a_call_to_a_tool_nobody_has_is_shown_to_clients_too() -> None:
    from tests.fakes_realtime.harness import RealtimeHarness

    async with RealtimeHarness(tools=[]) as h:
        h.server.transcripts.append("do the thing")
        h.server.script.extend([CallTool("no_such_tool", {"x": 1}, call_id="call_ghost"), Say("I can't do that.", audio_ms=200)])
        h.user_says()
        await h.wait_until(lambda: bool(h.of_type("tool.finished")))
    (started,) = h.of_type("tool.started")
    (finished,) = h.of_type("tool.finished")
    assert (started.call_id, started.name) == ("call_ghost", "no_such_tool")
    assert finished.status == "error" and "unknown tool 'no_such_tool'" in (finished.error or "")
    assert started.turn_id == finished.turn_id != ""


async def test_a_refused_request_does_not_fail_a_reply_that_goes_on() -> None:
    """A server `error` about some other client event (`conversation_already_has_active_response`)
    mid-reply: clients hear of it, but the reply completes and no apology follows."""
    async with RealtimeRig() as rig:
        rig.server.transcripts.append("hello")
        rig.server.script.extend([Say("A long answer that takes a while to say out loud", audio_ms=1500),
                                  Say("Sorry, something went wrong on my side.", audio_ms=200)])
        rig.input.push_speech(rig.samples, rig.rate, trailing_silence_s=1.0)
        await rig.wait(lambda: rig.session.agent_state == "speaking")
        await rig.server.send_event({"type": "error", "error": {
            "type": "invalid_request_error", "code": "conversation_already_has_active_response",
            "message": "Conversation already has an active response in progress", "event_id": "evt_other"}})
        await rig.wait(lambda: any(e["type"] == "turn.done" for e in rig.transport.envelopes))
        await asyncio.sleep(1.0)
        envelopes = list(rig.transport.envelopes)
    assert [e["data"]["code"] for e in envelopes if e["type"] == "error"] == ["bad_request"]
    dones = [e["data"] for e in envelopes if e["type"] == "turn.done"]
    assert [d["reason"] for d in dones] == ["completed"] and "long answer" in dones[0]["text"]
    assert rig.server.requested_instructions() == []  # no apology requested


async def test_a_drop_while_an_approval_is_pending_cuts_nothing() -> None:
    """The connection drops and recovers while the turn waits for an approval: it owed no
    output, so nothing was cut. No apology (it used to be requested, discarded by the
    reconnection as an empty error turn, then spoken as a turn of its own), the approved call
    runs on the new connection and the turn completes with the answer (it ended `error`)."""
    sent: list[str] = []

    @tool(requires_approval=True, report="args", approval_prompt="Send an email to {to}?")
    async def send_email(to: str, body: str) -> str:
        """Send an email."""
        sent.append(to)
        return f"sent to {to}"

    async with RealtimeRig(tools=[send_email]) as rig:
        rig.server.transcripts.append("email ada")
        rig.server.script.extend([CallTool("send_email", {"to": "ada@x", "body": "hi"}, call_id="c1"),
                                  Say("Email sent.", audio_ms=200)])
        rig.input.push_speech(rig.samples, rig.rate, trailing_silence_s=1.0)
        await rig.wait(lambda: any(e["type"] == "hitl.request" for e in rig.transport.envelopes))
        rig.server.drop_connection()
        await rig.wait(lambda: rig.server.connections == 2)
        await asyncio.sleep(1.0)
        request = next(e for e in rig.transport.envelopes if e["type"] == "hitl.request")
        reply = json.loads(await rig.transport.deliver("user", json.dumps(
            {"v": 1, "id": "m1", "type": "hitl.respond", "data": {"request_id": request["data"]["request_id"], "decision": "approve"}})))
        assert reply["type"] == "ack"
        await rig.wait(lambda: sent == ["ada@x"])
        await rig.wait(lambda: any(e["type"] == "turn.done" for e in rig.transport.envelopes))
        await asyncio.sleep(1.0)  # nothing else may follow
        envelopes = list(rig.transport.envelopes)
    (tool_turn,) = {e["turn"] for e in envelopes if e["type"] in ("tool.started", "hitl.request", "tool.finished")}
    dones = [(e["turn"], e["data"]["reason"], e["data"]["text"]) for e in envelopes if e["type"] == "turn.done"]
    assert dones == [(tool_turn, "completed", "Email sent.")], dones
    assert [e["data"]["status"] for e in envelopes if e["type"] == "tool.finished"] == ["ok"]


async def test_gemini_a_drop_while_an_approval_is_pending_cuts_nothing() -> None:
    """As above with Gemini Live, which answers tool results in a reply of its own: the turn that
    made the call said nothing itself, and that is no failure (it ended `error`, an apology was
    asked for and cut off by the answer, and the answer came as a turn of its own)."""
    sent: list[str] = []

    @tool(requires_approval=True, report="args", approval_prompt="Send an email to {to}?")
    async def send_email(to: str, body: str) -> str:
        """Send an email."""
        sent.append(to)
        return f"sent to {to}"

    async with RealtimeRig(provider="gemini-live", tools=[send_email]) as rig:
        rig.server.transcripts.append("email ada")
        rig.server.script.extend([CallTool("send_email", {"to": "ada@x", "body": "hi"}, call_id="c1"),
                                  Say("Email sent.", audio_ms=200)])
        rig.input.push_speech(rig.samples, rig.rate, trailing_silence_s=1.0)
        await rig.wait(lambda: any(e["type"] == "hitl.request" for e in rig.transport.envelopes))
        rig.server.drop_connection()
        await rig.wait(lambda: len(rig.server.setups) == 2)  # reconnected
        request = next(e for e in rig.transport.envelopes if e["type"] == "hitl.request")
        reply = json.loads(await rig.transport.deliver("user", json.dumps(
            {"v": 1, "id": "m1", "type": "hitl.respond", "data": {"request_id": request["data"]["request_id"], "decision": "approve"}})))
        assert reply["type"] == "ack"
        tracker = rig.voice.tracker
        await rig.wait(lambda: "Email sent." in "".join(e.text for e in rig.brain_events if e.type == "text.delta")
                       and not tracker._open and tracker._held is None)
        assert rig.voice.bridge is not None and await rig.voice.bridge.flush(2.0)
        envelopes = list(rig.transport.envelopes)
    assert sent == ["ada@x"]
    (tool_turn,) = {e["turn"] for e in envelopes if e["type"] in ("tool.started", "hitl.request", "tool.finished")}
    dones = [(e["turn"], e["data"]["reason"], e["data"]["text"]) for e in envelopes if e["type"] == "turn.done"]
    assert dones == [(tool_turn, "completed", "Email sent.")], dones
    assert [i for i in rig.server.requested_texts() if APOLOGY in i] == []  # no apology asked for


@pytest.mark.parametrize("provider", ["openai-realtime", "gemini-live"])
async def test_an_approval_gate_that_raises_fails_the_turn_as_in_pipeline_mode(provider: str) -> None:
    """Pipeline mode: a custom gate that raises fails the turn with an `error` envelope (code
    `internal`) and `turn.done` `error`. Realtime mode too (it used to send no `error`, the
    turn ended `completed`, and the model was told only "An internal error occurred"); the
    model, told the turn failed, says so itself."""
    sent: list[str] = []

    @tool(requires_approval=True, report="args", approval_prompt="Send an email to {to}?")
    async def send_email(to: str, body: str) -> str:
        """Send an email."""
        sent.append(to)
        return "sent"

    def broken_policy(request: Any) -> Any:
        raise KeyError("no such user")

    async with RealtimeRig(provider=provider, tools=[send_email], approval_policy=broken_policy) as rig:
        rig.server.script.extend([CallTool("send_email", {"to": "ada@x", "body": "hi"}, call_id="c_gate"),
                                  Say("Sorry, that did not work.", audio_ms=200)])
        rig.session.generate_reply(user_input="email ada")  # a typed `user.text`
        tracker = rig.voice.tracker
        await rig.wait(lambda: any(e["type"] == "turn.done" for e in rig.transport.envelopes)
                       and not tracker._open and tracker._held is None)
        assert rig.voice.bridge is not None and await rig.voice.bridge.flush(2.0)
        envelopes = list(rig.transport.envelopes)
    assert sent == []
    (tool_turn,) = {e["turn"] for e in envelopes if e["type"] in ("tool.started", "tool.finished")}
    errors = [(e["turn"], e["data"]["code"], e["data"]["fatal"]) for e in envelopes if e["type"] == "error"]
    assert errors == [(tool_turn, "internal", False)]
    dones = [(e["turn"], e["data"]["reason"], e["data"]["text"]) for e in envelopes if e["type"] == "turn.done"]
    assert dones == [(tool_turn, "error", "Sorry, that did not work.")], dones
    if provider == "openai-realtime":
        outputs = [e["item"]["output"] for e in rig.server.of_type("conversation.item.create")
                   if e["item"]["type"] == "function_call_output"]
    else:
        outputs = [r["output"] for m in rig.server.of_key("tool_response") for r in
                   [f["response"] for f in m.get("functionResponses") or m.get("function_responses")]]
    assert [o.split(":")[0] for o in outputs] == ["ERROR"], outputs



async def test_gemini_a_drop_while_the_turn_waits_for_the_answer_to_its_tool_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gemini answers tool results in a reply of its own; the connection drops before it comes,
    and the new connection does not bring it. The turn that made the call was neither told of the
    drop nor marked: clients got no `error`, and once the wait ran out it ended `completed` with
    nothing said. Now the drop is the turn's failure, as for a reply it cuts: reported with the
    turn's id, `turn.done` `error`, and the apology."""
    import agent.realtime

    # the wait for an answer that never comes outlasts the test: only the drop may end the turn
    monkeypatch.setattr(agent.realtime, "CONTINUATION_TIMEOUT", 600.0)

    @tool
    async def check_weather(city: str) -> str:
        """Current weather for a city."""
        return f"sunny in {city}"

    async with RealtimeRig(provider="gemini-live", tools=[check_weather]) as rig:
        rig.server.answer_tool_results = False  # the answer would have come: the drop loses it
        rig.server.script.extend([CallTool("check_weather", {"city": "Paris"}, call_id="fc_drop"), Say(APOLOGY, audio_ms=200)])
        rig.session.generate_reply(user_input="weather in paris")
        tracker = rig.voice.tracker
        await rig.wait(lambda: bool(rig.server.of_key("tool_response")) and tracker._held is not None)
        rig.server.drop_connection()
        await rig.wait(lambda: sum(e["type"] == "turn.done" for e in rig.transport.envelopes) >= 1
                       and not tracker._open and tracker._held is None)
        await rig.wait(lambda: APOLOGY in "".join(e.text for e in rig.brain_events if e.type == "text.delta")
                       and not tracker._open, within=5.0)
        assert rig.voice.bridge is not None and await rig.voice.bridge.flush(2.0)
        envelopes = list(rig.transport.envelopes)
    (tool_turn,) = {e["turn"] for e in envelopes if e["type"] in ("tool.started", "tool.finished")}
    errors = [(e["turn"], e["data"]["code"], e["data"]["fatal"]) for e in envelopes if e["type"] == "error"]
    assert errors == [(tool_turn, "unavailable", False)], errors
    dones = [(e["turn"], e["data"]["reason"], e["data"]["text"]) for e in envelopes if e["type"] == "turn.done"]
    assert dones[0] == (tool_turn, "error", ""), dones
    assert [d[1:] for d in dones[1:]] == [("completed", APOLOGY)], dones
    assert len([i for i in rig.server.requested_texts() if APOLOGY in i]) == 1  # the agent asked for it


async def test_a_reply_let_run_just_before_its_stall_check_gets_the_whole_timeout() -> None:
    """A reply queued behind another (the apology behind a reply still playing after a dropped
    connection) has its stall clock start when livekit lets it run, even when that is just
    before the deadline set while it waited: it is not reported as stalled after a few
    milliseconds of running, only once it has made no progress for the whole timeout."""
    from livekit.agents.voice.speech_handle import SpeechHandle

    from agent.realtime import RealtimeTurnTracker
    from brain import EventHub

    hub = EventHub()
    events: list[Any] = []
    hub.subscribe(events.append)
    tracker = RealtimeTurnTracker(hub, "room-1", apology=None, stall_timeout=1.2)
    handle = SpeechHandle.create()
    turn = tracker.open_turn(handle)  # queued: livekit has not let it run yet
    assert turn.watchdog is not None
    loop = asyncio.get_running_loop()
    check = turn.watchdog.when()
    loop.call_at(check - 0.05, handle._authorize_generation)  # let run 50 ms before the check
    await asyncio.sleep(check - loop.time() + 0.5)
    assert [e.type for e in events] == ["turn.started"]  # it has run for 0.55 s of its 1.2 s
    assert not handle.interrupted

    async def until(predicate: Any) -> None:
        while not predicate():  # noqa: ASYNC110 - no single event to wait on
            await asyncio.sleep(0.02)

    await asyncio.wait_for(until(lambda: handle.interrupted), 5.0)  # it does stall, a whole timeout after it started
    [error] = [e for e in events if e.type == "error"]
    assert (error.code, error.turn_id) == ("timeout", turn.turn.turn_id)
    handle._mark_done()  # (livekit ends the interrupted reply)
    await asyncio.wait_for(until(lambda: events[-1].type == "turn.done"), 5.0)
    assert (events[-1].turn_id, events[-1].reason) == (turn.turn.turn_id, "error")
