"""One error hierarchy for the brain, with stable codes clients can switch on."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, SecretStr

ErrorCode = Literal[
    "auth",
    "rate_limited",
    "timeout",
    "unavailable",
    "bad_request",
    "protocol",
    "tool_failed",
    "cancelled",
    "config",
    "internal",
]


_SECRET_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-*]{6,}"), "[redacted]"),  # OpenAI-style keys, masked or not
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}|\bwhsec_[A-Za-z0-9]{16,}"), "[redacted]"),  # Stripe
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{10,}"), "[redacted]"),  # Google API keys
    (re.compile(r"(?<![A-Za-z0-9])eyJ[A-Za-z0-9_\-]{1,256}\.[A-Za-z0-9_\-]{1,8192}\.[A-Za-z0-9_\-]*"), "[redacted]"),  # JWTs (LiveKit tokens)
    # a scheme and a credential-like value (`credential_like`: "Token estimation failed" and
    # "Basic Authentication" stay)
    (re.compile(r"\b(Bearer)\s+[A-Za-z0-9_\-.*=+/]{8,}"), r"\1 [redacted]"),  # a bearer value is always one
    (re.compile(r"\b(Token|Basic)\s+([A-Za-z0-9_\-.*=+/]{8,})"),
     lambda m: f"{m.group(1)} [redacted]" if credential_like(m.group(2)) else m.group(0)),
    (re.compile(r"([?&](?:key|api_key|apikey|token|access_token)=)[^&\s'\"]+", re.I), r"\1[redacted]"),
    # a secret-named field in free text or a repr: "password: x", "api_key=x", "'client_secret': 'x'"
    (re.compile(r"(\b[A-Za-z_]*(?i:password|passwd|pwd|secret|token|apikey|[_\-]key)['\"]?\s*[:=]\s*['\"]?)"
                r"[^\s'\",;&)}\]]+"), r"\1[redacted]"),
    (re.compile(r"((?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]+:)[^@\s/]+(?=@)"), r"\1[redacted]"),  # URL passwords
    (re.compile(r"\b[0-9a-fA-F]{32,}\b"), "[redacted]"),  # hex keys (Deepgram, ...)
]


def credential_like(token: str) -> bool:
    """A token after "Token" / "Basic" that is a credential, not a word: it has a
    digit, an "=" or a capital after a lowercase letter (base64). Linear: a regex lookahead
    for the same took quadratic time on a long run of letters."""
    if "=" in token or any(c.isdigit() for c in token):
        return True
    first_lower = next((i for i, c in enumerate(token) if c.islower()), None)
    return first_lower is not None and any(c.isupper() for c in token[first_lower + 1 :])


_KNOWN_SECRETS: tuple[str, ...] = ()
"""Longest first (a key inside another); replaced as a whole on registration, never mutated,
so a redaction on another thread reads a consistent snapshot."""
_REGISTRY_LOCK = threading.Lock()
MIN_KNOWN_SECRET = 12
"""Shorter values are not registered: placeholders such as "not-needed" (a local server's key)
are ordinary words, and replacing them would mangle messages."""


def register_secret(value: str | None) -> None:
    """Scrub `value` literally wherever it appears from now on, in this process. For the
    configured keys: a proxy or provider that echoes one verbatim ("Received API Key = ...")
    does so in a shape no pattern below knows."""
    global _KNOWN_SECRETS
    if not value or len(value.strip()) < MIN_KNOWN_SECRET:
        return
    with _REGISTRY_LOCK:
        if value.strip() not in _KNOWN_SECRETS:
            _KNOWN_SECRETS = tuple(sorted({*_KNOWN_SECRETS, value.strip()}, key=len, reverse=True))


def register_secrets_of(settings: Any) -> None:
    """`register_secret` every `SecretStr` of a pydantic settings object, nested ones too, and
    the keys a model holds as plain strings and lists by its `secret_values()` method."""
    if not isinstance(settings, BaseModel):
        return
    more = getattr(settings, "secret_values", None)
    if callable(more):
        for value in more():
            register_secret(value)
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
        elif isinstance(value, BaseModel):
            register_secrets_of(value)


def redact_secrets(text: str) -> str:
    """`text` with the registered secrets and anything shaped like a credential replaced:
    provider error messages echo keys (OpenAI's 401 names the key it got, masked but for its
    last characters), URLs carry `?key=`, and these messages go to logs and to clients."""
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class BrainError(Exception):
    """Base class. `code` is stable across releases; `message` is for humans."""

    code: ClassVar[ErrorCode] = "unavailable"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str | None = None, status: int | None = None):
        message = redact_secrets(message)
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status

    def __str__(self) -> str:
        where = f"[{self.provider}] " if self.provider else ""
        return f"{where}{self.code}: {self.message}"


class AuthError(BrainError):
    code = "auth"


class RateLimitedError(BrainError):
    code = "rate_limited"
    retryable = True


class ProviderTimeoutError(BrainError):
    code = "timeout"
    retryable = True


class UnavailableError(BrainError):
    code = "unavailable"
    retryable = True


class BadRequestError(BrainError):
    code = "bad_request"


class ContextTooLongError(BadRequestError):
    """The model refused the request as longer than its context (OpenAI `context_length_exceeded`,
    Gemini's "input token count exceeds the maximum"): still `bad_request` for clients, but the
    brain drops the oldest turns of the conversation and asks again. A custom backend raises it
    for the same."""


_CONTEXT_TOO_LONG = re.compile(
    r"context[ _-]?(?:length|window|size)|input token count|maximum number of tokens|prompt is too long"
    r"|string too long|string_above_max_length",
    re.I,
)


def context_too_long(status: int, message: str) -> bool:
    """Whether an HTTP error says the request exceeds the model's context (a 413 is a request too
    large for the server, which the history is): OpenAI and compatible servers (vLLM, llama.cpp,
    Groq) and Gemini word it as matched here; OpenAI's "string too long" (one message over its
    10 MB limit, e.g. a huge pasted text) too: with it in the history, every turn would fail."""
    return status == 413 or (status == 400 and _CONTEXT_TOO_LONG.search(message) is not None)


class ProtocolError(BrainError):
    code = "protocol"


class ToolFailedError(BrainError):
    code = "tool_failed"


class CancelledTurnError(BrainError):
    code = "cancelled"


class InternalError(BrainError):
    """An unexpected exception inside a turn (a bug in a tool, a custom gate or the brain)."""

    code = "internal"


class ConfigError(BrainError, ValueError):
    """Bad or missing configuration; raised at start-up, never mid-turn."""

    code = "config"


def error_for_status(status: int, message: str, *, provider: str) -> BrainError:
    """Map an HTTP status from any provider to the matching typed error."""
    if status in (401, 403):
        return AuthError(message, provider=provider, status=status)
    if status == 429:
        return RateLimitedError(message, provider=provider, status=status)
    if status in (408, 504):
        return ProviderTimeoutError(message, provider=provider, status=status)
    if context_too_long(status, message):
        return ContextTooLongError(message, provider=provider, status=status)
    if 400 <= status < 500:
        return BadRequestError(message, provider=provider, status=status)
    return UnavailableError(message, provider=provider, status=status)
