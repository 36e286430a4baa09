"""The bridge on a LiveKit room: text streams out, an RPC method in.

Outbound envelopes go out with `local_participant.send_text(..., topic=...)`: text streams carry
any size. Inbound client messages arrive on an RPC method (default `voice-agent.control`), because
RPC gives exactly what the protocol needs: the caller's identity is set by the server (not by the
message), the return value reaches the caller only (acks and errors are private), the SFU caps
the payload size before we parse anything, and a client's call fails visibly on timeout.

`lk.transcription` and the `lk.agent.state` attribute are left to livekit-agents. Its own
`lk.agent.session` broadcast (which sends tool arguments to every participant) is turned off by
starting the session with `**agent_session_start_options()`.
"""

from __future__ import annotations

import logging
from typing import Any

from .protocol import DEFAULT_CONTROL_METHOD, DEFAULT_TOPIC
from .transport import Inbound

log = logging.getLogger("bridge.livekit")


def agent_session_start_options(expose_agent_session: bool = False) -> dict[str, Any]:
    """Keyword arguments for `AgentSession.start(...)` about livekit-agents' `lk.agent.session` host.

    livekit-agents 1.8 hosts a `RemoteSession` endpoint on the `lk.agent.session` topic by default
    (`session_host=True`), which streams the session's events, tool arguments included, to every
    participant. The bridge replaces it, so it is off unless the config asks for it.
    """
    return {"session_host": bool(expose_agent_session)}


class LiveKitRoomTransport:
    """Runs the bridge on an `rtc.Room` (or anything with the same small surface).

    Uses: `room.local_participant.send_text / register_rpc_method / unregister_rpc_method`,
    `room.remote_participants`, `room.on / room.off` for `participant_connected`,
    `participant_disconnected` and `disconnected`.
    """

    def __init__(self, room: Any, topic: str = DEFAULT_TOPIC, control_method: str = DEFAULT_CONTROL_METHOD) -> None:
        self.room = room
        self.topic = topic
        self.control_method = control_method
        self._inbound: Inbound | None = None
        self._handlers: list[tuple[str, Any]] = []

    async def send(self, envelope_json: str, destination: list[str] | None) -> None:
        if destination is not None:
            present = self.room.remote_participants
            destination = [d for d in destination if d in present]
            if not destination:
                return  # nobody to deliver to; an empty list would mean "everyone" to send_text
        await self.room.local_participant.send_text(
            envelope_json, topic=self.topic, destination_identities=destination
        )

    def start(self, inbound: Inbound) -> list[str]:
        if self._inbound is not None:
            raise RuntimeError("LiveKitRoomTransport already started")
        self._inbound = inbound

        async def on_rpc(data: Any) -> str:
            return await inbound.on_message(str(data.caller_identity), str(data.payload))

        self.room.local_participant.register_rpc_method(self.control_method, on_rpc)

        def joined(participant: Any) -> None:
            inbound.on_join(participant.identity)

        def left(participant: Any) -> None:
            inbound.on_leave(participant.identity)

        def closed(*_: Any) -> None:
            inbound.on_closed()

        for event, cb in (
            ("participant_connected", joined),
            ("participant_disconnected", left),
            ("disconnected", closed),
        ):
            self.room.on(event, cb)
            self._handlers.append((event, cb))
        return list(self.room.remote_participants)

    def stop(self) -> None:
        if self._inbound is None:
            return
        self._inbound = None
        for event, cb in self._handlers:
            try:
                self.room.off(event, cb)
            except Exception:  # noqa: BLE001 - best effort on a closing room
                log.debug("could not remove %s handler", event)
        self._handlers.clear()
        try:
            self.room.local_participant.unregister_rpc_method(self.control_method)
        except Exception:  # noqa: BLE001 - the room may already be gone
            log.debug("could not unregister rpc method %s", self.control_method)
