"""Credentials out of the logs, whoever logs them.

Provider SDKs and livekit-agents log failed requests with the provider's message, and those
messages echo credentials (OpenAI's 401 names the key it was given, masked but for its last
characters; Google's URLs carry `?key=`). The agent's own reports are redacted where they are
built (`brain.errors.redact_secrets`); this catches the rest: every log record created in the
process has its message and its exception's traceback redacted before any handler (plain,
livekit's pretty or JSON formatter) sees it. (`extra={...}` fields are not covered: the logger
sets them after the record is made.)
"""

from __future__ import annotations

import logging
from typing import Any

from brain.errors import redact_secrets


class RedactedRecord(logging.LogRecord):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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


def install() -> None:
    """Make every log record of this process a redacted one (idempotent)."""
    if logging.getLogRecordFactory() is not RedactedRecord:
        logging.setLogRecordFactory(RedactedRecord)
