"""Parsing client messages: raw text in, a typed message or a specific error out. Never raises."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .protocol import (
    CLIENT_MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Ack,
    AckData,
    AgentInterrupt,
    ErrorCode,
    HitlRespond,
    ReplyError,
    ReplyErrorData,
    SessionSync,
    UserText,
    client_message_adapter,
)

ParsedMessage = HitlRespond | AgentInterrupt | UserText | SessionSync


@dataclass(frozen=True)
class Rejected:
    """A message that cannot be acted on, and why."""

    code: ErrorCode
    message: str
    id: str | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _client_id(obj: dict[str, Any]) -> str | None:
    cid = obj.get("id")
    if not isinstance(cid, str) or len(cid) > 64:
        return None
    try:
        cid.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be echoed back as JSON text
        return None
    return cid


def _describe(exc: ValidationError) -> str:
    """The first problem, by location, without echoing the (possibly large) input."""
    errs = exc.errors(include_url=False, include_input=False)
    if not errs:
        return "invalid message"
    first = errs[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc or 'message'}: {first.get('msg', 'invalid')}{more}"[:300]


class _NotJSON(ValueError):
    pass


def _not_json(name: str) -> Any:
    """Python's parser accepts NaN and Infinity; JSON has neither (and NaN passes every range check)."""
    raise _NotJSON(f"{name} is not a JSON value")


def parse_client_message(raw: Any, max_bytes: int) -> ParsedMessage | Rejected:
    if isinstance(raw, bytes | bytearray):
        size = len(raw)
        if size > max_bytes:
            return Rejected("too_large", f"message is {size} bytes; the limit is {max_bytes}")
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return Rejected("malformed_json", "message is not valid UTF-8")
    if not isinstance(raw, str):
        return Rejected("invalid_message", "message must be a JSON text")
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return Rejected("too_large", f"message is {size} bytes; the limit is {max_bytes}")
    try:
        obj = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        where = f" at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        why = f": {exc}" if isinstance(exc, _NotJSON) else ""
        return Rejected("malformed_json", f"message is not valid JSON{where}{why}")
    if not isinstance(obj, dict):
        return Rejected("invalid_message", f"message must be a JSON object, got {type(obj).__name__}")
    cid = _client_id(obj)
    if "v" not in obj:
        return Rejected("invalid_message", "missing protocol version 'v'", cid)
    v = obj["v"]
    if type(v) is not int or v != PROTOCOL_VERSION:
        return Rejected("unsupported_version", f"protocol version {v!r} is not supported; use {PROTOCOL_VERSION}", cid)
    mtype = obj.get("type")
    if not isinstance(mtype, str):
        return Rejected("invalid_message", "missing or non-string 'type'", cid)
    if mtype not in CLIENT_MESSAGE_TYPES:
        shown = mtype if len(mtype) <= 40 else mtype[:40] + "…"
        return Rejected("unknown_type", f"unknown message type {shown!r}; expected one of {', '.join(CLIENT_MESSAGE_TYPES)}", cid)
    try:
        msg = client_message_adapter.validate_python(obj, strict=True)
    except ValidationError as exc:
        return Rejected("invalid_message", _describe(exc), cid)
    except RecursionError:
        return Rejected("invalid_message", "message is nested too deeply", cid)
    return msg  # type: ignore[no-any-return]


_SYNC_ONLY = {"data": {"pending", "truncated"}}


def ack_json(message_type: str, client_id: str | None, request_id: str | None = None) -> str:
    """An ack without the fields only a `session.sync` ack carries (see `EventBridge`)."""
    ack = Ack(id=client_id, ts=_now_ms(), data=AckData(type=message_type, request_id=request_id))
    return ack.model_dump_json(exclude=_SYNC_ONLY)


def error_json(code: ErrorCode, message: str, client_id: str | None = None) -> str:
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return ReplyError(id=client_id, ts=_now_ms(), data=ReplyErrorData(code=code, message=message)).model_dump_json()
