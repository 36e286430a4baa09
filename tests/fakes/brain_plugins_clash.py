"""A second tool module for BRAIN_TOOLS tests: re-exports `convert` (the same tool) and defines
another `shout` (a different tool under a name `brain_plugins` already uses)."""

from __future__ import annotations

from brain import tool
from tests.fakes.brain_plugins import convert

__all__ = ["convert", "shout"]


@tool
def shout(text: str) -> str:
    """Repeat the text three times."""
    return " ".join([text] * 3)
