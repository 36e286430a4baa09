"""Provider failures -> stable error codes, for clients (`error` envelopes) and logs.

    code, retryable = classify_provider_error(exc)
    report = describe_session_error(ev)   # an AgentSession "error" event

Codes (shared with `brain.errors`): `auth`, `rate_limited`, `timeout`, `unavailable`
(connection refused / dropped, 5xx), `bad_request`, `protocol` (malformed upstream message).
Classification walks the exception's cause chain, so an `APIConnectionError` raised from a
refused WebSocket handshake with HTTP 401 is still `auth`. Messages are short, single-line and
carry no secrets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Literal

from brain.errors import redact_secrets

ProviderErrorCode = Literal["auth", "rate_limited", "timeout", "unavailable", "bad_request", "protocol"]

RETRYABLE: dict[str, bool] = {
    "auth": False,
    "rate_limited": True,
    "timeout": True,
    "unavailable": True,
    "bad_request": False,
    "protocol": False,
}
"""Whether repeating the same request can succeed (matches `brain.errors`)."""

_MAX_MESSAGE = 300

log = logging.getLogger("providers.errors")


class MalformedUpstreamMessage(Exception):
    """A provider sent something that is not a valid protocol message (dropped, session goes on)."""

    def __init__(self, provider: str, detail: str) -> None:
        super().__init__(f"{provider} sent a malformed message: {detail}")
        self.provider = provider
        self.detail = detail


# -- provider names ------------------------------------------------------------------------

_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def tag_provider(obj: Any, name: str) -> None:
    """Remember the configured name (e.g. `openai-realtime`) of a plugin instance."""
    try:
        _names[obj] = name
    except TypeError:  # not weak-referenceable
        pass


def provider_name(source: Any) -> str:
    """The configured name of a plugin instance, else the best the instance tells about itself."""
    if source is None:
        return "unknown"
    try:
        tagged = _names.get(source)
    except TypeError:
        tagged = None
    if tagged:
        return tagged
    wrapped = getattr(source, "wrapped_stt", None)  # livekit's StreamAdapter inside a chain
    if wrapped is not None and wrapped is not source:
        return provider_name(wrapped)
    for attr in ("provider", "label"):
        try:
            value = getattr(source, attr, None)
        except Exception:  # noqa: BLE001 - a property of a half-built plugin may raise
            value = None
        if isinstance(value, str) and value and value != "unknown":
            return value
    return type(source).__name__


# -- classification ------------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(out) < 10:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return out


def _status_of(exc: BaseException) -> int | None:
    """An HTTP status carried by the exception (openai: status_code, aiohttp: status, genai: code)."""
    with warnings.catch_warnings():  # some libraries deprecate one of these spellings
        warnings.simplefilter("ignore", DeprecationWarning)
        for attr in ("status_code", "status", "code"):
            try:
                value = getattr(exc, attr, None)
            except Exception:  # noqa: BLE001 - a property may raise on a half-built exception
                value = None
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def _code_for_status(status: int) -> ProviderErrorCode:
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status in (408, 504):
        return "timeout"
    if 400 <= status < 500:
        return "bad_request"
    return "unavailable"


_AUTH_WORDS = ("invalid_api_key", "authentication", "unauthorized", "permission", "api key", "api_key")
_RATE_WORDS = ("rate_limit", "rate limit", "quota", "resource_exhausted", "too many requests", "billing")
_TIMEOUT_WORDS = ("timeout", "timed out", "deadline")


def _code_for_text(text: str, *, structured: bool) -> ProviderErrorCode | None:
    text = text.lower()
    if not text:
        return None
    if any(w in text for w in _AUTH_WORDS):
        return "auth"
    if any(w in text for w in _RATE_WORDS):
        return "rate_limited"
    if any(w in text for w in _TIMEOUT_WORDS):
        return "timeout"
    if not structured:
        return None  # free text: only the unambiguous words above count
    if "server_error" in text or "internal" in text or "unavailable" in text or "overloaded" in text:
        return "unavailable"
    if "invalid" in text:
        return "bad_request"
    return None


def _code_for_body(body: Any) -> ProviderErrorCode | None:
    """Realtime error events carry `{type, code, message}` instead of an HTTP status."""
    if body is None:
        return None
    fields: list[str] = []
    for attr in ("type", "code", "message"):
        value = body.get(attr) if isinstance(body, dict) else getattr(body, attr, None)
        if isinstance(value, str):
            fields.append(value)
    return _code_for_text(" ".join(fields), structured=True)


def _classify_one(exc: BaseException) -> ProviderErrorCode | None:
    """The code one exception of the chain determines by itself (None: look further)."""
    from pydantic import ValidationError

    if type(exc).__module__.split(".")[0] == "brain":  # the brain's typed errors keep their code
        brain_code = getattr(exc, "code", None)
        if isinstance(brain_code, str) and brain_code in RETRYABLE:
            return brain_code  # type: ignore[return-value]
    if isinstance(exc, MalformedUpstreamMessage | json.JSONDecodeError | ValidationError | UnicodeDecodeError):
        return "protocol"
    status = _status_of(exc)
    if status is not None:
        return _code_for_status(status)
    body_code = _code_for_body(getattr(exc, "body", None))
    if body_code is not None:
        return body_code
    name = type(exc).__name__.lower()
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) or "timeout" in name:
        return "timeout"
    if "authentication" in name or "permissiondenied" in name:
        return "auth"
    if "ratelimit" in name:
        return "rate_limited"
    return None


def classify_provider_error(error: Any) -> tuple[ProviderErrorCode, bool]:
    """`(code, retryable)` for an exception (or an LLMError/STTError/TTSError/RealtimeModelError)."""
    exc = unwrap_provider_error(error)
    if exc is None:
        return "unavailable", True
    chain = _chain(exc)
    for link in chain:
        code = _classify_one(link)
        if code is not None:
            return code, RETRYABLE[code]
    for link in chain:  # e.g. a WebSocket closed with reason "API key not valid"
        code = _code_for_text(safe_message(link), structured=False)
        if code is not None:
            return code, RETRYABLE[code]
    # connection-level failures without a status: refused, reset, closed (e.g. WebSocket 1006)
    return "unavailable", True


def unwrap_provider_error(error: Any) -> BaseException | None:
    """The exception inside a livekit `*Error` model or `ErrorEvent` (or `error` itself)."""
    if isinstance(error, BaseException):
        return error
    inner = getattr(error, "error", None)  # livekit's *Error models and ErrorEvent
    if isinstance(inner, BaseException):
        return inner
    if inner is not None:
        return unwrap_provider_error(inner)
    return None


def safe_message(exc: BaseException | None, *, limit: int = _MAX_MESSAGE) -> str:
    """One line describing the failure, without request bodies or headers."""
    if exc is None:
        return "provider error"
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None)
    if isinstance(status, int) and isinstance(message, str) and message:
        # livekit's APIStatusError prints its body and flags too; clients get message + status
        text = message if str(status) in message or status < 0 else f"{message} (HTTP {status})"
    else:
        text = str(exc).strip() or type(exc).__name__
    text = redact_secrets(" ".join(text.split()))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


# -- AgentSession error events ----------------------------------------------------------------


@dataclass(frozen=True)
class ProviderErrorReport:
    """What a client and the log are told about one provider failure."""

    provider: str
    code: ProviderErrorCode
    message: str
    recoverable: bool
    """False when the session will close because of it (livekit gave up on the provider)."""
    retryable: bool

    def as_tuple(self) -> tuple[str, str, str, bool]:
        return self.provider, self.code, self.message, self.recoverable

    @property
    def client_message(self) -> str:
        """The message for an `error` envelope: prefixed with the provider name."""
        if self.message.startswith(self.provider):
            return self.message
        return f"{self.provider}: {self.message}"


def describe_session_error(event: Any) -> ProviderErrorReport:
    """Turn a livekit-agents session `error` event (`ErrorEvent(error=..., source=...)`) into a report.

    `event.error` is an LLMError / STTError / TTSError / RealtimeModelError whose `.error` is the
    exception; `event.source` is the plugin instance (its tagged name is used when known).
    """
    wrapped = getattr(event, "error", event)
    exc = unwrap_provider_error(wrapped)
    code, retryable = classify_provider_error(exc if exc is not None else wrapped)
    recoverable = bool(getattr(wrapped, "recoverable", True))
    name = provider_name(getattr(event, "source", None))
    return ProviderErrorReport(
        provider=name,
        code=code,
        message=safe_message(exc),
        recoverable=recoverable,
        retryable=retryable,
    )


def log_provider_error(report: ProviderErrorReport, logger: logging.Logger | None = None) -> None:
    """The one log line per provider failure (provider name and code first, for grepping)."""
    (logger or log).warning(
        "provider error: provider=%s code=%s recoverable=%s: %s",
        report.provider,
        report.code,
        report.recoverable,
        report.message,
    )
