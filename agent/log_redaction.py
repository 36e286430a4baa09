"""Credentials out of the logs, whoever logs them.

Provider SDKs and livekit-agents log failed requests with the provider's message, and those
messages echo credentials (OpenAI's 401 names the key it was given, masked but for its last
characters; Google's URLs carry `?key=`). The agent's own reports are redacted where they are
built (`brain.errors.redact_secrets`); this catches the rest: every log record created in the
process has its message and its exception's traceback redacted before any handler (plain,
livekit's pretty or JSON formatter) sees it.

`extra={...}` fields (livekit logs `extra={"error": str(e)}`) are set by the logger after the
record is made, so they are redacted when the message is first read: every formatter, and
livekit's job-process log forwarder, reads the message before the extra fields.

Private data too: livekit-agents marks the fields that carry the conversation with a `pii`
segment (`lk.pii.user_input`, `lk.pii.arguments`, ...; its telemetry drops them) and logs some
of them at WARNING (the user's words when it skips a reply, a tool call's arguments when it
repairs their JSON). In a record above DEBUG such a field reads `[private]`, whatever level the
logging is set to; a DEBUG record keeps it (redacted like any other): it is shown only at the
DEBUG level, which an operator chooses to see the conversation.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from brain.errors import redact_secrets, register_secret

_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}
_MAX_DEPTH = 4
PRIVATE = "[private]"


def is_private_field(name: str) -> bool:
    """A field livekit marks as conversation content: a dot-separated `pii` segment."""
    return "pii" in name.lower().split(".")


class RedactedRecord(logging.LogRecord):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._extras_redacted = False
        try:
            message = super().getMessage()
        except Exception:  # noqa: BLE001 - bad arguments: the handler reports it, as without us
            return
        redacted = redact_secrets(message)
        if redacted != message:
            self.msg, self.args = redacted, ()
        if self.exc_info and self.exc_info[0] is not None:
            text = logging.Formatter().formatException(self.exc_info)
            clean = redact_secrets(text)
            if clean != text:
                # every formatter prints `exc_text` when there is no `exc_info` to format; the
                # exception object itself (and its message) is dropped only when it held a secret
                self.exc_info, self.exc_text = None, clean

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        if not self._extras_redacted:
            self._extras_redacted = True
            private = self.levelno > logging.DEBUG
            for key, value in list(self.__dict__.items()):
                if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                    if private and value is not None and is_private_field(key):
                        self.__dict__[key] = PRIVATE
                        continue
                    clean = redact_value(value)
                    if clean is not value:
                        self.__dict__[key] = clean
        return super().getMessage()


def redact_value(value: Any, depth: int = 0) -> Any:
    """`value` itself when it holds nothing credential-shaped; else a redacted copy (strings and
    containers keep their shape; any other object becomes its redacted `str()`)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        clean = redact_secrets(value)
        return value if clean == value else clean
    if depth < _MAX_DEPTH and isinstance(value, dict):
        items = {k: redact_value(v, depth + 1) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if depth < _MAX_DEPTH and isinstance(value, list | tuple):
        parts = [redact_value(v, depth + 1) for v in value]
        if all(p is v for p, v in zip(parts, value, strict=True)):
            return value
        return parts if isinstance(value, list) else tuple(parts)
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - an object that cannot print itself carries no text to leak
        return value
    clean = redact_secrets(text)
    return value if clean == text else clean


_SECRET_VARIABLE = re.compile(r"(?:_API_KEY|_KEY|_SECRET|_TOKEN|_PASSWORD)$")


def install() -> None:
    """Make every log record of this process a redacted one (idempotent). The values of
    secret-named environment variables (`*_API_KEY`, `*_SECRET`, ...: plugin keys the settings
    do not hold too) are scrubbed literally, besides everything credential-shaped."""
    for name, value in os.environ.items():
        if _SECRET_VARIABLE.search(name.upper()):
            register_secret(value)
    if logging.getLogRecordFactory() is not RedactedRecord:
        logging.setLogRecordFactory(RedactedRecord)
