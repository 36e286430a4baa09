"""The official OpenAI Realtime model, made to survive malformed upstream messages.

livekit-plugins-openai parses every WebSocket text frame with `json.loads` outside its own
error handling, so a single frame that is not JSON ends the realtime session. This subclass
gives the plugin an aiohttp session whose WebSocket responses drop such frames before the
plugin sees them (aiohttp's `ws_response_class` hook); each dropped frame is reported as a
recoverable `protocol` error on the model's sessions (-> one `error` envelope, one log line)
and the session carries on. Well-formed events of unknown type pass through (the plugin ignores
them), so newer server events never trip the guard.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

import aiohttp
from livekit.agents import llm
from livekit.plugins.openai.realtime import RealtimeModel

from .provider_errors import MalformedUpstreamMessage

log = logging.getLogger("providers.realtime")

_PREVIEW = 80
_CLOSED_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR)


def malformed_reason(data: str) -> str | None:
    """Why a server text frame is not a usable Realtime event (None: it is fine)."""
    try:
        event = json.loads(data)
    except (ValueError, TypeError) as e:
        return f"not JSON ({e.__class__.__name__}: {e})"
    if not isinstance(event, dict):
        return f"a JSON {type(event).__name__}, not an object"
    if not isinstance(event.get("type"), str) or not event["type"]:
        return "no event type"
    return None


class GuardedWebSocket(aiohttp.ClientWebSocketResponse):
    """Drops malformed text frames and reports them through `on_malformed`."""

    on_malformed: ClassVar[Callable[[str], None] | None] = None
    on_closed: ClassVar[Callable[[int | None], None] | None] = None
    on_arguments: ClassVar[Callable[[str, str], None] | None] = None
    """Told each function call's arguments as the server sent them (call id, raw text)."""

    async def receive(self, timeout: float | None = None) -> Any:  # type: ignore[override]  # noqa: ASYNC109 - aiohttp's signature
        while True:
            msg = await super().receive(timeout)
            if msg.type in _CLOSED_TYPES:
                closed = type(self).on_closed
                if closed is not None:
                    closed(self.close_code)
                return msg
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return msg
            reason = malformed_reason(msg.data)
            if reason is None:
                if "function_call_arguments.done" in msg.data:
                    self._record_arguments(msg.data)
                return msg
            preview = msg.data[:_PREVIEW] if isinstance(msg.data, str) else ""
            callback = type(self).on_malformed
            if callback is not None:
                callback(f"{reason}; starts with {preview!r}")


    def _record_arguments(self, data: str) -> None:
        event = json.loads(data)
        if event.get("type") == "response.function_call_arguments.done":
            callback = type(self).on_arguments
            call_id, arguments = event.get("call_id"), event.get("arguments")
            if callback is not None and isinstance(call_id, str) and isinstance(arguments, str):
                callback(call_id, arguments)


RAW_ARGUMENTS_KEPT = 64


class GuardedOpenAIRealtimeModel(RealtimeModel):
    """`livekit.plugins.openai.realtime.RealtimeModel` plus the malformed-frame guard."""

    def __init__(self, *, provider_name: str = "openai-realtime", **kwargs: Any) -> None:
        if kwargs.get("http_session") is not None:
            raise ValueError("GuardedOpenAIRealtimeModel owns its HTTP session; do not pass one")
        super().__init__(**kwargs)
        self._provider_name = provider_name
        self.raw_arguments: OrderedDict[str, str] = OrderedDict()
        """The last function calls' arguments as the server sent them, by call id: livekit-agents
        repairs malformed JSON (`json_repair`) before the tool sees it; the agent checks these."""
        self.last_close_code: int | None = None
        """WebSocket close code of the last connection that ended (1006: dropped without a close frame)."""
        ref = weakref.ref(self)

        def report(detail: str) -> None:
            model = ref()
            if model is not None:
                model._report_malformed(detail)

        def closed(code: int | None) -> None:
            model = ref()
            if model is not None:
                model.last_close_code = code
                log.debug("%s: connection closed (code %s)", model._provider_name, code)

        def arguments(call_id: str, raw: str) -> None:
            model = ref()
            if model is not None:
                model.raw_arguments[call_id] = raw
                while len(model.raw_arguments) > RAW_ARGUMENTS_KEPT:
                    model.raw_arguments.popitem(last=False)

        # one class per model, so each model's frames are reported to its own sessions
        self._ws_class = type(
            "GuardedWebSocketForModel",
            (GuardedWebSocket,),
            {"on_malformed": staticmethod(report), "on_closed": staticmethod(closed), "on_arguments": staticmethod(arguments)},
        )

    def _ensure_http_session(self) -> aiohttp.ClientSession:
        if self._http_session is None:
            self._http_session = aiohttp.ClientSession(ws_response_class=self._ws_class)
            self._http_session_owned = True
        return self._http_session

    def _report_malformed(self, detail: str) -> None:
        error = MalformedUpstreamMessage(self._provider_name, detail)
        log.debug("%s: dropped a malformed server event: %s", self._provider_name, detail)
        for session in list(self._sessions):
            session.emit(
                "error",
                llm.RealtimeModelError(
                    timestamp=time.time(), label=self.label, error=error, recoverable=True
                ),
            )
