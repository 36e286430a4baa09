"""Realtime mode with Gemini Live: livekit-plugins-google against a local fake (TLS) server.

Gemini detects turns server-side and answers tool results on its own, in a new reply: the
agent still reports the tool call and that answer as one brain turn.
"""

from __future__ import annotations

import base64

import pytest

from brain import ApprovalDecision, tool
from tests.fakes_realtime import CallTool, Say
from tests.fakes_realtime.harness import RealtimeHarness

pytestmark = pytest.mark.timeout(60)

BOOKED: list[str] = []


@tool(requires_approval=True, report="args")
def book_table(restaurant: str, party_size: int) -> str:
    """Book a restaurant table."""
    BOOKED.append(restaurant)
    return f"booked {restaurant} for {party_size}"


async def test_gemini_live_turns_tools_and_approvals() -> None:
    BOOKED.clear()
    async with RealtimeHarness(provider="gemini-live", tools=[book_table]) as h:
        h.server.transcripts.extend(["hello", "book chez marie for two"])
        h.server.script.extend(
            [
                Say("Hello! What can I do for you?", audio_ms=400),
                CallTool("book_table", {"restaurant": "Chez Marie", "party_size": 2}, call_id="fc_1"),
                Say("Your table at Chez Marie is booked.", audio_ms=300),
            ]
        )
        h.user_says()
        first = await h.turn_done(1)

        setup = h.server.setups[0]
        assert setup["systemInstruction"]["parts"][0]["text"] == "You are a test assistant."
        [declaration] = setup["tools"][0]["functionDeclarations"]
        assert declaration["name"] == "book_table"
        assert set(declaration["parameters"]["required"]) == {"restaurant", "party_size"}
        # server-side activity detection, and the user's speech interrupts the model
        assert setup["realtimeInputConfig"]["automatic_activity_detection"]["disabled"] is False
        assert setup["realtimeInputConfig"]["activity_handling"] == "START_OF_ACTIVITY_INTERRUPTS"
        sent = sum(len(base64.urlsafe_b64decode(m["audio"]["data"] + "==")) for m in h.server.of_key("realtime_input"))
        assert sent / 2 / 16000 >= 2.0  # real speech went up, resampled to 16 kHz

        assert (first.reason, first.text) == ("completed", "Hello! What can I do for you?")
        assert h.texts(first.turn_id) == "Hello! What can I do for you?"
        assert sum(f.samples_per_channel for f in h.sink.frames) / 24000 == pytest.approx(0.4, abs=0.01)

        h.user_says()
        await h.wait_until(lambda: bool(h.of_type("approval.requested")))
        request = h.of_type("approval.requested")[0]
        assert (request.call_id, request.arguments) == ("fc_1", {"restaurant": "Chez Marie", "party_size": 2})
        assert BOOKED == []
        h.brain.approvals.resolve(request.request_id, ApprovalDecision.approve(by="tester"))

        second = await h.turn_done(2)
        assert (second.reason, second.text) == ("completed", "Your table at Chez Marie is booked.")
        assert BOOKED == ["Chez Marie"]
        kinds = [e.type for e in h.events if e.turn_id == second.turn_id and e.type != "text.delta"]
        assert kinds == ["turn.started", "tool.started", "approval.requested", "approval.resolved", "tool.finished", "turn.done"]
        assert len(h.done_turns()) == 2  # the tool call and Gemini's answer to it are one turn
        [response] = h.server.of_key("tool_response")
        assert response["functionResponses"] == [
            {"id": "fc_1", "name": "book_table", "response": {"output": "booked Chez Marie for 2"}}
        ]

        finals = [e.transcript for e in h.session_events if e.type == "user_input_transcribed" and e.is_final]
        assert finals == ["hello", "book chez marie for two"]


async def test_gemini_live_barge_in_interrupts_the_reply() -> None:
    async with RealtimeHarness(provider="gemini-live") as h:
        h.server.transcripts.extend(["tell me a story", "stop"])
        h.server.script.extend([Say("Once upon a time in a land far away there lived", audio_ms=4000), Say("Okay.", audio_ms=200)])
        h.user_says()
        await h.agent_speaking()
        h.user_says()

        await h.turn_done(2)
        first_id, second_id = (e.turn_id for e in h.of_type("turn.started"))
        by_turn = {d.turn_id: d for d in h.done_turns()}
        assert by_turn[first_id].reason == "interrupted"
        assert (by_turn[second_id].reason, by_turn[second_id].text) == ("completed", "Okay.")
        position, interrupted = h.sink.segments[0]
        assert interrupted and position < 4.0


@tool
def check_weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny in {city}"


def _said(h: RealtimeHarness, words: str) -> bool:
    return words in "".join(e.text for e in h.of_type("text.delta"))


async def test_a_reply_to_new_input_is_not_folded_into_a_turn_waiting_for_its_tool_answer() -> None:
    """Gemini may not answer tool results (the turn is held for that answer). What comes next is
    the answer to new input, a turn of its own: a typed message (`user.text`), or the user's next
    utterance (whose transcript Gemini reports only after the reply to it has begun)."""
    async with RealtimeHarness(provider="gemini-live", tools=[check_weather]) as h:
        h.server.answer_tool_results = False
        h.server.transcripts.extend(["weather in paris", "and in rome", "hello?"])
        h.server.script.extend([CallTool("check_weather", {"city": "Paris"}, call_id="fc_paris"), Say("It is sunny in Paris.", audio_ms=200),
                                CallTool("check_weather", {"city": "Rome"}, call_id="fc_rome"), Say("Rome is sunny too.", audio_ms=200)])
        tracker = h.agent.tracker
        h.user_says()
        await h.wait_until(lambda: len(h.of_type("tool.finished")) == 1 and tracker._held is not None)
        h.session.generate_reply(user_input="hello?")  # what the bridge does with `user.text`
        await h.wait_until(lambda: _said(h, "Paris.") and not tracker._open)
        h.user_says()
        await h.wait_until(lambda: len(h.of_type("tool.finished")) == 2 and tracker._held is not None)
        h.user_says()  # "hello?" again, spoken: Gemini answers the user, not the tool results
        await h.wait_until(lambda: _said(h, "too.") and not tracker._open)
        await h.wait_until(lambda: tracker._held is None)

    tool_turns = [e.turn_id for e in h.of_type("tool.started")]
    started = [e.turn_id for e in h.of_type("turn.started")]
    assert len(started) == len(set(started)) == 4
    assert tool_turns == [started[0], started[2]]
    done = {d.turn_id: (d.reason, d.text) for d in h.done_turns()}
    assert len(h.done_turns()) == 4
    assert [done[t] for t in started] == [("completed", ""), ("completed", "It is sunny in Paris."),
                                          ("completed", ""), ("completed", "Rome is sunny too.")]
    assert [h.texts(t) for t in tool_turns] == ["", ""]


async def test_a_session_without_interruptions_starts_and_keeps_talking_over_the_user() -> None:
    """REALTIME_ALLOW_INTERRUPTIONS=false is Gemini's NO_INTERRUPTION: the session starts (livekit
    refused to start it: its own interruptions must stay on with server-side turn detection) and
    the user's speech does not cut the reply."""
    async with RealtimeHarness(provider="gemini-live", allow_interruptions=False) as h:
        h.server.transcripts.extend(["tell me a story", "wait"])
        story = "Once upon a time in a land far away there lived"
        h.server.script.extend([Say(story, audio_ms=700), Say("Yes?", audio_ms=200)])
        h.user_says()
        await h.agent_speaking()
        h.user_says()  # talks over the agent
        await h.turn_done(2)
        assert h.server.setups[0]["realtimeInputConfig"]["activity_handling"] == "NO_INTERRUPTION"
    first, second = h.done_turns()
    assert (first.reason, first.text) == ("completed", story)
    assert (second.reason, second.text) == ("completed", "Yes?")
    assert h.sink.segments[0] == (pytest.approx(0.7, abs=0.01), False)  # played to the end
