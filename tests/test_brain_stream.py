"""Streaming, barge-in, provider errors and memory, through the real openai / google-genai SDKs.

Each test runs against both fake servers (tests/fakes); no SDK is patched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from brain import ModelOutput, ModelRequest, TextChunk, ToolCall, Turn, create_voice_brain, tool
from brain.events import ErrorEvent, TextDelta, ToolStarted
from tests.fakes import Close, HttpError, Raw, Sleep
from tests.fakes.brain_kits import (
    BRAIN_TESTS,
    EventLog,
    Kit,
    config_without_dotenv,
    reply,
    wait_for,
)
from tests.fakes.brain_plugins import shout as _shout
from tests.fakes.scripted import Hold, RecordedRequest

APOLOGY = "Sorry, something went wrong on my side. Could you say that again?"


pytestmark = BRAIN_TESTS


async def test_deltas_arrive_before_the_server_finishes(kit: Kit) -> None:
    release = asyncio.Event()
    kit.server.push(
        kit.stream(kit.text_chunk("Hello"), Hold(release), kit.text_chunk(" there, how can I help?"), *kit.end_text())
    )
    brain = kit.brain()
    log = EventLog(brain)
    turn = Turn("hi", "conv-1")
    agen = brain.stream_reply(turn)
    async with asyncio.timeout(5):
        first = await anext(agen)
    req = kit.server.requests[0]
    # the server is still holding the rest of the stream: the delta was not buffered
    assert first == "Hello"
    assert not req.completed.is_set()
    assert log.types() == ["turn.started", "text.delta"]
    release.set()
    async with asyncio.timeout(5):
        rest = [d async for d in agen]
    assert first + "".join(rest) == "Hello there, how can I help?"
    assert req.completed.is_set()
    assert log.done(turn.turn_id).reason == "completed"
    assert log.done(turn.turn_id).text == "Hello there, how can I help?"
    assert "".join(e.text for e in log.of(TextDelta)) == "Hello there, how can I help?"
    log.check()


async def test_request_carries_system_prompt_model_and_history(kit: Kit) -> None:
    kit.server.push(kit.text("First answer."), kit.text("Second answer."))
    brain = kit.brain(system_prompt="Be brief.", temperature=0.3, max_tokens=50)
    await reply(brain, Turn("one", "c"))
    await reply(brain, Turn("two", "c"))
    req = kit.server.requests[1]
    assert kit.dialogue(req) == [("user", "one"), ("assistant", "First answer."), ("user", "two")]
    if kit.name == "openai":
        assert req.body["model"] == "gpt-fake"
        assert req.body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert req.body["stream"] is True and req.body["temperature"] == 0.3 and req.body["max_tokens"] == 50
        assert req.headers["Authorization"] == "Bearer sk-test-key"
    else:
        assert req.match == {"version": "v1beta", "model": "gemini-fake", "method": "streamGenerateContent"}
        assert req.query == {"alt": "sse"}
        assert req.body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
        assert req.body["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 50}
        assert req.headers["x-goog-api-key"] == "gm-test-key"


async def test_closing_the_reply_mid_stream_closes_the_connection(kit: Kit) -> None:
    hold = asyncio.Event()  # never set: only a disconnect ends this stream
    kit.server.push(kit.stream(kit.text_chunk("Once upon"), Hold(hold), kit.text_chunk(" a time"), *kit.end_text()))
    kit.server.push(kit.text("Next reply."))
    brain = kit.brain()
    log = EventLog(brain)
    turn = Turn("tell me a story", "c")
    agen = brain.stream_reply(turn)
    async with asyncio.timeout(5):
        assert await anext(agen) == "Once upon"
    await agen.aclose()
    req = kit.server.requests[0]
    await wait_for(req.disconnected)
    assert not req.completed.is_set()
    done = log.done(turn.turn_id)
    assert done.reason == "interrupted"
    assert log.of(ErrorEvent) == []
    # the same brain serves the next turn
    assert "".join(await reply(brain, Turn("and then?", "c"))) == "Next reply."
    log.check()


async def test_cancelling_the_consumer_mid_stream_closes_the_connection(kit: Kit) -> None:
    hold = asyncio.Event()
    kit.server.push(kit.stream(kit.text_chunk("Once"), Hold(hold), *kit.end_text()))
    brain = kit.brain()
    log = EventLog(brain)
    turn = Turn("story", "c")
    got: list[str] = []

    async def consume() -> None:
        async for d in brain.stream_reply(turn):
            got.append(d)

    task = asyncio.create_task(consume())
    await log.wait(lambda e: isinstance(e, TextDelta))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(kit.server.requests[0].disconnected)
    assert got == ["Once"]
    assert log.done(turn.turn_id).reason == "interrupted"
    log.check()


STATUS_CODES = {
    400: "bad_request",
    401: "auth",
    403: "auth",
    404: "bad_request",
    408: "timeout",
    429: "rate_limited",
    500: "unavailable",
    503: "unavailable",
}


@pytest.mark.parametrize("status", sorted(STATUS_CODES))
async def test_http_error_status_maps_to_its_code(kit: Kit, status: int) -> None:
    kit.server.push(HttpError(status, f"scripted failure {status}"))
    brain = kit.brain()
    log = EventLog(brain)
    turn = Turn("hello", "c")
    deltas = await reply(brain, turn)
    (err,) = log.of(ErrorEvent)
    assert (err.code, err.provider) == (STATUS_CODES[status], kit.name)
    assert f"scripted failure {status}" in err.message
    assert deltas == [APOLOGY]
    assert log.done(turn.turn_id).reason == "error"
    assert len(kit.server.requests) == 1  # no hidden SDK retries
    log.check()


async def test_request_timeout_bounds_silence_not_the_length_of_a_reply(kit: Kit) -> None:
    """BRAIN_REQUEST_TIMEOUT is how long the model may stay silent. The Gemini SDK applied it to
    the whole stream: a reply still flowing when it expired was cut mid-sentence (a `timeout`
    and the apology), e.g. a thinking model's long answer."""
    words = [f"word{i} " for i in range(6)]
    flowing: list[object] = [kit.text_chunk(words[0])]
    for w in words[1:]:
        flowing += [Sleep(0.2), kit.text_chunk(w)]  # 1 s in all, each gap 0.6 s short of the timeout
    hold = asyncio.Event()  # never set: the second reply stalls after its first words
    kit.server.push(kit.stream(*flowing, *kit.end_text()), kit.stream(kit.text_chunk("Let me"), Hold(hold)))
    brain = kit.brain(request_timeout=0.8)
    log = EventLog(brain)
    long_turn, stalled = Turn("tell me more", "c"), Turn("and?", "c")
    assert "".join(await reply(brain, long_turn)) == "".join(words)
    assert log.done(long_turn.turn_id).reason == "completed" and not log.of(ErrorEvent)
    assert await reply(brain, stalled) == ["Let me", " " + APOLOGY]
    assert [(e.code, e.turn_id) for e in log.of(ErrorEvent)] == [("timeout", stalled.turn_id)]
    await wait_for(kit.server.requests[1].disconnected)
    log.check()


async def test_a_rate_limit_asking_for_longer_than_the_timeout_ends_the_turn_at_once(kit: Kit) -> None:
    """With BRAIN_MAX_RETRIES, the openai SDK slept whatever a 429's Retry-After said (up to
    2 minutes per retry) while the user heard nothing; google-genai ignored the hint and retried
    into the same limit. A wait past BRAIN_REQUEST_TIMEOUT x attempts (here 30 s against 2 s)
    is not made: `rate_limited` and the apology at once, and no retry against the server's word."""
    kit.server.push(kit.rate_limited(30), kit.text("Too late."))
    brain = kit.brain(request_timeout=1.0, max_retries=1)
    log = EventLog(brain)
    turn = Turn("hello", "c")
    assert await reply(brain, turn, limit=3) == [APOLOGY]
    assert [(e.code, e.provider) for e in log.of(ErrorEvent)] == [("rate_limited", kit.name)]
    assert log.done(turn.turn_id).reason == "error"
    assert len(kit.server.requests) == 1
    log.check()


async def test_a_failed_or_silent_first_attempt_is_retried_within_the_timeout(kit: Kit) -> None:
    """BRAIN_MAX_RETRIES=2, BRAIN_REQUEST_TIMEOUT=0.6: a 429 asking for 0.1 s is retried after it,
    an attempt that then says nothing is given up after 0.6 s (its connection released) and
    retried, and the third attempt's answer is heard: all within 3 x 0.6 s. google-genai never
    gave up on a silent attempt, so its retries went unused and the turn timed out."""
    hold = asyncio.Event()  # never set: the second attempt stays silent
    kit.server.push(kit.rate_limited(0.1), kit.stream(Hold(hold)), kit.text("Here you go."))
    brain = kit.brain(request_timeout=0.6, max_retries=2)
    log = EventLog(brain)
    turn = Turn("hello", "c")
    assert "".join(await reply(brain, turn)) == "Here you go."
    assert log.of(ErrorEvent) == [] and log.done(turn.turn_id).reason == "completed"
    assert len(kit.server.requests) == 3
    await wait_for(kit.server.requests[1].disconnected)
    log.check()


async def test_mid_stream_failure_apologises_and_the_brain_recovers(kit: Kit) -> None:
    kit.server.push(kit.stream(kit.text_chunk("The answer is"), Close()), kit.text("All good now."))
    brain = kit.brain()
    log = EventLog(brain)
    turn = Turn("question", "c")
    deltas = await reply(brain, turn)
    assert deltas == ["The answer is", " " + APOLOGY]  # spoken as written: no "isSorry"
    (err,) = log.of(ErrorEvent)
    assert err.code == "unavailable" and err.turn_id == turn.turn_id
    done = log.done(turn.turn_id)
    assert done.reason == "error"
    assert done.text == f"The answer is {APOLOGY}"
    # error -> done order, and the next turn on the same brain works
    assert log.types(turn.turn_id)[-3:] == ["error", "text.delta", "turn.done"]
    turn2 = Turn("again", "c")
    assert "".join(await reply(brain, turn2)) == "All good now."
    assert log.done(turn2.turn_id).reason == "completed"
    log.check()


async def test_malformed_chunk_is_a_protocol_error(kit: Kit) -> None:
    sep = b"\n\n" if kit.name == "openai" else b"\r\n\r\n"
    kit.server.push(kit.stream(kit.text_chunk("Hi"), Raw(b"data: {this is not json" + sep), *kit.end_text()))
    brain = kit.brain()
    log = EventLog(brain)
    turn = Turn("x", "c")
    assert await reply(brain, turn) == ["Hi", " " + APOLOGY]
    assert [e.code for e in log.of(ErrorEvent)] == ["protocol"]
    assert log.done(turn.turn_id).reason == "error"
    log.check()


class _FailingBackend:
    """A custom backend that raises something untyped after its first words."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelOutput]:
        self.calls += 1
        if self.calls == 1:
            yield TextChunk("Let me see")
            raise RuntimeError("socket gone")
        yield TextChunk("Fine now.")

    async def aclose(self) -> None:
        return None


async def test_untyped_backend_exception_is_unavailable_and_the_brain_recovers() -> None:
    brain = create_voice_brain(config_without_dotenv(tools=[]), backend=_FailingBackend())
    log = EventLog(brain)
    turn = Turn("hello", "c")
    assert await reply(brain, turn) == ["Let me see", " " + APOLOGY]
    (err,) = log.of(ErrorEvent)
    assert (err.code, err.provider, err.message) == ("unavailable", "flaky", "the flaky backend failed (RuntimeError)")
    assert log.done(turn.turn_id).reason == "error"
    turn2 = Turn("again", "c")
    assert await reply(brain, turn2) == ["Fine now."]
    assert log.done(turn2.turn_id).reason == "completed"
    log.check()


class _StringArgumentsBackend:
    """A custom backend that passes the model's argument JSON on unparsed."""

    name = "raw-args"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelOutput]:
        yield ToolCall("call_1", "shout", '{"text": "hi"}')  # type: ignore[arg-type]

    async def aclose(self) -> None:
        return None


async def test_a_tool_call_whose_arguments_are_not_a_dict_is_the_backends_protocol_error() -> None:
    """It was an `internal` error from deep in the event model (pydantic's message on the log and
    to clients), blaming the brain rather than the backend that broke the contract."""
    brain = create_voice_brain(config_without_dotenv(tools=[]), backend=_StringArgumentsBackend(), tools=[_shout])
    log = EventLog(brain)
    turn = Turn("shout hi", "c")
    assert await reply(brain, turn) == [APOLOGY]
    (err,) = log.of(ErrorEvent)
    assert (err.code, err.provider) == ("protocol", "raw-args")
    assert err.message == "backend yielded a ToolCall for 'shout' whose arguments are str, not a dict"
    assert log.of(ToolStarted) == [] and log.done(turn.turn_id).reason == "error"
    log.check()


async def test_silent_apology_when_disabled(kit: Kit) -> None:
    kit.server.push(HttpError(500))
    brain = kit.brain(apology="")
    log = EventLog(brain)
    turn = Turn("x", "c")
    assert await reply(brain, turn) == []
    assert log.done(turn.turn_id).reason == "error"


async def test_memory_keeps_only_the_spoken_part_of_an_interrupted_reply(kit: Kit) -> None:
    hold = asyncio.Event()
    kit.server.push(
        kit.stream(kit.text_chunk("Paris is the capital. "), kit.text_chunk("It has"), Hold(hold), *kit.end_text())
    )
    kit.server.push(kit.text("Sure."))
    brain = kit.brain()
    turn = Turn("tell me about Paris", "c")
    async with contextlib.aclosing(brain.stream_reply(turn)) as agen:
        assert await anext(agen) == "Paris is the capital. "
        assert await anext(agen) == "It has"
    # the voice layer heard only the first sentence before the user barged in
    assert brain.record_spoken("c", turn.turn_id, "Paris is the capital.")
    await reply(brain, Turn("what about Rome?", "c"))
    assert kit.dialogue(kit.server.requests[1]) == [
        ("user", "tell me about Paris"),
        ("assistant", "Paris is the capital."),
        ("user", "what about Rome?"),
    ]
    assert not brain.record_spoken("c", "turn_unknown", "x")


async def test_memory_is_bounded_to_the_last_turns(kit: Kit) -> None:
    kit.server.push(*(kit.text(f"Answer {i}.") for i in range(4)))
    brain = kit.brain(memory_turns=2)
    for i in range(4):
        await reply(brain, Turn(f"question {i}", "c"))
    assert kit.dialogue(kit.server.requests[3]) == [
        ("user", "question 2"),
        ("assistant", "Answer 2."),
        ("user", "question 3"),
    ]
    assert [m.content for m in brain.history("c")] == ["question 2", "Answer 2.", "question 3", "Answer 3."]


def _history_chars(kit: Kit, req: RecordedRequest) -> int:
    """The size of a request's history as the memory budget counts it (system prompt excluded)."""
    calls = kit.requested_calls(req).values()
    return (
        sum(len(text) for _, text in kit.dialogue(req))
        + sum(len(result) for result in kit.results(req).values())
        + sum(len(name) + len(json.dumps(args, ensure_ascii=False)) for name, args in calls)
    )


async def test_memory_is_bounded_by_size_dropping_whole_oldest_turns(kit: Kit) -> None:
    """Big tool results cannot grow a request past BRAIN_MEMORY_CHARS: the oldest whole turns go
    (each call keeps its result, the history still starts with a user turn, the fakes accept it),
    and a turn larger than the budget on its own is still sent whole."""

    @tool
    async def lookup(topic: str) -> str:
        """Everything about a topic."""
        return f"{topic}: " + "x" * 10_000

    budget = 25_000
    for i in range(3):  # turns of ~10,000 characters: two fit the budget, three do not
        kit.server.push(kit.calls((f"call_{i}", "lookup", {"topic": f"t{i}"})), kit.text(f"Answer {i}."))
    # one turn of ~30,000 characters, alone over the budget
    kit.server.push(kit.calls(*((f"call_3{c}", "lookup", {"topic": f"t3{c}"}) for c in "abc")), kit.text("Answer 3."))
    brain = kit.brain(tools=[lookup], memory_chars=budget)
    for i in range(4):
        assert "".join(await reply(brain, Turn(f"question {i}", "c"))) == f"Answer {i}."
    reqs = kit.server.requests
    assert len(reqs) == 8  # two per turn: the call, then the answer after its results
    for req in reqs:
        assert set(kit.requested_calls(req)) == set(kit.results(req))  # every call has its result
        assert kit.dialogue(req)[0][0] == "user"
    assert all(_history_chars(kit, req) <= budget for req in reqs[:6])
    # turn 2, after its result: turn 0 no longer fits and went, whole; turn 1 stayed
    assert kit.dialogue(reqs[5])[0] == ("user", "question 1")
    assert set(kit.results(reqs[5])) == {"call_1", "call_2"}
    # turn 3 on its own exceeds the budget: every older turn went, but it is sent whole
    assert _history_chars(kit, reqs[7]) > budget
    assert kit.dialogue(reqs[7])[0] == ("user", "question 3")
    assert {k: len(v) for k, v in kit.results(reqs[7]).items()} == {f"call_3{c}": 10_005 for c in "abc"}
    assert brain.history("c")[0].content == "question 3"


async def test_a_history_past_the_models_context_drops_the_oldest_turns_and_the_turn_goes_on(kit: Kit) -> None:
    """A model whose context is smaller than BRAIN_MEMORY_CHARS refuses the history as too long
    (OpenAI `context_length_exceeded`, Gemini's input token count): the oldest half of the earlier
    turns goes, whole, and the request is made again, so the user gets an answer and every later
    turn works, instead of each failing the same way until the turns roll out of memory."""

    @tool
    async def lookup(topic: str) -> str:
        """Everything about a topic."""
        return f"{topic}: " + "x" * 2_000

    for i in range(5):
        kit.server.push(kit.calls((f"call_{i}", "lookup", {"topic": f"t{i}"})), kit.text(f"Answer {i}."))
    kit.server.context_limit = 7_000
    brain = kit.brain(tools=[lookup])
    log = EventLog(brain)
    for i in range(5):
        assert "".join(await reply(brain, Turn(f"question {i}", "c"))) == f"Answer {i}."
    assert not log.of(ErrorEvent)
    reqs = kit.server.requests
    refused = [n for n, req in enumerate(reqs) if kit.server.history_size(req.body) > 7_000]
    assert refused  # the conversation did outgrow the model's context
    for n in refused:
        again = reqs[n + 1]  # the same step asked again, with fewer turns
        assert kit.server.history_size(again.body) <= 7_000
        assert kit.dialogue(again)[-1] == kit.dialogue(reqs[n])[-1]
        assert kit.dialogue(again)[0][0] == "user"
        assert len(kit.dialogue(again)) < len(kit.dialogue(reqs[n]))
        assert set(kit.requested_calls(again)) == set(kit.results(again))  # every call has its result
    assert len(reqs) == 10 + len(refused)
    users = [m.content for m in brain.history("c") if m.role == "user"]
    assert users[-1] == "question 4" and users[0] != "question 0"


async def test_a_turn_too_big_for_the_models_context_fails_alone_and_the_next_turn_works(kit: Kit) -> None:
    """A pasted text larger than the model's whole context: that turn cannot be answered (the
    user hears the apology, clients get `bad_request`), but it is not sent again with every
    later turn: the next turn is answered."""
    kit.server.push(kit.text("Hi."), kit.text("Answer."))
    kit.server.context_limit = 5_000
    brain = kit.brain(apology=APOLOGY)
    log = EventLog(brain)
    assert "".join(await reply(brain, Turn("hello", "c"))) == "Hi."
    big = Turn("please read this: " + "y" * 6_000, "c")
    assert "".join(await reply(brain, big)) == APOLOGY
    assert [(e.turn_id, e.code) for e in log.of(ErrorEvent)] == [(big.turn_id, "bad_request")]
    assert "".join(await reply(brain, Turn("what now?", "c"))) == "Answer."
    assert kit.dialogue(kit.server.requests[-1])[-1] == ("user", "what now?")
    assert all("y" * 6_000 not in text for _, text in kit.dialogue(kit.server.requests[-1]))
    assert len(log.of(ErrorEvent)) == 1
    log.check()


@pytest.mark.parametrize(
    ("status", "message", "too_long"),
    [
        (400, "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens", True),  # vLLM
        (400, "the request exceeds the available context size, try increasing it", True),  # llama.cpp
        (400, "The input token count exceeds the maximum number of tokens allowed 1048576.", True),  # Gemini
        (413, "Request Entity Too Large", True),  # a proxy's body limit
        (400, "max_tokens is too large: 100000. This model supports at most 16384 completion tokens", False),
        (400, "Invalid 'messages[2].content': string too long. Expected a string with maximum length 10485760", True),
        (404, "The model `gpt-fake` does not exist", False),
    ],
)
def test_which_errors_say_the_history_is_too_long(status: int, message: str, too_long: bool) -> None:
    from brain.errors import BadRequestError, ContextTooLongError, error_for_status

    err = error_for_status(status, message, provider="openai")
    assert isinstance(err, ContextTooLongError) is too_long
    assert isinstance(err, BadRequestError) and err.code == "bad_request"


async def test_conversations_are_separate(kit: Kit) -> None:
    kit.server.push(kit.text("A."), kit.text("B."))
    brain = kit.brain()
    await reply(brain, Turn("in room one", "room-1"))
    await reply(brain, Turn("in room two", "room-2"))
    assert kit.dialogue(kit.server.requests[1]) == [("user", "in room two")]


async def test_forget_turn_removes_an_unheard_turn_from_memory() -> None:
    from brain import BrainConfig, Turn, create_voice_brain

    brain = create_voice_brain(BrainConfig(_env_file=None))
    first = Turn("hello there", "forget-conv")
    [d async for d in brain.stream_reply(first)]
    second = Turn("tell me more", "forget-conv")
    [d async for d in brain.stream_reply(second)]
    assert brain.forget_turn("forget-conv", first.turn_id) is True
    assert brain.forget_turn("forget-conv", first.turn_id) is False
    users = [m.content for m in brain.history("forget-conv") if m.role == "user"]
    assert users == ["tell me more"]


async def test_python_m_brain_shows_why_turns_failed_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text demo against a provider that refuses the key: each failure is shown with the
    turn (not only the apology), and the exit status says the demo did not work."""
    from brain.__main__ import SCRIPT, main
    from tests.fakes.openai_server import FakeOpenAIServer

    async with FakeOpenAIServer() as server:
        server.push(*[HttpError(401, "Incorrect API key provided") for _ in SCRIPT])
        monkeypatch.chdir(tmp_path)  # no .env
        for name, value in (("BRAIN_BACKEND", "openai"), ("OPENAI_API_KEY", "sk-test-key"),
                            ("OPENAI_BASE_URL", server.base_url), ("BRAIN_MAX_RETRIES", "0")):
            monkeypatch.setenv(name, value)
        assert await main() == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if "[error]" in line]
    assert len(errors) == len(SCRIPT)
    assert all("[error] auth: " in line and "Incorrect API key provided" in line for line in errors)
    assert out.index("[error] auth") < out.index(APOLOGY)  # shown with its turn, before its apology


async def test_python_m_brain_exits_zero_when_every_turn_answered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from brain.__main__ import main

    monkeypatch.chdir(tmp_path)
    assert await main() == 0
    out = capsys.readouterr().out
    assert "[error]" not in out and "approved by demo-user" in out and "is booked" in out


class _PlainStringBackend:
    """A custom backend that yields its words as plain strings, not `TextChunk`s."""

    name = "plain"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelOutput]:
        if request.messages[-1].content == "again":
            yield TextChunk("Fine now.")
            return
        yield "Hello"  # type: ignore[misc]

    async def aclose(self) -> None:
        return None


async def test_a_backend_yielding_plain_strings_is_told_what_it_should_yield() -> None:
    """The error said only "backend yielded str", leaving the author to find the contract."""
    brain = create_voice_brain(config_without_dotenv(tools=[]), backend=_PlainStringBackend())
    log = EventLog(brain)
    turn = Turn("hello", "c")
    assert await reply(brain, turn) == [APOLOGY]
    (err,) = log.of(ErrorEvent)
    assert (err.code, err.provider, err.message) == ("protocol", "plain", "backend yielded str, not a TextChunk or ToolCall")
    assert await reply(brain, Turn("again", "c")) == ["Fine now."]
    log.check()
