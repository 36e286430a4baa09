"""Provider wire details: what exactly each SDK sends and how odd streams are handled."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from brain import Turn, tool
from brain.events import ErrorEvent, ToolFinished
from tests.fakes import Chunk, FakeGeminiServer, FakeOpenAIServer, Stream
from tests.fakes import gemini_server as gm
from tests.fakes import openai_server as oa
from tests.fakes.brain_kits import EventLog, GeminiKit, OpenAIKit, clean_env, open_kit, reply

# google-genai subclasses aiohttp.ClientSession, which aiohttp deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)


@pytest.fixture
async def openai_kit() -> AsyncIterator[OpenAIKit]:
    async with open_kit("openai") as k:
        assert isinstance(k, OpenAIKit)
        yield k


@pytest.fixture
async def gemini_kit() -> AsyncIterator[GeminiKit]:
    async with open_kit("gemini") as k:
        assert isinstance(k, GeminiKit)
        yield k


@tool
def lookup(key: str, limit: int = 3) -> str:
    """Look a key up."""
    return f"{key}:{limit}"


# -- OpenAI ------------------------------------------------------------------------------------


async def test_openai_tools_and_split_interleaved_arguments(openai_kit: OpenAIKit) -> None:
    server = openai_kit.server
    assert isinstance(server, FakeOpenAIServer)
    server.push(
        oa.tool_reply(("call_a", "lookup", {"key": "alpha", "limit": 1}), ("call_b", "lookup", {"key": "beta"}), interleave=True),
        oa.text_reply("Found them."),
    )
    brain = openai_kit.brain(tools=[lookup])
    await reply(brain, Turn("find", "c"))
    first, second = server.requests
    assert first.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a key up.",
                "parameters": {
                    "type": "object",
                    "properties": {"key": {"type": "string"}, "limit": {"type": "integer", "default": 3}},
                    "required": ["key"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    assert "tool_choice" not in first.body
    assistant = [m for m in second.body["messages"] if m["role"] == "assistant"]
    assert assistant == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"key": "alpha", "limit": 1}'}},
                {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": '{"key": "beta"}'}},
            ],
        }
    ]
    tool_msgs = [m for m in second.body["messages"] if m["role"] == "tool"]
    assert tool_msgs == [
        {"role": "tool", "tool_call_id": "call_a", "content": "alpha:1"},
        {"role": "tool", "tool_call_id": "call_b", "content": "beta:3"},
    ]


async def test_openai_invalid_json_arguments_are_fed_back_verbatim(openai_kit: OpenAIKit) -> None:
    server = openai_kit.server
    server.push(oa.tool_reply(("call_j", "lookup", '{"key": "unterminated')), oa.text_reply("Oops."))
    brain = openai_kit.brain(tools=[lookup])
    log = EventLog(brain)
    await reply(brain, Turn("x", "c"))
    second = server.requests[1]
    assert oa.tool_results(second) == {"call_j": 'ERROR: arguments were not valid JSON: {"key": "unterminated'}
    (call,) = [c for m in second.body["messages"] for c in m.get("tool_calls") or []]
    assert call["function"]["arguments"] == '{"key": "unterminated'
    assert [e.status for e in log.of(ToolFinished)] == ["error"]
    log.check()


async def test_openai_error_event_inside_the_stream(openai_kit: OpenAIKit) -> None:
    openai_kit.server.push(
        Stream([oa.text_chunk("Let me"), Chunk({"error": {"message": "model overloaded", "type": "server_error"}})])
    )
    brain = openai_kit.brain()
    log = EventLog(brain)
    turn = Turn("x", "c")
    deltas = await reply(brain, turn)
    assert deltas[0] == "Let me" and len(deltas) == 2
    (err,) = log.of(ErrorEvent)
    assert (err.code, err.message) == ("unavailable", "model overloaded")
    assert log.done(turn.turn_id).reason == "error"


async def test_openai_server_repeating_the_tool_name_on_every_chunk(openai_kit: OpenAIKit) -> None:
    head = oa.chunk({"tool_calls": [{"index": 0, "id": "call_r", "type": "function", "function": {"name": "lookup", "arguments": ""}}]})
    tail = [
        oa.chunk({"tool_calls": [{"index": 0, "function": {"name": "lookup", "arguments": part}}]})
        for part in ('{"key":', ' "z"}')
    ]
    openai_kit.server.push(Stream([head, *tail, oa.finish_chunk("tool_calls")]), oa.text_reply("ok"))
    brain = openai_kit.brain(tools=[lookup])
    await reply(brain, Turn("x", "c"))
    assert oa.tool_results(openai_kit.server.requests[1]) == {"call_r": "z:3"}


# -- Gemini ------------------------------------------------------------------------------------


async def test_gemini_declarations_thought_signature_and_grouped_results(gemini_kit: GeminiKit) -> None:
    server = gemini_kit.server
    assert isinstance(server, FakeGeminiServer)
    server.push(
        gm.tool_reply(
            ("fc_1", "lookup", {"key": "alpha"}),
            ("fc_2", "lookup", {"key": "beta", "limit": 5}),
            text="Checking. ",
            thought_signature=b"opaque-signature",
        ),
        gm.text_reply("Found both."),
    )
    brain = gemini_kit.brain(tools=[lookup])
    assert "".join(await reply(brain, Turn("find", "c"))) == "Checking. Found both."
    first, second = server.requests
    assert first.match["version"] == "v1beta"
    (decl,) = first.body["tools"][0]["functionDeclarations"]
    assert decl["name"] == "lookup" and decl["description"] == "Look a key up."
    # google-genai 3.x sends this field snake_case; proto3 JSON accepts either spelling
    schema = decl.get("parametersJsonSchema", decl.get("parameters_json_schema"))
    assert schema == lookup.__voice_tool__.parameters  # type: ignore[attr-defined]
    assert "toolConfig" not in first.body
    model_turn, results_turn = second.body["contents"][1:]
    assert model_turn["role"] == "model"
    assert model_turn["parts"] == [
        {"text": "Checking. "},
        {
            "functionCall": {"id": "fc_1", "name": "lookup", "args": {"key": "alpha"}},
            "thoughtSignature": base64.b64encode(b"opaque-signature").decode(),
        },
        {"functionCall": {"id": "fc_2", "name": "lookup", "args": {"key": "beta", "limit": 5}}},
    ]
    # both results of the step travel together in one user turn
    assert results_turn == {
        "role": "user",
        "parts": [
            {"functionResponse": {"id": "fc_1", "name": "lookup", "response": {"result": "alpha:3"}}},
            {"functionResponse": {"id": "fc_2", "name": "lookup", "response": {"result": "beta:5"}}},
        ],
    }


async def test_gemini_calls_split_across_chunks(gemini_kit: GeminiKit) -> None:
    gemini_kit.server.push(
        gm.tool_reply(("fc_a", "lookup", {"key": "a"}), ("fc_b", "lookup", {"key": "b"}), same_chunk=False),
        gm.text_reply("ok"),
    )
    brain = gemini_kit.brain(tools=[lookup])
    await reply(brain, Turn("x", "c"))
    assert gemini_kit.results(gemini_kit.server.requests[1]) == {"fc_a": "a:3", "fc_b": "b:3"}


async def test_gemini_error_inside_the_stream(gemini_kit: GeminiKit) -> None:
    gemini_kit.server.push(
        Stream([gm.text_chunk("Let me"), Chunk({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})])
    )
    brain = gemini_kit.brain()
    log = EventLog(brain)
    turn = Turn("x", "c")
    deltas = await reply(brain, turn)
    assert deltas[0] == "Let me" and len(deltas) == 2
    (err,) = log.of(ErrorEvent)
    assert err.code == "unavailable" and "overloaded" in err.message
    assert log.done(turn.turn_id).reason == "error"


async def test_gemini_thought_parts_are_not_spoken(gemini_kit: GeminiKit) -> None:
    gemini_kit.server.push(
        Stream([gm.candidate_chunk([{"text": "planning the answer", "thought": True}]), gm.text_chunk("Hi!", "STOP")])
    )
    brain = gemini_kit.brain()
    assert await reply(brain, Turn("x", "c")) == ["Hi!"]
