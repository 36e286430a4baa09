"""Human-in-the-loop approval gate.

The brain registers a waiter *before* it publishes the request, so a decision that arrives
immediately after publication is never lost. Transports (the bridge, a console prompt, tests)
resolve requests by id through the same gate.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from .events import ReportLevel

Outcome = Literal["approved", "rejected", "timeout", "cancelled"]


def new_request_id() -> str:
    return "hitl_" + uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class ApprovalRequest:
    request_id: str
    call_id: str
    conversation_id: str
    turn_id: str
    tool_name: str
    arguments: dict[str, Any]
    prompt: str
    deadline_ms: int
    user_id: str | None = None
    report: ReportLevel = "name"


@dataclass(frozen=True)
class ApprovalDecision:
    approved: bool
    arguments: dict[str, Any] | None = None
    """Replacement arguments (approve with modifications)."""
    reason: str | None = None
    decided_by: str | None = None
    withdrawn: bool = False
    """Nobody answered: the request was withdrawn (the user left, the session closed). The tool
    does not run, the outcome is `cancelled`, and the model is not told the user rejected it."""

    def __post_init__(self) -> None:
        if self.withdrawn and self.approved:
            raise ValueError("a withdrawn approval request cannot be approved")

    @classmethod
    def approve(cls, arguments: dict[str, Any] | None = None, *, by: str | None = None) -> ApprovalDecision:
        return cls(True, arguments=arguments, decided_by=by)

    @classmethod
    def reject(cls, reason: str | None = None, *, by: str | None = None) -> ApprovalDecision:
        return cls(False, reason=reason, decided_by=by)

    @classmethod
    def withdraw(cls, reason: str = "the approval was cancelled", *, by: str | None = None) -> ApprovalDecision:
        """What a transport resolves a request with when nobody can answer it any more (for a gate
        without `cancel_all`): the same outcome as `cancel_all`, not a user's rejection."""
        return cls(False, reason=reason, decided_by=by, withdrawn=True)


class ResolveStatus(StrEnum):
    OK = "ok"
    UNKNOWN = "unknown"
    ALREADY_RESOLVED = "already_resolved"
    EXPIRED = "expired"


class ApprovalGate(Protocol):
    """What the brain needs from an approval transport."""

    def register(self, request: ApprovalRequest) -> asyncio.Future[ApprovalDecision]: ...

    def resolve(self, request_id: str, decision: ApprovalDecision) -> ResolveStatus: ...

    def finish(self, request_id: str, outcome: Outcome) -> None: ...

    def get(self, request_id: str) -> ApprovalRequest | None: ...


Policy = Callable[[ApprovalRequest], "ApprovalDecision | None | Awaitable[ApprovalDecision | None]"]


@dataclass
class _Pending:
    request: ApprovalRequest
    future: asyncio.Future[ApprovalDecision]
    policy_task: asyncio.Task[None] | None = None


@dataclass
class InProcessApprovalGate:
    """An approval gate living in the brain's process.

    `policy` (optional) decides automatically: it is called with each request and may return a
    decision (or an awaitable of one); returning None leaves the request for someone else.
    Anything else (`True`, say) fails the call, as a policy that raises does.
    """

    policy: Policy | None = None
    history_size: int = 1024
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _finished: OrderedDict[str, Outcome] = field(default_factory=OrderedDict)

    def register(self, request: ApprovalRequest) -> asyncio.Future[ApprovalDecision]:
        fut: asyncio.Future[ApprovalDecision] = asyncio.get_running_loop().create_future()
        entry = _Pending(request, fut)
        self._pending[request.request_id] = entry
        if self.policy is not None:
            entry.policy_task = asyncio.get_running_loop().create_task(self._apply_policy(request))
        return fut

    async def _apply_policy(self, request: ApprovalRequest) -> None:
        assert self.policy is not None
        try:
            decision = self.policy(request)
            if inspect.isawaitable(decision):
                decision = await decision
        except Exception as exc:  # a bug in the policy: the brain fails the call now, not at the deadline
            entry = self._pending.get(request.request_id)
            if entry is not None and not entry.future.done():
                entry.future.set_exception(exc)
            return
        if decision is not None:
            self.resolve(request.request_id, decision)

    def resolve(self, request_id: str, decision: ApprovalDecision) -> ResolveStatus:
        entry = self._pending.get(request_id)
        if entry is None:
            outcome = self._finished.get(request_id)
            if outcome is None:
                return ResolveStatus.UNKNOWN
            return ResolveStatus.EXPIRED if outcome in ("timeout", "cancelled") else ResolveStatus.ALREADY_RESOLVED
        if entry.future.done():
            # cancelled (the participant left) before the brain finished the request
            cancelled = entry.future.cancelled() or isinstance(entry.future.exception(), ApprovalCancelled)
            return ResolveStatus.EXPIRED if cancelled else ResolveStatus.ALREADY_RESOLVED
        if time.time() * 1000 > entry.request.deadline_ms:
            # the brain's own timer is due (late only when the event loop stalled): the request
            # said "answer before the deadline", so a later answer must not run the tool
            return ResolveStatus.EXPIRED
        entry.future.set_result(decision)
        return ResolveStatus.OK

    def finish(self, request_id: str, outcome: Outcome) -> None:
        """Forget a request once the brain is done with it (decided, timed out or cancelled)."""
        entry = self._pending.pop(request_id, None)
        if entry is not None:
            if entry.policy_task is not None and not entry.policy_task.done():
                entry.policy_task.cancel()
            if not entry.future.done():
                entry.future.cancel()
        self._finished[request_id] = outcome
        while len(self._finished) > self.history_size:
            self._finished.popitem(last=False)

    def get(self, request_id: str) -> ApprovalRequest | None:
        entry = self._pending.get(request_id)
        return entry.request if entry else None

    def pending(self, conversation_id: str | None = None) -> list[ApprovalRequest]:
        return [
            e.request
            for e in self._pending.values()
            if conversation_id is None or e.request.conversation_id == conversation_id
        ]

    def cancel_all(self, conversation_id: str | None = None, *, by: str | None = None) -> int:
        """Reject every pending request (e.g. the participant left). Returns how many."""
        n = 0
        for req in self.pending(conversation_id):
            entry = self._pending[req.request_id]
            if not entry.future.done():
                entry.future.set_exception(ApprovalCancelled(by))
                n += 1
        return n


class ApprovalCancelled(Exception):
    """Set on a pending approval's future when the session that could answer it is gone."""

    def __init__(self, by: str | None = None) -> None:
        super().__init__("approval cancelled")
        self.by = by


def auto_approve(request: ApprovalRequest) -> ApprovalDecision:
    """A policy for demos and tests: approve everything, recorded as decided by 'auto'."""
    return ApprovalDecision.approve(by="auto")


def auto_reject(request: ApprovalRequest) -> ApprovalDecision:
    return ApprovalDecision.reject("automatic rejection", by="auto")
