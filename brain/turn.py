"""The input of one reply: what the user said, in which conversation."""

from __future__ import annotations

import uuid
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
