"""A fake LiveKit room: the subset of `rtc.Room` / `LocalParticipant` the bridge uses.

`FakeRoom` behaves like the SDK where the bridge can tell: `send_text` with no (or an empty)
destination list reaches everyone, RPC payloads over 15 KiB are refused before the handler runs
(and replies over 15 KiB instead of reaching the caller),
events fire synchronously like `rtc.EventEmitter`. `FakeClient` plays a web client.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_RPC_PAYLOAD = 15 * 1024


class FakeRpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class FakeRpcInvocationData:
    request_id: str
    caller_identity: str
    payload: str
    response_timeout: float
    method: str


@dataclass
class FakeRemoteParticipant:
    identity: str


@dataclass
class TextSend:
    text: str
    topic: str
    destination_identities: list[str] | None

    def reaches(self, identity: str) -> bool:
        return not self.destination_identities or identity in self.destination_identities


@dataclass
class FakeLocalParticipant:
    identity: str = "agent"
    sends: list[TextSend] = field(default_factory=list)
    rpc_handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    delay: float = 0.0
    fail_next: int = 0

    async def send_text(
        self,
        text: str,
        *,
        destination_identities: list[str] | None = None,
        topic: str = "",
        attributes: dict[str, str] | None = None,
        reply_to_id: str | None = None,
        compress: bool = True,
    ) -> Any:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("fake send_text failure")
        self.sends.append(TextSend(text, topic, list(destination_identities) if destination_identities else None))
        return None

    def register_rpc_method(self, method_name: str, handler: Callable[..., Any] | None = None) -> Any:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.rpc_handlers[method_name] = fn
            return fn

        return register(handler) if handler is not None else register

    def unregister_rpc_method(self, method: str) -> None:
        self.rpc_handlers.pop(method, None)


class FakeRoom:
    def __init__(self, participants: list[str] | None = None) -> None:
        self.local_participant = FakeLocalParticipant()
        self.remote_participants: dict[str, FakeRemoteParticipant] = {
            p: FakeRemoteParticipant(p) for p in participants or []
        }
        self._handlers: dict[str, list[Callable[..., Any]]] = {}

    # rtc.EventEmitter subset
    def on(self, event: str, callback: Callable[..., Any] | None = None) -> Any:
        def add(cb: Callable[..., Any]) -> Callable[..., Any]:
            self._handlers.setdefault(event, []).append(cb)
            return cb

        return add(callback) if callback is not None else add

    def off(self, event: str, callback: Callable[..., Any]) -> None:
        if callback in self._handlers.get(event, []):
            self._handlers[event].remove(callback)

    def emit(self, event: str, *args: Any) -> None:
        for cb in list(self._handlers.get(event, [])):
            cb(*args)

    def handler_count(self, event: str) -> int:
        return len(self._handlers.get(event, []))

    # what the SFU would do
    def connect(self, identity: str) -> None:
        p = FakeRemoteParticipant(identity)
        self.remote_participants[identity] = p
        self.emit("participant_connected", p)

    def disconnect_participant(self, identity: str) -> None:
        p = self.remote_participants.pop(identity)
        self.emit("participant_disconnected", p)

    def close(self) -> None:
        self.emit("disconnected", "CLIENT_INITIATED")

    async def rpc(self, caller: str, method: str, payload: str) -> str:
        if len(payload.encode("utf-8", "surrogatepass")) > MAX_RPC_PAYLOAD:
            raise FakeRpcError(1402, "Request payload too large")
        handler = self.local_participant.rpc_handlers.get(method)
        if handler is None:
            raise FakeRpcError(1400, "Method not supported at destination")
        data = FakeRpcInvocationData(uuid.uuid4().hex, caller, payload, 10.0, method)
        result = handler(data)
        if asyncio.iscoroutine(result):
            result = await result
        if len(str(result).encode("utf-8", "surrogatepass")) > MAX_RPC_PAYLOAD:
            raise FakeRpcError(1504, "Response payload too large")
        return str(result)

    def envelopes_for(self, identity: str, topic: str = "voice-agent.events") -> list[dict[str, Any]]:
        return [json.loads(s.text) for s in self.local_participant.sends if s.topic == topic and s.reaches(identity)]


async def wait_until(predicate: Callable[[], Any], within: float = 10.0) -> Any:
    """Poll until `predicate()` is truthy (the bridge and the brain run in their own tasks)."""
    async with asyncio.timeout(within):
        while not (value := predicate()):  # noqa: ASYNC110 - polling state owned by other tasks
            await asyncio.sleep(0.002)
        return value


class FakeClient:
    """A web client in the fake room: reads envelopes for its identity, calls the control RPC."""

    def __init__(self, room: FakeRoom, identity: str, method: str = "voice-agent.control") -> None:
        self.room = room
        self.identity = identity
        self.method = method

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        return self.room.envelopes_for(self.identity)

    def of_type(self, etype: str) -> list[dict[str, Any]]:
        return [e for e in self.envelopes if e["type"] == etype]

    async def send(self, message: dict[str, Any] | str) -> dict[str, Any]:
        payload = message if isinstance(message, str) else json.dumps(message)
        return json.loads(await self.room.rpc(self.identity, self.method, payload))  # type: ignore[no-any-return]

    async def respond(
        self, request_id: str, decision: str = "approve", *, arguments: dict[str, Any] | None = None,
        reason: str | None = None, msg_id: str | None = None,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"request_id": request_id, "decision": decision}
        if arguments is not None:
            data["arguments"] = arguments
        if reason is not None:
            data["reason"] = reason
        msg: dict[str, Any] = {"v": 1, "type": "hitl.respond", "data": data}
        if msg_id is not None:
            msg["id"] = msg_id
        return await self.send(msg)

    async def sync(self, msg_id: str | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"v": 1, "type": "session.sync", "data": {}}
        if msg_id is not None:
            msg["id"] = msg_id
        return await self.send(msg)

    async def wait_for(self, etype: str, count: int = 1, within: float = 10.0) -> list[dict[str, Any]]:
        """Poll (the bridge publishes from its own task) until `count` envelopes of `etype` arrived."""
        found: list[dict[str, Any]] = await wait_until(
            lambda: (lambda f: f if len(f) >= count else None)(self.of_type(etype)), within
        )
        return found
