"""Provider failures of a session -> one log line and one `error` envelope each.

`fatal` in the envelope means "the session is about to close because of this". livekit-agents
marks an error `recoverable=False` as soon as one request gave up (retries exhausted), but it
only closes the session after more than `max_unrecoverable_errors` such errors in a row from
the same STT / LLM / TTS (the STT count resets on a transcript, the LLM / TTS counts when the
agent speaks); a realtime model's unrecoverable error closes it at once. `ErrorBudget` mirrors
that rule from the session's public events, so clients are told `fatal: true` only when it is.
"""

from __future__ import annotations

import logging
from typing import Any

from providers.provider_errors import (
    ProviderErrorReport,
    describe_session_error,
    log_provider_error,
)

log = logging.getLogger("agent.errors")

KINDS = ("stt_error", "llm_error", "tts_error")


class ErrorBudget:
    def __init__(self, session: Any) -> None:
        self.limit = int(getattr(getattr(session, "conn_options", None), "max_unrecoverable_errors", 3))
        self.counts = dict.fromkeys(KINDS, 0)
        session.on("user_input_transcribed", self._on_transcribed)
        session.on("agent_state_changed", self._on_agent_state)

    def _on_transcribed(self, ev: Any) -> None:
        if getattr(ev, "transcript", ""):
            self.counts["stt_error"] = 0

    def _on_agent_state(self, ev: Any) -> None:
        if getattr(ev, "new_state", None) == "speaking":
            self.counts["llm_error"] = self.counts["tts_error"] = 0

    def closes_session(self, kind: str, recoverable: bool) -> bool:
        """Count one error; True if the session will close because of it."""
        if recoverable:
            return False
        if kind not in self.counts:  # e.g. realtime_model_error: closes at once
            return True
        self.counts[kind] += 1
        return self.counts[kind] > self.limit


def error_kind(event: Any) -> str:
    """`stt_error`, `tts_error`, `llm_error`, `realtime_model_error` (livekit's error types)."""
    return str(getattr(getattr(event, "error", None), "type", "") or "session_error")


def report_for(event: Any) -> ProviderErrorReport:
    """The report of a session `error` event, logged once (provider name and code first)."""
    report = describe_session_error(event)
    log_provider_error(report, log)
    return report
