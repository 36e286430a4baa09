"""Provider failures -> stable codes: the exceptions livekit plugins and SDKs really raise."""

from __future__ import annotations

import json
import logging
import time

import aiohttp
import httpx2 as httpx
import openai
import pytest
from google.genai import errors as genai_errors
from livekit.agents import APIConnectionError, APIError, APIStatusError, APITimeoutError, llm
from livekit.agents.voice.events import ErrorEvent as SessionErrorEvent
from openai.types.realtime import RealtimeError
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from brain import RateLimitedError
from providers.provider_errors import (
    RETRYABLE,
    MalformedUpstreamMessage,
    classify_provider_error,
    describe_session_error,
    log_provider_error,
    tag_provider,
)


def _raised_from(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        raise outer from cause
    except BaseException as e:  # noqa: BLE001
        return e


def _http(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", "http://127.0.0.1/v1/audio/speech"))


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "auth"), (403, "auth"), (429, "rate_limited"), (408, "timeout"), (504, "timeout"),
     (400, "bad_request"), (422, "bad_request"), (500, "unavailable"), (503, "unavailable")],
)
def test_http_status_errors(status: int, code: str) -> None:
    assert classify_provider_error(APIStatusError("failed", status_code=status)) == (code, RETRYABLE[code])


def test_connection_and_timeout_errors() -> None:
    assert classify_provider_error(APITimeoutError()) == ("timeout", True)
    dropped = _raised_from(APIConnectionError("connection closed unexpectedly"), ConnectionResetError("reset"))
    assert classify_provider_error(dropped) == ("unavailable", True)
    assert classify_provider_error(APIConnectionError()) == ("unavailable", True)


def test_refused_websocket_handshake_is_classified_by_its_status() -> None:
    handshake = aiohttp.WSServerHandshakeError(None, (), status=401, message="Invalid response status")  # type: ignore[arg-type]
    exc = _raised_from(APIConnectionError("OpenAI Realtime API client connection error"), handshake)
    assert classify_provider_error(exc) == ("auth", False)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (RealtimeError(type="invalid_request_error", code="invalid_api_key", message="Incorrect API key"), "auth"),
        (RealtimeError(type="invalid_request_error", code="rate_limit_exceeded", message="slow down"), "rate_limited"),
        (RealtimeError(type="insufficient_quota", message="quota"), "rate_limited"),
        (RealtimeError(type="server_error", message="The server had an error"), "unavailable"),
        (RealtimeError(type="invalid_request_error", code="invalid_value", message="bad voice"), "bad_request"),
    ],
)
def test_realtime_error_events(body: RealtimeError, code: str) -> None:
    assert classify_provider_error(APIError("OpenAI Realtime API returned an error", body=body))[0] == code


def test_sdk_exceptions() -> None:
    assert classify_provider_error(openai.AuthenticationError("no", response=_http(401), body=None)) == ("auth", False)
    assert classify_provider_error(openai.RateLimitError("slow", response=_http(429), body=None)) == ("rate_limited", True)
    request = httpx.Request("POST", "http://127.0.0.1/v1")
    assert classify_provider_error(openai.APITimeoutError(request=request))[0] == "timeout"
    assert classify_provider_error(openai.APIConnectionError(request=request))[0] == "unavailable"
    assert classify_provider_error(genai_errors.ClientError(429, {"error": {"message": "quota"}}))[0] == "rate_limited"
    assert classify_provider_error(genai_errors.ServerError(503, {"error": {"message": "busy"}}))[0] == "unavailable"


def test_websocket_close_reason_is_read_when_there_is_no_status() -> None:
    closed = ConnectionClosedError(Close(1008, "API key not valid. Please pass a valid API key."), None)
    assert classify_provider_error(_raised_from(APIConnectionError("gemini closed"), closed)) == ("auth", False)
    abnormal = ConnectionClosedError(None, None)  # 1006: no close frame at all
    assert classify_provider_error(_raised_from(APIConnectionError("gemini closed"), abnormal)) == ("unavailable", True)


def test_malformed_upstream_messages_are_protocol_errors() -> None:
    assert classify_provider_error(MalformedUpstreamMessage("openai-realtime", "not JSON")) == ("protocol", False)
    try:
        json.loads("{nope")
    except json.JSONDecodeError as e:
        assert classify_provider_error(_raised_from(APIError("bad event"), e))[0] == "protocol"


def test_brain_errors_keep_their_code() -> None:
    assert classify_provider_error(RateLimitedError("429", provider="openai")) == ("rate_limited", True)


def test_session_error_event_becomes_a_report(caplog: pytest.LogCaptureFixture) -> None:
    class SomeRealtimeModel:  # stands for a plugin instance; its configured name is used
        provider = "api.openai.com"

    source = SomeRealtimeModel()
    tag_provider(source, "openai-realtime")
    error = llm.RealtimeModelError(
        timestamp=time.time(),
        label="livekit.plugins.openai.realtime.RealtimeModel",
        error=APIStatusError("Too Many Requests (429)", status_code=429),
        recoverable=True,
    )
    report = describe_session_error(SessionErrorEvent(error=error, source=source))
    assert report.as_tuple() == ("openai-realtime", "rate_limited", "Too Many Requests (429)", True)
    assert report.retryable

    with caplog.at_level(logging.WARNING):
        log_provider_error(report)
    assert "provider error: provider=openai-realtime code=rate_limited recoverable=True" in caplog.text


def test_untagged_source_and_unrecoverable_error() -> None:
    class SomeTTS:
        provider = "api.example.com"

    error = llm.LLMError(timestamp=time.time(), label="x", error=APITimeoutError(), recoverable=False)
    report = describe_session_error(SessionErrorEvent(error=error, source=SomeTTS()))
    assert (report.provider, report.code, report.recoverable) == ("api.example.com", "timeout", False)
    status = APIStatusError("quota exceeded", status_code=429, body={"detail": "x" * 1000})
    assert describe_session_error(SessionErrorEvent(error=status, source=None)).message == "quota exceeded (HTTP 429)"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        # OpenAI's 401 names the key it was given, masked but for its last characters
        ("Incorrect API key provided: sk-proj-****************************wXyZ. You can find...", "wXyZ"),
        ("invalid key sk-abcdef0123456789", "abcdef0123456789"),
        ("GET https://generativelanguage.googleapis.com/ws?key=AIzaSyD-0123456789abcdefghij failed", "AIzaSy"),
        ("request with ?alt=sse&key=plain-secret-value refused", "plain-secret-value"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl", "eyJ"),
        ("Token 0123456789abcdef0123456789abcdef01234567 rejected", "0123456789abcdef"),
    ],
)
def test_credentials_in_provider_messages_are_redacted(text: str, secret: str) -> None:
    """Provider messages reach logs and clients: whatever is shaped like a credential is
    replaced, in the provider report and in brain errors alike; the rest of the message stays."""
    from brain.errors import AuthError

    report = describe_session_error(SessionErrorEvent(error=APIStatusError(text, status_code=401), source=None))
    assert secret not in report.message and "[redacted]" in report.message, report.message
    assert report.code == "auth"
    brain_error = AuthError(text, provider="openai")
    assert secret not in brain_error.message and secret not in str(brain_error)
    assert text.split()[0] in report.message  # the words around it are kept


def test_redaction_leaves_ordinary_messages_alone() -> None:
    from brain.errors import redact_secrets

    for text in ("OPENAI_API_KEY is not set", "deepgram connection closed unexpectedly (HTTP 1011)",
                 "Incorrect API key provided. See https://platform.openai.com/account/api-keys",
                 "Token estimation failed for the prompt"):
        assert redact_secrets(text) == text
