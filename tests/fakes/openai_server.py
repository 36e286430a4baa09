"""A local fake of the OpenAI Chat Completions streaming API, for the real `openai` client.

    async with FakeOpenAIServer() as server:
        server.push(text_reply("Hello there"))
        client = openai.AsyncOpenAI(api_key="k", base_url=server.base_url)

`POST /v1/chat/completions` with `stream: true` answers with the next scripted reply as SSE
`chat.completion.chunk` events followed by `data: [DONE]`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .scripted import Action, Chunk, HttpError, Raw, RecordedRequest, ScriptedServer, Sleep, Stream

ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "overloaded"),
}


class FakeOpenAIServer(ScriptedServer):
    end_marker = b"data: [DONE]\n\n"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extra_content: dict[str, Any] = {}
        """call id -> the `extra_content` streamed with it (Gemini's OpenAI-compatible endpoint
        puts thought signatures there, and Gemini 3 rejects a history that drops them)."""

    def sent(self, payload: dict[str, Any]) -> None:
        for choice in payload.get("choices") or []:
            for tc in (choice.get("delta") or {}).get("tool_calls") or []:
                if tc.get("id") and tc.get("extra_content") is not None:
                    self.extra_content[tc["id"]] = tc["extra_content"]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        etype, code = ERROR_TYPES.get(status, ("api_error", None))
        return {"error": {"message": message, "type": etype, "param": None, "code": code}}

    def check(self, body: Any) -> str | None:
        """The checks OpenAI applies that a tool loop can get wrong."""
        if not isinstance(body, dict) or not body.get("messages") or not body.get("model"):
            return "'model' and 'messages' are required"
        msgs = body["messages"]
        for i, m in enumerate(msgs):
            if m.get("role") == "assistant" and m.get("tool_calls"):
                for c in m["tool_calls"]:
                    # vLLM, SGLang and other compatible servers parse every call's arguments of
                    # the history (for the chat template): text that is not a JSON object is a 400
                    try:
                        arguments = json.loads(c["function"]["arguments"])
                    except (json.JSONDecodeError, TypeError):
                        arguments = None
                    if not isinstance(arguments, dict):
                        return f"messages[{i}].tool_calls: function.arguments must be a JSON object string"
                    issued = self.extra_content.get(c.get("id"))
                    if issued is not None and c.get("extra_content") != issued:
                        return (
                            f"Function call `{c['function']['name']}` in the {i}. content block is missing "
                            "a `thought_signature`."
                        )
                expected = {c["id"] for c in m["tool_calls"]}
                answered = set()
                for follower in msgs[i + 1 :]:
                    if follower.get("role") != "tool":
                        break
                    answered.add(follower.get("tool_call_id"))
                if answered != expected:
                    return (
                        "An assistant message with 'tool_calls' must be followed by tool messages "
                        f"responding to each 'tool_call_id'. Missing: {sorted(expected - answered)}"
                    )
            if m.get("role") == "tool" and (i == 0 or msgs[i - 1].get("role") not in ("assistant", "tool")):
                return "Messages with role 'tool' must be a response to a preceding message with 'tool_calls'."
        if body.get("tool_choice") is not None and not body.get("tools"):
            return "'tool_choice' is only allowed when 'tools' are specified"
        return None

    def history_size(self, body: Any) -> int:
        return len(json.dumps(body.get("messages", []), ensure_ascii=False))

    def context_error(self, size: int) -> HttpError:
        message = (
            f"This model's maximum context length is {self.context_limit} tokens. However, your messages "
            f"resulted in {size} tokens. Please reduce the length of the messages."
        )
        return HttpError(400, message, body={"error": {
            "message": message, "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
        }})

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    async def __aenter__(self) -> FakeOpenAIServer:
        await self.start()
        return self


# -- chunk builders ------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> Chunk:
    return Chunk(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "fake-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
    )


def text_chunk(text: str) -> Chunk:
    return chunk({"content": text})


def finish_chunk(reason: str = "stop") -> Chunk:
    return chunk({}, finish_reason=reason)


def rate_limited(retry_after: float) -> HttpError:
    """A 429 asking the client to wait `retry_after` seconds, as OpenAI does (`retry-after-ms`
    for a fraction of a second)."""
    if retry_after == int(retry_after):
        headers = {"Retry-After": str(int(retry_after))}
    else:
        headers = {"retry-after-ms": str(int(retry_after * 1000))}
    return HttpError(429, "Rate limit reached for requests", headers=headers)


def empty_chunk() -> Chunk:
    """A chunk with no choices (a usage chunk; some servers send them to keep a stream alive)."""
    return Chunk({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": "fake-model", "choices": []})


def keep_alive(count: int, every: float, *, comment: bool = True) -> list[Action]:
    """`count` keep-alives `every` seconds, as OpenRouter sends while its model has said nothing:
    SSE comments (`: OPENROUTER PROCESSING`), or with `comment=False` empty-choices chunks."""
    beat: Action = Raw(b": OPENROUTER PROCESSING\n\n") if comment else empty_chunk()
    return [a for _ in range(count) for a in (beat, Sleep(every))]


def split(text: str, pieces: int) -> list[str]:
    """Split `text` into `pieces` non-empty parts (fewer if it is short)."""
    pieces = max(1, min(pieces, len(text)))
    step = -(-len(text) // pieces)
    return [text[i : i + step] for i in range(0, len(text), step)] or [""]


def tool_call_chunks(index: int, call_id: str | None, name: str, arguments: dict[str, Any] | str, pieces: int = 3) -> list[Chunk]:
    """One tool call the way OpenAI streams it: id and name first, then the arguments in pieces."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    head: dict[str, Any] = {"index": index, "type": "function", "function": {"name": name, "arguments": ""}}
    if call_id is not None:
        head["id"] = call_id
    out = [chunk({"role": "assistant", "tool_calls": [head]})]
    for part in split(raw, pieces):
        out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
    return out


def text_reply(text: str, pieces: int = 4, *, before: list[Action] | None = None) -> Stream:
    """A plain text answer streamed in `pieces` deltas."""
    actions: list[Action] = [chunk({"role": "assistant", "content": ""})]
    actions += before or []
    actions += [text_chunk(p) for p in split(text, pieces)]
    actions.append(finish_chunk("stop"))
    return Stream(actions)


def tool_reply(*calls: tuple[str | None, str, dict[str, Any] | str], text: str = "", interleave: bool = True) -> Stream:
    """Tool calls (id, name, arguments); with `interleave` the calls' chunks alternate on the wire."""
    actions: list[Action] = []
    if text:
        actions.append(text_chunk(text))
    per_call = [tool_call_chunks(i, cid, name, args) for i, (cid, name, args) in enumerate(calls)]
    if interleave:
        longest = max((len(c) for c in per_call), default=0)
        for k in range(longest):
            for c in per_call:
                if k < len(c):
                    actions.append(c[k])
    else:
        for c in per_call:
            actions.extend(c)
    actions.append(finish_chunk("tool_calls"))
    return Stream(actions)


# -- reading what the model was told -------------------------------------------------------


def messages(req: RecordedRequest) -> list[dict[str, Any]]:
    return list(req.body["messages"])


def tool_results(req: RecordedRequest) -> dict[str, str]:
    """tool_call_id -> content of every tool message in the request."""
    return {m["tool_call_id"]: m["content"] for m in messages(req) if m["role"] == "tool"}


def tool_names(req: RecordedRequest) -> list[str]:
    return [t["function"]["name"] for t in req.body.get("tools", [])]

