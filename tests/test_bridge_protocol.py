"""Protocol v1: the committed JSON Schema matches the models, and what the bridge publishes matches both.

Also: report levels and the secret scrubber decide what of a tool call leaves the process.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import pytest

from brain import (
    ApprovalRequested,
    ApprovalResolved,
    BrainConfig,
    ErrorEvent,
    ToolFinished,
    ToolStarted,
    Turn,
    TurnDone,
    create_voice_brain,
)
from bridge import MemoryTransport, attach_event_bridge
from bridge.protocol import (
    ENVELOPE_TYPES,
    SCHEMA_PATH,
    envelope_adapter,
    json_schema,
    reply_adapter,
    schema_text,
)
from tests.bridge_fakes import wait_until

CONV = "c1"


def validators() -> dict[str, jsonschema.Draft202012Validator]:
    committed = json.loads(SCHEMA_PATH.read_text())
    return {k: jsonschema.Draft202012Validator(committed[k]) for k in ("AgentEnvelope", "ClientMessage", "Reply")}


def envelopes(t: MemoryTransport) -> list[dict[str, Any]]:
    return [json.loads(s.envelope_json) for s in t.sent]


def test_committed_schema_matches_the_models() -> None:
    assert SCHEMA_PATH.read_text() == schema_text(), "run `python -m bridge schema` and commit the result"
    schema = json_schema()
    mapping = schema["AgentEnvelope"]["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(ENVELOPE_TYPES)
    assert sorted(schema["ClientMessage"]["discriminator"]["mapping"]) == ["agent.interrupt", "hitl.respond", "session.sync", "user.text"]
    jsonschema.Draft202012Validator.check_schema(schema["AgentEnvelope"])


def test_client_messages_need_v_and_type_on_the_wire() -> None:
    """The models default `v` and `type` for building messages in Python; the schema clients
    validate against must require them, as the parser does."""
    v = validators()["ClientMessage"]
    assert v.is_valid({"v": 1, "type": "agent.interrupt"})
    for bad in ({}, {"type": "agent.interrupt"}, {"v": 1, "data": {"text": "hi"}}):
        assert not v.is_valid(bad), bad


async def test_text_that_is_not_valid_unicode_does_not_lose_envelopes() -> None:
    """A lone surrogate (half an emoji) in a prompt or transcript: the envelope still goes out,
    with the character replaced; hitl.request and turn.done must never be dropped."""
    b, t = _bridge()
    b.publish_transcript("caf\udce9 au lait", final=True, turn_id="t")
    b.publish_event(ApprovalRequested(conversation_id=CONV, turn_id="t", request_id="r1", call_id="c2",
                                      name="book_table", prompt="Book it? \ud83d", arguments={"note": "\ud83d"},
                                      report="args", deadline_ms=1, user_id="alice"))
    b.publish_event(TurnDone(conversation_id=CONV, turn_id="t", reason="completed"))
    await b.aclose()
    out = envelopes(t)
    assert [e["type"] for e in out] == ["session.hello", "user.transcript", "hitl.request", "turn.done"]
    assert out[1]["data"]["text"] == "caf? au lait"
    assert out[2]["data"]["prompt"] == "Book it? ?" and out[2]["data"]["arguments"] == {"note": "?"}
    for e in out:
        validators()["AgentEnvelope"].validate(e)


def test_schema_rejects_what_the_models_reject() -> None:
    v = validators()["AgentEnvelope"]
    good = {"v": 1, "seq": 3, "ts": 1, "type": "agent.text", "turn": "t", "data": {"delta": "hi"}}
    assert v.is_valid(good)
    envelope_adapter.validate_python(good)
    for bad in (
        {**good, "seq": 0},
        {**good, "v": 2},
        {**good, "type": "agent.shout"},
        {**good, "data": {"delta": 1}},
        {k: x for k, x in good.items() if k != "seq"},
    ):
        assert not v.is_valid(bad), bad


async def test_everything_published_in_a_session_validates() -> None:
    brain = create_voice_brain(BrainConfig(_env_file=None))
    t = MemoryTransport(["alice"])
    bridge = attach_event_bridge(t, brain=brain, agent_name="assistant", served_identity="alice", conversation_id=CONV)
    bridge.publish_transcript("book a", final=False)
    bridge.publish_transcript("book a table for two and the weather in Paris", final=True, turn_id="t1")

    async def approve() -> None:
        reqs = await wait_until(lambda: [e for e in envelopes(t) if e["type"] == "hitl.request"])
        reply = await t.deliver("alice", json.dumps({"v": 1, "type": "hitl.respond", "data": {
            "request_id": reqs[0]["data"]["request_id"], "decision": "approve"}}))
        assert validators()["Reply"].is_valid(json.loads(reply))

    helper = asyncio.create_task(approve())
    turn = Turn("book a table for two and the weather in Paris", CONV, turn_id="t1", user_id="alice")
    reply = "".join([d async for d in brain.stream_reply(turn)])
    await helper
    bridge.publish_metrics("t1", {"e2e_ms": 812.5, "stt_ms": 120, "model": "offline", "nested": {"a": 1}})
    bridge.publish_error("stt_unavailable", "speech recognition is down", fatal=True)
    await bridge.aclose()

    out = envelopes(t)
    seen = {e["type"] for e in out}
    assert seen >= {"session.hello", "user.transcript", "agent.text", "tool.started", "tool.finished",
                    "hitl.request", "hitl.resolved", "turn.done", "metrics", "error"}
    v = validators()["AgentEnvelope"]
    for e in out:
        v.validate(e)
        envelope_adapter.validate_python(e)
    assert [e["seq"] for e in out] == list(range(1, len(out) + 1))
    assert "".join(e["data"]["delta"] for e in out if e["type"] == "agent.text") == reply
    metrics = next(e for e in out if e["type"] == "metrics")
    assert metrics["turn"] == "t1" and metrics["data"]["e2e_ms"] == 812.5 and metrics["data"]["nested"] == '{"a":1}'


# -- report levels and secrets ----------------------------------------------------------------


def _bridge(overrides: dict[str, str] | None = None) -> tuple[Any, MemoryTransport]:
    brain = create_voice_brain(BrainConfig(_env_file=None))
    t = MemoryTransport(["alice"])
    b = attach_event_bridge(t, brain=brain, agent_name="a", served_identity="alice", report_overrides=overrides)
    return b, t


def _tool_events(report: str) -> list[Any]:
    common = {"conversation_id": CONV, "turn_id": "t", "call_id": "c1", "name": "lookup", "report": report}
    return [
        ToolStarted(**common, arguments={"query": "x", "api_key": "abc123", "nested": {"Password": "hunter2"}}),
        ToolFinished(**common, status="error", result={"access_token": "zzz", "note": "Bearer abcdefghijklmnop"},
                     error="ValueError: bad input sk-abcdefghijklmnopqrst\nTraceback (most recent call last):\n  File x"),
    ]


@pytest.mark.parametrize(
    ("report", "expect"),
    [
        ("none", None),
        ("name", {"args": False, "result": False}),
        ("args", {"args": True, "result": False}),
        ("full", {"args": True, "result": True}),
    ],
)
async def test_report_levels_decide_what_a_tool_shows(report: str, expect: dict[str, bool] | None) -> None:
    b, t = _bridge()
    for ev in _tool_events(report):
        b.publish_event(ev)
    await b.aclose()
    tools = [e for e in envelopes(t) if e["type"].startswith("tool.")]
    if expect is None:
        assert tools == []
        return
    started, finished = tools
    assert started["data"]["tool"] == "lookup" and finished["data"]["status"] == "error"
    if expect["args"]:
        assert started["data"]["arguments"] == {"query": "x", "api_key": "***", "nested": {"Password": "***"}}
    else:
        assert started["data"]["arguments"] is None
    if expect["result"]:
        assert finished["data"]["result"] == {"access_token": "***", "note": "***"}
        assert finished["data"]["error"] == "ValueError: bad input ***"
    else:
        assert finished["data"]["result"] is None and finished["data"]["error"] is None
    raw = "".join(s.envelope_json for s in t.sent)
    for secret in ("abc123", "hunter2", "zzz", "abcdefghijklmnop", "Traceback"):
        assert secret not in raw


async def test_overrides_win_and_none_level_approvals_still_ask_by_name() -> None:
    b, t = _bridge({"lookup": "full", "book_table": "none"})
    b.publish_event(_tool_events("name")[1])
    b.publish_event(ApprovalRequested(conversation_id=CONV, turn_id="t", request_id="r1", call_id="c2",
                                      name="book_table", prompt="Book it?", arguments={"party_size": 2},
                                      report="args", deadline_ms=1))
    b.publish_event(ApprovalResolved(conversation_id=CONV, turn_id="t", request_id="r1", call_id="c2",
                                     name="book_table", outcome="timeout"))
    b.publish_event(ToolFinished(conversation_id=CONV, turn_id="t", call_id="c2", name="book_table",
                                 status="cancelled", report="args"))
    await b.aclose()
    out = envelopes(t)
    assert [e["type"] for e in out] == ["session.hello", "tool.finished", "hitl.request", "hitl.resolved"]
    assert out[1]["data"]["result"] == {"access_token": "***", "note": "***"}
    assert out[2]["data"]["tool"] == "book_table" and out[2]["data"]["arguments"] is None
    assert out[2]["data"]["prompt"] == "Book it?"


async def test_error_events_carry_one_scrubbed_line() -> None:
    b, t = _bridge()
    b.publish_event(ErrorEvent(conversation_id=CONV, turn_id="t", code="auth",
                               message="401 invalid key sk-proj-abcdefghijklmnop\n  at line 3", provider="openai"))
    b.publish_event(TurnDone(conversation_id=CONV, turn_id="t", reason="error"))
    await b.aclose()
    err = [e for e in envelopes(t) if e["type"] == "error"][0]
    assert err["data"] == {"code": "auth", "message": "401 invalid key ***", "fatal": False}
    assert err["turn"] == "t"


async def test_metrics_keep_counts_under_secret_looking_names_but_mask_their_text() -> None:
    """Metrics are numbers, some named like secrets (`llm_token_count`): those stay; text or a
    flag under such a name is masked as in tool results, and a token-shaped value anywhere."""
    b, t = _bridge()
    b.publish_metrics("t", {"llm_token_count": 42, "prompt_tokens": 1.5, "api_key": "abc123", "auth": True,
                            "model": "gpt-x", "note": "sk-abcdefghijklmnopqrst", "nested": {"token": "zzz"}})
    await b.aclose()
    [metrics] = [e for e in envelopes(t) if e["type"] == "metrics"]
    assert metrics["data"] == {"llm_token_count": 42, "prompt_tokens": 1.5, "api_key": "***", "auth": "***",
                               "model": "gpt-x", "note": "***", "nested": '{"token":"***"}'}


def test_unknown_report_override_is_refused() -> None:
    from bridge.redact import ReportPolicy

    with pytest.raises(ValueError, match="lookup"):
        ReportPolicy({"lookup": "everything"})


def test_reply_models_round_trip() -> None:
    from bridge.inbound import ack_json, error_json

    for raw in (ack_json("hitl.respond", "m1", "r1"), error_json("forbidden", "no", None)):
        validators()["Reply"].validate(json.loads(raw))
        reply_adapter.validate_json(raw)


FIXTURE = SCHEMA_PATH.parent / "client" / "fixtures" / "example-session.jsonl"


async def test_recorded_example_session_is_valid_and_current() -> None:
    """The session the JS tests replay (and docs/protocol.md shows) still matches the bridge."""
    from bridge.__main__ import example_session

    v = validators()
    recorded = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    schema_for = {"out": "AgentEnvelope", "in": "ClientMessage", "reply": "Reply"}
    for line in recorded:
        v[schema_for[line["dir"]]].validate(line["msg"])
    fresh = await example_session()
    shape = [(x["dir"], x["msg"]["type"]) for x in recorded]  # type: ignore[index]
    assert [(x["dir"], x["msg"]["type"]) for x in fresh] == shape, "run: python -m bridge example > " + str(FIXTURE)  # type: ignore[index]


def test_python_m_bridge_help_is_help_and_names_its_commands(capsys) -> None:
    """`python -m bridge --help` was an error (exit 2) printing only "schema | example"."""
    from bridge.__main__ import main

    before = SCHEMA_PATH.read_text()
    assert main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert "schema " in out and "example " in out and "docs/protocol.md" in out and err == ""
    assert main([]) == 2  # no command: the same usage, as an error
    assert "usage: python -m bridge schema | example" in capsys.readouterr().err
    assert SCHEMA_PATH.read_text() == before


def test_docs_protocol_examples_validate() -> None:
    """Every concrete JSON example in docs/protocol.md (one message a line) fits the schema."""
    import re

    doc = (SCHEMA_PATH.parents[1] / "docs" / "protocol.md").read_text()
    v = validators()
    checked = 0
    for block in re.findall(r"```jsonc?\n(.*?)```", doc, re.S):
        for line in block.splitlines():
            line = line.strip()
            if not line or line.startswith("//") or "{...}" in line:  # comments, schematic shapes
                continue
            msg = json.loads(line)
            kind = "AgentEnvelope" if "seq" in msg else "Reply" if msg.get("type") in ("ack", "error") else "ClientMessage"
            v[kind].validate(msg)
            checked += 1
    assert checked >= 20, checked


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("GET https://x.test/v1?key=AIzaSyA1234567890abcdefgh&alt=sse failed", "GET https://x.test/v1?key=*** failed"),
        ("Token abcd1234efgh rejected", "Token *** rejected"),
        ("deepgram key 0123456789abcdef0123456789abcdef refused", "deepgram key *** refused"),
        ("Incorrect API key provided: sk-****abcd.", "Incorrect API key provided: ***."),
        ("restricted rk-abcdefgh1234 key", "restricted *** key"),
        ("Token estimation failed", "Token estimation failed"),
        ("a task-force plan for 2 people", "a task-force plan for 2 people"),
        ("could not connect to postgresql://admin:hunter2@db.internal:5432/prod",
         "could not connect to postgresql://admin:***@db.internal:5432/prod"),
        ("upstream said 401 for api_key=AbCdEf123456 (password: hunter2)", "upstream said 401 for api_key=*** (password: ***)"),
        ("invalid: {'username': 'bob', 'password': 'hunter2'}", "invalid: {'username': 'bob', 'password': '***'}"),
        ("header Authorization: Basic dXNlcjpwYXNz", "header Authorization: Basic ***"),
        ("Basic Authentication required", "Basic Authentication required"),
        ("stripe key sk_live_51Habcdefghijkl rejected", "stripe key *** rejected"),
        ("max_tokens: 4096 exceeded", "max_tokens: 4096 exceeded"),
        # a word after "Basic"/"token" does not hide the secret field that follows it
        ("Basic auth_password: hunter2hunter", "Basic auth_password: ***"),
        ("token refresh_token: abcdef123456", "token refresh_token: ***"),
        ("auth-eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.abcdef", "auth-***"),
        ("x_eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.abcdef", "x_***"),
    ],
)
def test_tool_text_loses_every_credential_shape(text: str, kept: str) -> None:
    """Tool errors and results reach clients through the bridge's scrubber: the same shapes as
    the brain's own redaction (provider messages echo masked keys, URLs carry ?key=)."""
    from bridge.redact import scrub_text

    assert scrub_text(text).replace("&alt=sse", "") == kept


def test_keys_masked_alike_keep_both_values() -> None:
    from bridge.redact import scrub

    out = scrub({"sk-abcdefgh12345": 1, "sk-zzzzzzzz99999": 2, "note": "x"})
    assert sorted(out.values(), key=str) == [1, 2, "x"] and "sk-abcdefgh12345" not in str(out)
