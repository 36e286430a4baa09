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
from tests.fakes.brain_kits import (
    EventLog,
    GeminiKit,
    OpenAIKit,
    clean_env,
    open_kit,
    reply,
    wait_for,
)

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


@pytest.mark.parametrize("raw", ['{"key": "unterminated', '["alpha"]'], ids=["not_json", "not_an_object"])
async def test_openai_invalid_arguments_are_fed_back_and_the_history_stays_valid(openai_kit: OpenAIKit, raw: str) -> None:
    """The call went back into the history with its raw text: vLLM, SGLang and other strict
    servers parse every call's arguments there, so the continuation and every later request of
    the conversation got a 400 (the user heard only apologies). The raw text now reaches the
    model in the tool's error result; the call in history carries `{}`."""
    server = openai_kit.server
    server.push(oa.tool_reply(("call_j", "lookup", raw)), oa.text_reply("Oops, let me retry."), oa.text_reply("Sure."))
    brain = openai_kit.brain(tools=[lookup])
    log = EventLog(brain)
    assert "".join(await reply(brain, Turn("x", "c"))) == "Oops, let me retry."
    assert "".join(await reply(brain, Turn("next", "c"))) == "Sure."
    second, third = server.requests[1:]
    assert oa.tool_results(second) == {"call_j": f"ERROR: arguments were not valid JSON: {raw}"}
    (call,) = [c for m in third.body["messages"] for c in m.get("tool_calls") or []]
    assert call["function"] == {"name": "lookup", "arguments": "{}"}
    assert [e.status for e in log.of(ToolFinished)] == ["error"] and not log.of(ErrorEvent)
    log.check()


async def test_openai_compatible_thought_signatures_go_back_with_their_calls(openai_kit: OpenAIKit) -> None:
    """Gemini 3 through its OpenAI-compatible endpoint (OPENAI_BASE_URL) signs a step's first call
    in `extra_content` and rejects a history without it ("missing a thought_signature"): the
    backend dropped it, so every turn with a tool call ended in the apology."""
    signed = {"google": {"thought_signature": "c2lnbmVkLWJ5LWdlbWluaQ=="}}
    calls = [
        {"index": 0, "id": "fc_1", "type": "function", "extra_content": signed,
         "function": {"name": "lookup", "arguments": '{"key": "a"}'}},
        {"index": 1, "id": "fc_2", "type": "function", "function": {"name": "lookup", "arguments": '{"key": "b"}'}},
    ]
    server = openai_kit.server
    server.push(
        Stream([oa.chunk({"role": "assistant", "tool_calls": calls}), oa.finish_chunk("tool_calls")]),
        oa.text_reply("Both found."),
        oa.text_reply("You're welcome."),
    )
    brain = openai_kit.brain(tools=[lookup])
    log = EventLog(brain)
    assert "".join(await reply(brain, Turn("find", "c"))) == "Both found."
    assert "".join(await reply(brain, Turn("thanks", "c"))) == "You're welcome."
    for req in server.requests[1:]:
        sent = [c for m in req.body["messages"] for c in m.get("tool_calls") or []]
        assert [(c["id"], c.get("extra_content")) for c in sent] == [("fc_1", signed), ("fc_2", None)]
    assert not log.of(ErrorEvent)


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


@pytest.mark.parametrize(("comment", "after_words"), [(True, False), (False, True)], ids=["sse-comments", "empty-choices-after-words"])
async def test_openai_keep_alives_do_not_hide_a_silent_model(openai_kit: OpenAIKit, comment: bool, after_words: bool) -> None:
    """A server that keeps the stream busy while its model says nothing (OpenRouter's
    `: OPENROUTER PROCESSING` comments, empty-choices chunks) kept httpx's read timeout from
    firing: the brain waited without limit and the user heard nothing. BRAIN_REQUEST_TIMEOUT
    bounds the model's silence, keep-alives or not."""
    words = [oa.text_chunk("Let me check.")] if after_words else []
    # keep-alives every 0.1 s for 2.5 s, then an answer: the timeout (1 s) comes long before it,
    # and the first words (sent at once) long before the timeout
    stream = Stream([*words, *oa.keep_alive(25, 0.1, comment=comment), oa.text_chunk(" Sunny."), oa.finish_chunk()])
    openai_kit.server.push(stream)
    brain = openai_kit.brain(request_timeout=1.0)
    log = EventLog(brain)
    turn = Turn("weather?", "c")
    deltas = await reply(brain, turn)
    req = openai_kit.server.requests[0]
    assert not req.completed.is_set()  # the turn ended while the server was still keeping alive
    assert deltas == (["Let me check.", " " + APOLOGY] if after_words else [APOLOGY])
    assert [e.code for e in log.of(ErrorEvent)] == ["timeout"]
    assert log.done(turn.turn_id).reason == "error"
    await wait_for(req.disconnected)  # and the connection was let go


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


# -- answers that are not words: refusals, filters, blocks -------------------------------------

APOLOGY = "Sorry, something went wrong on my side. Could you say that again?"


async def test_openai_refusal_is_spoken_as_the_answer(openai_kit: OpenAIKit) -> None:
    openai_kit.server.push(Stream([oa.chunk({"role": "assistant", "refusal": "I can't help with that."}), oa.finish_chunk("stop")]))
    brain = openai_kit.brain()
    log = EventLog(brain)
    turn = Turn("x", "c")
    assert await reply(brain, turn) == ["I can't help with that."]
    assert log.done(turn.turn_id).reason == "completed" and not log.of(ErrorEvent)


NO_ANSWER = {
    "openai-content_filter": ("openai", Stream([oa.chunk({"role": "assistant", "content": ""}), oa.finish_chunk("content_filter")]), "content_filter"),
    "openai-length": ("openai", Stream([oa.finish_chunk("length")]), "length"),
    "openai-empty_stop": ("openai", Stream([oa.chunk({"role": "assistant", "content": ""}), oa.finish_chunk("stop")]), "no text"),
    "gemini-safety": ("gemini", Stream([Chunk({"candidates": [{"finishReason": "SAFETY", "index": 0}]})]), "SAFETY"),
    "gemini-malformed_call": ("gemini", Stream([Chunk({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL", "index": 0}]})]), "MALFORMED_FUNCTION_CALL"),
    "gemini-empty_stop": ("gemini", Stream([gm.text_chunk("", "STOP")]), "no text"),
    "gemini-prompt_blocked": ("gemini", Stream([Chunk({"promptFeedback": {"blockReason": "SAFETY"}})]), "prompt blocked: SAFETY"),
}


@pytest.mark.parametrize("case", list(NO_ANSWER))
async def test_an_answer_without_words_ends_with_the_apology(case: str) -> None:
    """A filtered, blocked or empty answer was a silent `completed` turn: the user heard nothing."""
    provider, stream, why = NO_ANSWER[case]
    async with open_kit(provider) as kit:
        kit.server.push(stream, kit.text("Fine now."))
        brain = kit.brain()
        log = EventLog(brain)
        turn = Turn("x", "c")
        assert await reply(brain, turn) == [APOLOGY]
        (err,) = log.of(ErrorEvent)
        assert err.code == "protocol" and why in err.message
        assert log.done(turn.turn_id).reason == "error"
        assert await reply(brain, Turn("again", "c")) != [APOLOGY]  # the history is still accepted


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"])
async def test_gemini_a_failed_call_after_a_preamble_ends_with_the_apology(gemini_kit: GeminiKit, reason: str) -> None:
    """The model said "Let me check that." and its call failed (no call came): the turn ended
    `completed` on the preamble, and the user waited for an answer that was never coming."""
    gemini_kit.server.push(
        Stream([gm.text_chunk("Let me check that."), Chunk({"candidates": [{"finishReason": reason, "index": 0}]})]),
        gm.text_reply("Fine now."),
    )
    brain = gemini_kit.brain(tools=[lookup])
    log = EventLog(brain)
    turn = Turn("x", "c")
    assert await reply(brain, turn) == ["Let me check that.", " " + APOLOGY]
    (err,) = log.of(ErrorEvent)
    assert err.code == "protocol" and reason in err.message
    assert log.done(turn.turn_id).reason == "error"
    assert "".join(await reply(brain, Turn("again", "c"))) == "Fine now."  # the history is still accepted


async def test_an_answer_cut_short_after_some_words_stands(openai_kit: OpenAIKit, caplog: pytest.LogCaptureFixture) -> None:
    openai_kit.server.push(Stream([oa.text_chunk("It is sunny and"), oa.finish_chunk("length")]))
    brain = openai_kit.brain()
    log = EventLog(brain)
    turn = Turn("x", "c")
    assert await reply(brain, turn) == ["It is sunny and"]
    assert log.done(turn.turn_id).reason == "completed"
    assert "cut short (finish reason length)" in caplog.text


# -- compatible servers' tool-call shapes ------------------------------------------------------


def _call_chunk(index: int | None, call_id: str | None, name: str | None, arguments: str) -> Chunk:
    tc: dict[str, object] = {"type": "function", "function": {"arguments": arguments}}
    if index is not None:
        tc["index"] = index
    if call_id is not None:
        tc["id"] = call_id
    if name is not None:
        tc["function"] = {"name": name, "arguments": arguments}
    return oa.chunk({"tool_calls": [tc]})


@pytest.mark.parametrize(
    "chunks",
    [
        # Ollama style: every parallel call on index 0, each whole in one chunk
        [(0, "c1", "lookup", '{"key": "a"}'), (0, "c2", "lookup", '{"key": "b"}')],
        # index 0 reused, arguments in pieces after each head
        [(0, "c1", "lookup", ""), (0, None, None, '{"key": "a"}'), (0, "c2", "lookup", ""), (0, None, None, '{"key": "b"}')],
        # no index, the id repeated on every chunk
        [(None, "c1", "lookup", '{"key":'), (None, "c1", None, ' "a"}'), (None, "c2", "lookup", '{"key":'), (None, "c2", None, ' "b"}')],
    ],
    ids=["index_reused", "index_reused_in_pieces", "no_index_id_repeated"],
)
async def test_openai_compatible_parallel_call_shapes(openai_kit: OpenAIKit, chunks: list[tuple[int | None, str | None, str | None, str]]) -> None:
    """Two calls used to be merged into one ("lookuplookup", arguments glued) or to fail."""
    openai_kit.server.push(Stream([*(_call_chunk(*c) for c in chunks), oa.finish_chunk("tool_calls")]), oa.text_reply("ok"))
    brain = openai_kit.brain(tools=[lookup])
    assert "".join(await reply(brain, Turn("x", "c"))) == "ok"
    assert oa.tool_results(openai_kit.server.requests[1]) == {"c1": "a:3", "c2": "b:3"}


# -- text that is not valid Unicode, errors that are too long ----------------------------------


async def test_lone_surrogates_do_not_break_the_conversation(openai_kit: OpenAIKit) -> None:
    """The `openai` SDK cannot encode a lone surrogate: one in memory failed every later request."""

    @tool
    def read_file() -> str:
        """Read the file."""
        return b"caf\xe9".decode("utf-8", "surrogateescape")

    emoji = "\U0001f600".encode("utf-16-le").decode("utf-16-le", "surrogatepass")
    high, low = "\ud83d", "\ude00"  # an emoji's surrogate pair, split across two deltas
    assert high + low != emoji  # (two lone surrogates until joined)
    openai_kit.server.push(
        oa.tool_reply(("call_f", "read_file", {})),
        Stream([oa.text_chunk("Read " + high), oa.text_chunk(low), oa.finish_chunk("stop")]),
        oa.text_reply("Next."),
    )
    brain = openai_kit.brain(tools=[read_file])
    await reply(brain, Turn("read it", "c"))
    assert "".join(await reply(brain, Turn("and now \udcff?", "c"))) == "Next."
    last = openai_kit.server.requests[2].body["messages"]
    assert oa.tool_results(openai_kit.server.requests[2]) == {"call_f": "caf\ufffd"}
    assert [m["content"] for m in last if m["role"] != "tool"][-2:] == ["Read \U0001f600", "and now \ufffd?"]


async def test_a_huge_tool_error_is_cut_for_the_model(openai_kit: OpenAIKit) -> None:
    @tool
    def explode() -> str:
        """Fail loudly."""
        raise RuntimeError("x" * 100_000)

    openai_kit.server.push(oa.tool_reply(("call_x", "explode", {})), oa.text_reply("It failed."))
    brain = openai_kit.brain(tools=[explode])
    assert "".join(await reply(brain, Turn("go", "c"))) == "It failed."
    told = oa.tool_results(openai_kit.server.requests[1])["call_x"]
    assert told.startswith("ERROR: RuntimeError: xxx") and "[cut: the result was 100021 characters" in told
    assert len(told) < 16_200


async def test_openai_parallel_calls_with_one_id_on_distinct_indices_stay_apart(openai_kit: OpenAIKit) -> None:
    """Servers that repeat an id across calls (hence `_unique_id`): the index keeps them apart."""
    openai_kit.server.push(
        Stream([_call_chunk(0, "0", "lookup", '{"key": "a"}'), _call_chunk(1, "0", "lookup", '{"key": "b"}'), oa.finish_chunk("tool_calls")]),
        oa.text_reply("ok"),
    )
    brain = openai_kit.brain(tools=[lookup])
    assert "".join(await reply(brain, Turn("x", "c"))) == "ok"
    assert sorted(oa.tool_results(openai_kit.server.requests[1]).values()) == ["a:3", "b:3"]


async def test_a_turn_whose_tool_ran_may_end_without_words(openai_kit: OpenAIKit) -> None:
    """The action happened: no apology asking the user to say it again (they might repeat it)."""
    openai_kit.server.push(oa.tool_reply(("call_l", "lookup", {"key": "k"})), Stream([oa.finish_chunk("stop")]))
    brain = openai_kit.brain(tools=[lookup])
    log = EventLog(brain)
    turn = Turn("x", "c")
    assert await reply(brain, turn) == []
    assert log.done(turn.turn_id).reason == "completed" and not log.of(ErrorEvent)


@tool
def broken(key: str) -> str:
    """Always fails."""
    raise RuntimeError("backend down")


async def test_a_turn_whose_every_call_failed_and_then_said_nothing_ends_with_the_apology(openai_kit: OpenAIKit) -> None:
    """Nothing was done and nothing was said: silence (a `completed` turn) left the user waiting."""
    openai_kit.server.push(
        oa.tool_reply(("c1", "broken", {"key": "k"}), ("c2", "nosuch", {}), ("c3", "lookup", {"limit": 2})),
        Stream([oa.finish_chunk("stop")]),
        oa.text_reply("Fine now."),
    )
    brain = openai_kit.brain(tools=[lookup, broken])
    log = EventLog(brain)
    turn = Turn("x", "c")
    assert await reply(brain, turn) == [APOLOGY]
    (err,) = log.of(ErrorEvent)
    assert err.code == "protocol" and "tool calls that all failed" in err.message
    assert log.done(turn.turn_id).reason == "error"
    assert [f.status for f in log.of(ToolFinished)] == ["error", "error", "error"]
    assert "".join(await reply(brain, Turn("again", "c"))) == "Fine now."  # the history is still accepted


async def test_a_turn_where_one_call_of_several_ran_may_end_without_words(openai_kit: OpenAIKit) -> None:
    openai_kit.server.push(
        oa.tool_reply(("c1", "broken", {"key": "k"}), ("c2", "lookup", {"key": "k"})), Stream([oa.finish_chunk("stop")])
    )
    brain = openai_kit.brain(tools=[lookup, broken])
    log = EventLog(brain)
    turn = Turn("x", "c")
    assert await reply(brain, turn) == []
    assert log.done(turn.turn_id).reason == "completed" and not log.of(ErrorEvent)


async def test_a_long_result_is_cut_once_and_its_size_told(openai_kit: OpenAIKit) -> None:
    @tool
    def dump() -> str:
        """Return a lot."""
        return "y" * 48_000

    openai_kit.server.push(oa.tool_reply(("call_d", "dump", {})), oa.text_reply("Done."))
    brain = openai_kit.brain(tools=[dump])
    await reply(brain, Turn("go", "c"))
    told = oa.tool_results(openai_kit.server.requests[1])["call_d"]
    assert told.endswith("[cut: the result was 48000 characters, only the first 16000 are shown]")
    assert told.count("[cut:") == 1
