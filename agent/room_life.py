"""Who the agent serves in a room, and when its job ends.

A job serves one user: the first user (a standard, SIP or connector participant, not another
agent nor an identity of `BRIDGE_ALLOWED_IDENTITIES`, who watches and approves) in the room.
The session ends when no user is left, or when the served user has been gone for
`AGENT_INACTIVITY_TIMEOUT` while others stay (a supervisor cannot talk to the session: the room
input follows the served identity). A served user whose connection dropped (any disconnect reason
but livekit-agents' close-on-disconnect ones: they left, were rejected, the room was deleted) or
who reconnects (same identity, new participant sid: livekit reports a leave, then a join) gets
that grace even when nobody else is in the room. livekit runs a job's shutdown callbacks concurrently, so
what the job closes is one ordered list: the session first, then what it uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from livekit import rtc
from livekit.agents import JobContext
from livekit.agents.voice.room_io.types import DEFAULT_CLOSE_ON_DISCONNECT_REASONS

from .voice_session import BaseVoiceSession

log = logging.getLogger("agent.worker")

# participants the agent talks to (livekit-agents' default: standard, SIP, connector; not other agents)
USER_KINDS = (
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
    rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR,
)


def _left_on_purpose(participant: Any) -> bool:
    """Gone for a reason livekit-agents' room input closes the session on (they left, were
    rejected, the room was deleted); any other (a dropped connection, a reconnect) may be
    followed by a return."""
    return getattr(participant, "disconnect_reason", None) in DEFAULT_CLOSE_ON_DISCONNECT_REASONS


def _is_user(participant: Any) -> bool:
    return getattr(participant, "kind", rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD) in USER_KINDS


def remaining_users(room: Any) -> list[str]:
    """Identities of remote participants the agent serves (other agents don't count)."""
    return [identity for identity, p in dict(room.remote_participants).items() if _is_user(p)]


class RoomGone(RuntimeError):
    """The room disconnected while the job waited for a user."""


async def wait_for_user(room: Any, *, exclude: Collection[str] = ()) -> Any:
    """The first user in the room who has finished joining (livekit's `participant_active`, as
    `JobContext.wait_for_participant`), waiting for one; identities in `exclude` (supervisors)
    are never chosen, even when they were there first."""

    def pick() -> Any | None:
        for p in dict(room.remote_participants).values():
            active = getattr(p, "state", None) == rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
            if active and _is_user(p) and p.identity not in exclude:
                return p
        return None

    found = pick()
    if found is not None:
        return found
    if hasattr(room, "isconnected") and not room.isconnected():
        raise RoomGone("the room is not connected")
    arrived: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_active(_: Any) -> None:
        if not arrived.done() and (p := pick()) is not None:
            arrived.set_result(p)

    def on_state(state: int) -> None:
        if state == rtc.ConnectionState.CONN_DISCONNECTED and not arrived.done():
            arrived.set_exception(RoomGone("the room disconnected while waiting for a user"))

    room.on("participant_active", on_active)
    room.on("connection_state_changed", on_state)
    try:
        return await arrived
    finally:
        room.off("participant_active", on_active)
        room.off("connection_state_changed", on_state)


class LastParticipantWatcher:
    """Calls `on_gone(reason)` once: when the last user has left, or (with `served`) when the
    served user has been gone `grace` seconds (cancelled if they return) while other users stay,
    or when their connection dropped rather than they left (see the module)."""

    def __init__(self, room: Any, on_gone: Callable[[str], Any], *, served: str | None = None, grace: float = 0.0) -> None:
        self.room = room
        self.on_gone = on_gone
        self.served = served
        self.grace = grace
        self.fired = False
        self._timer: asyncio.TimerHandle | None = None
        self._served_dropped = False  # the served user's last disconnect was not a deliberate leave
        room.on("participant_disconnected", self._on_disconnected)
        room.on("participant_connected", self._on_connected)

    def check(self) -> None:
        """React to a leave that happened before the watcher was attached."""
        self._on_disconnected(None)

    def _on_disconnected(self, participant: Any) -> None:
        if self.fired:
            return
        users = remaining_users(self.room)
        who = getattr(participant, "identity", None)
        if who is not None and who == self.served:
            self._served_dropped = not _left_on_purpose(participant)
        served_gone = self.served is not None and self.served not in users
        if not users and not (served_gone and self._served_dropped):
            log.info("last participant (%s) left", who or self.served or "?")
            self._fire("last participant left")
        elif served_gone and self._timer is None:
            how = "dropped" if self._served_dropped else "left"
            log.info("the served participant (%s) %s; %d other user(s) stay; ending in %g s unless they return",
                     self.served, how, len(users), self.grace)
            self._timer = asyncio.get_running_loop().call_later(self.grace, self._fire, "served participant left")

    @property
    def waiting(self) -> bool:
        """True while the served user is gone and the grace runs."""
        return self._timer is not None

    def _on_connected(self, participant: Any) -> None:
        if getattr(participant, "identity", None) == self.served:
            self._served_dropped = False
            if self._timer is not None:
                self._timer.cancel()  # back in time: livekit re-links the room input to them
                self._timer = None

    def _fire(self, reason: str) -> None:
        if not self.fired:
            self.fired = True
            self.on_gone(reason)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.room.off("participant_disconnected", self._on_disconnected)
        self.room.off("participant_connected", self._on_connected)


class JobClosers:
    """What a job closes at shutdown, in order, each once, one failure not stopping the rest.

    One shutdown callback runs them: livekit gathers a job's shutdown callbacks concurrently,
    so separate ones could close the speech providers while the session still used them."""

    def __init__(self) -> None:
        self._steps: list[Callable[[], Awaitable[Any]]] = []

    def add(self, close: Callable[[], Awaitable[Any]]) -> None:
        self._steps.append(close)

    def first(self, close: Callable[[], Awaitable[Any]]) -> None:
        self._steps.insert(0, close)

    async def run(self, reason: str = "") -> None:
        steps, self._steps = self._steps, []
        for close in steps:
            try:
                await close()
            except Exception:  # noqa: BLE001 - the next ones must still close
                log.exception("closing %s at job shutdown failed", getattr(close, "__qualname__", close))


def attach_session_life(
    ctx: JobContext,
    voice: BaseVoiceSession,
    *,
    then: Sequence[Callable[[], Awaitable[None]]] = (),
    served: str | None = None,
    grace: float = 0.0,
    closers: JobClosers | None = None,
) -> LastParticipantWatcher:
    """The job ends with the session; the session ends when its user is gone (see the module).
    On shutdown the session closes first, then `then` and the rest of `closers`."""
    voice.on_close(lambda reason: ctx.shutdown(reason=f"session closed: {reason}"))
    watcher = LastParticipantWatcher(ctx.room, voice.end, served=served, grace=grace)
    if closers is None:
        closers = JobClosers()
        ctx.add_shutdown_callback(closers.run)

    async def close_session() -> None:
        watcher.close()
        await voice.aclose()  # the bridge tells clients pending approvals are cancelled

    closers.first(close_session)
    for close in then:
        closers.add(close)
    return watcher
