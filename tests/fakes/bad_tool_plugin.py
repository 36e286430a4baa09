"""A tool module (for BRAIN_TOOLS tests) whose tool takes a parameter JSON cannot describe."""

from __future__ import annotations

import socket

from brain import tool


@tool
def open_door(key: socket.socket) -> str:
    """Open the door."""
    return "open"
