"""Typed brain events, each a small pydantic model with a `type` discriminator.

They are published through `EventHub` (no transport needed); the bridge maps them to envelopes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ReportLevel = Literal["none", "name", "args", "full"]


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    conversation_id: str
    turn_id: str
    ts: int = Field(default_factory=_now_ms)


class TurnStarted(_Event):
    type: Literal["turn.started"] = "turn.started"
    transcript: str


class TextDelta(_Event):
    type: Literal["text.delta"] = "text.delta"
    text: str


class ToolStarted(_Event):
    type: Literal["tool.started"] = "tool.started"
    call_id: str
    name: str
    arguments: dict[str, Any]
    report: ReportLevel = "name"


class ApprovalRequested(_Event):
    type: Literal["approval.requested"] = "approval.requested"
    request_id: str
    call_id: str
    name: str
    prompt: str
    arguments: dict[str, Any]
    report: ReportLevel = "name"
    user_id: str | None = None
    deadline_ms: int


class ApprovalResolved(_Event):
    type: Literal["approval.resolved"] = "approval.resolved"
    request_id: str
    call_id: str
    name: str
    outcome: Literal["approved", "rejected", "timeout", "cancelled"]
    decided_by: str | None = None
    reason: str | None = None
    modified: bool = False


class ToolFinished(_Event):
    type: Literal["tool.finished"] = "tool.finished"
    call_id: str
    name: str
    status: Literal["ok", "error", "cancelled"]
    result: Any = None
    error: str | None = None
    report: ReportLevel = "name"


class TurnDone(_Event):
    type: Literal["turn.done"] = "turn.done"
    reason: Literal["completed", "interrupted", "error"]
    text: str = ""


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    code: str
    message: str
    provider: str | None = None
    fatal: bool = False


BrainEvent = Annotated[
    TurnStarted
    | TextDelta
    | ToolStarted
    | ApprovalRequested
    | ApprovalResolved
    | ToolFinished
    | TurnDone
    | ErrorEvent,
    Field(discriminator="type"),
]

Subscriber = Callable[[Any], None]


class EventHub:
    """Fan-out of brain events to synchronous subscribers.

    Subscribers must not block: the voice pipeline never waits on them. A subscriber that raises
    is logged and skipped, never allowed to break the turn.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Any) -> None:
        import logging

        for cb in list(self._subscribers):
            try:
                cb(event)
            except Exception:  # noqa: BLE001 - a broken subscriber must not end the turn
                logging.getLogger("brain.events").exception("event subscriber failed")
