"""Example tools the offline backend and the demo use: one plain, one that needs approval.

A deployment adds its own module the same way and names it in BRAIN_TOOLS.
"""

from __future__ import annotations

import zlib

from .tools import tool

_CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "foggy", "snowy"]


@tool(report="args")
def get_weather(city: str) -> dict[str, object]:
    """Current weather for a city (deterministic sample data; no network)."""
    h = zlib.crc32(city.strip().lower().encode())
    return {"city": city, "condition": _CONDITIONS[h % len(_CONDITIONS)], "temperature_c": 5 + h % 20}


@tool(
    requires_approval=True,
    report="args",
    approval_prompt="Book a table for {party_size} at {restaurant} at {time}?",
)
def book_table(restaurant: str, party_size: int, time: str = "19:00") -> dict[str, object]:
    """Book a restaurant table. Needs the user's approval."""
    if party_size < 1 or party_size > 20:
        raise ValueError("party_size must be between 1 and 20")
    confirmation = f"BK{zlib.crc32(f'{restaurant}|{party_size}|{time}'.encode()) % 100000:05d}"
    return {"restaurant": restaurant, "party_size": party_size, "time": time, "confirmation": confirmation}
