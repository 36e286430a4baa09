"""The input of one reply: what the user said, in which conversation."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


def new_turn_id() -> str:
    return "turn_" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Turn:
    transcript: str
    conversation_id: str
    turn_id: str = field(default_factory=new_turn_id)
    user_id: str | None = None
    """Identity of the user the reply is for; approvals for this turn are addressed to it."""
    go_ahead: Callable[[], Awaitable[bool]] | None = field(default=None, compare=False, repr=False)
    """Awaited once, before the turn's first tool call or approval request (its text streams
    meanwhile): False ends the turn `interrupted` with no tool run. The agent sets it for a reply
    started before the user's turn was over (preemptive generation): its tools wait until the
    reply is kept, and a reply thrown away runs none. None: no wait."""
