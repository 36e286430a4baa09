"""Shared pieces of the agent tests: settings without .env, scripted model backends, a fake room."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit import rtc

from agent.config import AgentSettings
from agent.turns import TurnSettings
from brain import BrainConfig, ModelRequest, TextChunk, ToolCall
from bridge import BridgeConfig
from providers import SpeechSettings

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
TURNS = json.loads((AUDIO / "turns.json").read_text())


def settings(**overrides: Any) -> AgentSettings:
    """AgentSettings from defaults only (no .env), offline providers and brain."""
    turn = overrides.pop("turn", None) or TurnSettings(_env_file=None)  # type: ignore[call-arg]
    return AgentSettings(
        _env_file=None,  # type: ignore[call-arg]
        brain=overrides.pop("brain", None) or BrainConfig(_env_file=None),  # type: ignore[call-arg]
        speech=overrides.pop("speech", None) or SpeechSettings(_env_file=None),
        turn=turn,
        bridge=overrides.pop("bridge", None) or BridgeConfig(_env_file=None),  # type: ignore[call-arg]
        **{"greeting_mode": "off", **overrides},
    )


@dataclass
class Step:
    """What a `ScriptedBackend` does for one model call."""

    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    hang_before: bool = False
    """Wait (until cancelled) before producing anything: a model that has not answered yet."""
    hang_after: bool = False
    """Wait (until cancelled) after the text and calls: a stream that is still open."""


class ScriptedBackend:
    """A `brain.ModelBackend` that plays `steps` in order (then echoes), recording what happens."""

    name = "scripted"

    def __init__(self, steps: list[Step]) -> None:
        self.steps = list(steps)
        self.requests: list[ModelRequest] = []
        self.closed_early: list[int] = []
        """Indexes of calls whose stream was closed before it finished (barge-in)."""
        self.started = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[Any]:
        index = len(self.requests)
        self.requests.append(request)
        self.started.set()
        step = self.steps.pop(0) if self.steps else Step(text=["Okay."])
        finished = False
        try:
            if step.hang_before:
                await asyncio.Event().wait()
            for t in step.text:
                yield TextChunk(t)
                await asyncio.sleep(0)
            for c in step.calls:
                yield c
            if step.hang_after:
                await asyncio.Event().wait()
            finished = True
        finally:
            if not finished:
                self.closed_early.append(index)

    async def aclose(self) -> None:
        return None


@dataclass
class FakeParticipant:
    identity: str
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    state: int = rtc.ParticipantState.PARTICIPANT_STATE_JOINING
    disconnect_reason: int = rtc.DisconnectReason.UNKNOWN_REASON


class FakeRoom(rtc.EventEmitter[str]):
    """The part of `rtc.Room` the session-life code uses: remote participants and their events."""

    def __init__(self, name: str = "room-1") -> None:
        super().__init__()
        self.name = name
        self.remote_participants: dict[str, FakeParticipant] = {}

    def join(
        self, identity: str, kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, *, active: bool = True
    ) -> FakeParticipant:
        """A participant connects (and, with `active`, finishes joining, as livekit reports it)."""
        p = FakeParticipant(identity, kind)
        self.remote_participants[identity] = p
        self.emit("participant_connected", p)
        if active:
            self.activate(identity)
        return p

    def activate(self, identity: str) -> None:
        p = self.remote_participants[identity]
        p.state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
        self.emit("participant_active", p)

    def leave(self, identity: str, reason: int = rtc.DisconnectReason.CLIENT_INITIATED) -> None:
        """A participant is gone: by default they left (hung up, closed the page); a `reason` such
        as CONNECTION_TIMEOUT or SIGNAL_CLOSE is a dropped connection."""
        p = self.remote_participants.pop(identity)
        p.disconnect_reason = reason
        self.emit("participant_disconnected", p)

    def rejoin(self, identity: str) -> FakeParticipant:
        """The same identity connects again (a client's full reconnect: a new participant sid). The
        SDK reports it as livekit's Rust core does: the old participant disconnected (no reason
        given), then the new one connected."""
        kind = self.remote_participants[identity].kind
        self.leave(identity, reason=rtc.DisconnectReason.UNKNOWN_REASON)
        return self.join(identity, kind)


def speech_spans(name: str) -> list[tuple[float, float]]:
    return [(a, b) for a, b in TURNS[name]["speech"]]


async def play_and_settle(sim: Any, audio: Any, *, limit: float) -> bool:
    """Start `sim`, play `audio` into its microphone, feed silence until all is quiet (False if
    still busy after `limit` seconds of it), and close it."""
    try:
        await sim.start()
        await sim.play(audio)
        return bool(await sim.settle(limit=limit))
    finally:
        await sim.aclose()
