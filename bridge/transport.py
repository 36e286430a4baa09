"""The small interface the bridge runs on, plus two in-process transports.

A transport moves envelope JSON out (`send`) and reports what comes in: client messages (each
answered with one reply string, to its sender only), clients joining and leaving, and the end of
the session. `LiveKitRoomTransport` (bridge.livekit_transport) is the real one; `JsonLinesTransport`
prints one envelope per line (for `simulate`); `MemoryTransport` records everything (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TextIO, runtime_checkable

MessageHandler = Callable[[str, str], Awaitable[str]]
"""(sender identity, raw message) -> reply JSON for that sender."""


@dataclass
class Inbound:
    """What a transport reports to the bridge."""

    on_message: MessageHandler
    on_join: Callable[[str], None] = lambda identity: None
    on_leave: Callable[[str], None] = lambda identity: None
    on_closed: Callable[[], None] = lambda: None


@runtime_checkable
class Transport(Protocol):
    async def send(self, envelope_json: str, destination: list[str] | None) -> None:
        """Deliver one envelope. `destination` None: everyone; a list: only those identities
        (an empty list: nobody). Raise on failure; the bridge retries."""
        ...

    def start(self, inbound: Inbound) -> list[str]:
        """Begin reporting inbound traffic; returns the identities present right now."""
        ...

    def stop(self) -> None:
        """Stop reporting inbound traffic (idempotent)."""
        ...


class _LocalTransport:
    """Shared by the in-process transports: callers play the clients directly."""

    def __init__(self, participants: Iterable[str] = ()) -> None:
        self._present: list[str] = list(participants)
        self._inbound: Inbound | None = None

    def start(self, inbound: Inbound) -> list[str]:
        self._inbound = inbound
        return list(self._present)

    def stop(self) -> None:
        self._inbound = None

    @property
    def participants(self) -> list[str]:
        return list(self._present)

    async def deliver(self, sender: str, message: str) -> str:
        """A client sends `message`; returns the reply only that client would receive."""
        if self._inbound is None:
            raise RuntimeError("transport is not started (or already stopped)")
        return await self._inbound.on_message(sender, message)

    def join(self, identity: str) -> None:
        if identity not in self._present:
            self._present.append(identity)
        if self._inbound is not None:
            self._inbound.on_join(identity)

    def leave(self, identity: str) -> None:
        if identity in self._present:
            self._present.remove(identity)
        if self._inbound is not None:
            self._inbound.on_leave(identity)

    def close_session(self) -> None:
        if self._inbound is not None:
            self._inbound.on_closed()


@dataclass
class Sent:
    envelope_json: str
    destination: list[str] | None


class MemoryTransport(_LocalTransport):
    """Records every envelope. `delay` (seconds) slows each send; `fail_next` makes the next N
    sends raise, to exercise retries; `on_send` sees each envelope as the send starts (latency probes)."""

    def __init__(
        self,
        participants: Iterable[str] = (),
        *,
        delay: float = 0.0,
        fail_next: int = 0,
        on_send: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(participants)
        self.delay = delay
        self.fail_next = fail_next
        self.on_send = on_send
        self.sent: list[Sent] = []
        self.attempts = 0

    async def send(self, envelope_json: str, destination: list[str] | None) -> None:
        self.attempts += 1
        if self.on_send is not None:
            self.on_send(envelope_json)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("simulated publish failure")
        self.sent.append(Sent(envelope_json, None if destination is None else list(destination)))


class JsonLinesTransport(_LocalTransport):
    """Prints each envelope as one JSON line (for `simulate`); the served user counts as present."""

    def __init__(self, stream: TextIO | None = None, participants: Iterable[str] = ("user",)) -> None:
        super().__init__(participants)
        self.stream = stream if stream is not None else sys.stdout

    async def send(self, envelope_json: str, destination: list[str] | None) -> None:
        self.stream.write(envelope_json + "\n")
        self.stream.flush()
