"""A local fake of the Gemini `streamGenerateContent?alt=sse` API, for the real `google-genai` client.

    async with FakeGeminiServer() as server:
        server.push(text_reply("Hello there"))
        client = genai.Client(api_key="k", http_options=HttpOptions(base_url=server.base_url))

With a custom base_url the SDK requests `{base_url}/{api_version}/models/{model}:streamGenerateContent?alt=sse`
(the brain pins api_version `v1beta`). The fake accepts any version and records it in
`request.match["version"]`, with `model` and `method`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from .scripted import Action, Chunk, HttpError, RecordedRequest, ScriptedServer, Stream

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class FakeGeminiServer(ScriptedServer):
    sse_separator = b"\r\n\r\n"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{target}", self._models)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        version = request.match_info["version"]
        model, _, method = request.match_info["target"].partition(":")
        if method != "streamGenerateContent" or request.query.get("alt") != "sse":
            return web.json_response(self.error_body(404, f"fake serves only streamGenerateContent?alt=sse, not {method}"), status=404)
        return await self.serve(request, {"version": version, "model": model, "method": method})

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}}

    def check(self, body: Any) -> str | None:
        """Gemini's rules for the history: `user` and `model` contents alternate, and each
        function-call turn is answered by as many responses in the next content."""
        if not isinstance(body, dict) or not body.get("contents"):
            return "* GenerateContentRequest.contents: contents is not specified"
        turns = body["contents"]
        roles = [c.get("role") for c in turns]
        if any(a == b for a, b in zip(roles, roles[1:], strict=False)):
            return "Please ensure that multiturn requests alternate between user and model."
        for i, c in enumerate(turns):
            calls = sum(1 for p in c.get("parts", []) if "functionCall" in p)
            if c.get("role") == "model" and calls:
                nxt = turns[i + 1] if i + 1 < len(turns) else {}
                responses = sum(1 for p in nxt.get("parts", []) if "functionResponse" in p)
                if responses != calls:
                    return (
                        "Please ensure that the number of function response parts is equal to the number "
                        "of function call parts of the function call turn."
                    )
        return None

    def history_size(self, body: Any) -> int:
        return len(json.dumps(body.get("contents", []), ensure_ascii=False))

    def context_error(self, size: int) -> HttpError:
        return HttpError(400, f"The input token count ({size}) exceeds the maximum number of tokens allowed "
                              f"({self.context_limit}).")

    @property
    def base_url(self) -> str:
        return self.origin

    async def __aenter__(self) -> FakeGeminiServer:
        await self.start()
        return self


# -- chunk builders ------------------------------------------------------------------------


def candidate_chunk(parts: list[dict[str, Any]], finish_reason: str | None = None) -> Chunk:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish_reason:
        cand["finishReason"] = finish_reason
    payload: dict[str, Any] = {"candidates": [cand], "modelVersion": "fake-gemini"}
    if finish_reason:
        payload["usageMetadata"] = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
    return Chunk(payload)


def text_chunk(text: str, finish_reason: str | None = None) -> Chunk:
    return candidate_chunk([{"text": text}], finish_reason)


def function_call_part(name: str, args: dict[str, Any], call_id: str | None = None, thought_signature: bytes | None = None) -> dict[str, Any]:
    fc: dict[str, Any] = {"name": name, "args": args}
    if call_id is not None:
        fc["id"] = call_id
    part: dict[str, Any] = {"functionCall": fc}
    if thought_signature is not None:
        part["thoughtSignature"] = base64.b64encode(thought_signature).decode()
    return part


def rate_limited(retry_after: float) -> HttpError:
    """A 429 the way Gemini sends it: the wait in a `RetryInfo` detail of the body, no header."""
    body = {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota. Please retry later.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}],
        }
    }
    return HttpError(429, body=body)


def split(text: str, pieces: int) -> list[str]:
    pieces = max(1, min(pieces, len(text)))
    step = -(-len(text) // pieces)
    return [text[i : i + step] for i in range(0, len(text), step)] or [""]


def text_reply(text: str, pieces: int = 4, *, before: list[Action] | None = None) -> Stream:
    parts = split(text, pieces)
    actions: list[Action] = list(before or [])
    actions += [text_chunk(p, "STOP" if i == len(parts) - 1 else None) for i, p in enumerate(parts)]
    return Stream(actions)


def tool_reply(
    *calls: tuple[str | None, str, dict[str, Any]],
    text: str = "",
    same_chunk: bool = True,
    thought_signature: bytes | None = None,
) -> Stream:
    """Function calls (id, name, args); by default all in one chunk, as Gemini sends parallel calls.

    `thought_signature` is attached to the first call's part, as Gemini does.
    """
    actions: list[Action] = []
    if text:
        actions.append(text_chunk(text))
    parts = [
        function_call_part(name, args, cid, thought_signature if i == 0 else None)
        for i, (cid, name, args) in enumerate(calls)
    ]
    if same_chunk:
        actions.append(candidate_chunk(parts, "STOP"))
    else:
        actions += [candidate_chunk([p], "STOP" if i == len(parts) - 1 else None) for i, p in enumerate(parts)]
    return Stream(actions)


# -- reading what the model was told -------------------------------------------------------


def contents(req: RecordedRequest) -> list[dict[str, Any]]:
    return list(req.body["contents"])


def function_responses(req: RecordedRequest) -> dict[str, dict[str, Any]]:
    """id (or name when the id is missing) -> functionResponse of every result in the request."""
    out: dict[str, dict[str, Any]] = {}
    for c in contents(req):
        for p in c.get("parts", []):
            fr = p.get("functionResponse")
            if fr is not None:
                out[fr.get("id") or fr["name"]] = fr
    return out


def declared_tools(req: RecordedRequest) -> list[str]:
    return [fd["name"] for t in req.body.get("tools", []) for fd in t.get("functionDeclarations", [])]
