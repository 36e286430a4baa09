"""Realtime mode (`AGENT_MODE=realtime`): a speech-to-speech model instead of STT -> brain -> TTS.

`build_realtime_session(settings, model)` is the `AgentSession` (server-side turn detection, no
local VAD, STT or TTS); `RealtimeVoiceSession` runs `RealtimeBrainAgent` in it with the same
session life, bridge and error reporting as pipeline mode. The brain's tools, approval gate and
events are used as they are; its model backend and memory are not (the realtime model keeps the
conversation). The model speaks the greeting, goodbye and apologies itself (there is no TTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from livekit.agents import AgentSession
from livekit.agents.voice.events import CloseEvent, CloseReason

from brain import VoiceBrain
from providers.provider_errors import ProviderErrorReport

from .config import AgentSettings
from .realtime import RealtimeBrainAgent, realtime_session_kwargs
from .voice_session import BaseVoiceSession

log = logging.getLogger("agent.realtime_session")

FATAL_CLOSE_GRACE = 2.0
"""Seconds livekit-agents gets to close the session itself after a fatal model error."""


def build_realtime_session(
    settings: AgentSettings, model: Any, *, time_scale: float = 1.0, simulated: bool = False
) -> AgentSession:
    """An `AgentSession` on `model` (from `providers.realtime.create_realtime_model`)."""
    away = settings.inactivity_timeout / time_scale if settings.inactivity_timeout > 0 else None
    kwargs = realtime_session_kwargs(settings.realtime)
    if simulated:
        kwargs["aec_warmup_duration"] = None
    return AgentSession(llm=model, user_away_timeout=away, **kwargs)


def _say_exactly(text: str) -> str:
    return f'Say exactly this, in the user\'s language, and nothing else: "{text}"'


class RealtimeVoiceSession(BaseVoiceSession):
    def __init__(
        self,
        settings: AgentSettings,
        *,
        brain: VoiceBrain,
        session: AgentSession,
        model: Any,
        conversation_id: str,
        user_id: str | None = None,
        instructions: str | None = None,
    ) -> None:
        super().__init__(settings, brain=brain, session=session, conversation_id=conversation_id, user_id=user_id)
        self.model = model
        self.agent = RealtimeBrainAgent(
            brain,
            conversation_id=conversation_id,
            user_id=user_id,
            instructions=instructions,
            apology=settings.brain.apology or None,
            report_errors=False,  # this class publishes them (same codes, same envelopes)
            stall_timeout=settings.provider_timeout,
        )
        self.agent.tracker.stall_callbacks.append(self._on_stall)
        self._fatal_close: asyncio.Future[None] | None = None
        self._reported_turns: set[str] = set()  # turns already told of a (recoverable) failure

    @property
    def tracker(self) -> Any:
        return self.agent.tracker

    def greet(self) -> Any | None:
        s = self.settings
        if s.greeting_mode == "say" and s.greeting:
            return self.session.generate_reply(instructions=_say_exactly(s.greeting))
        if s.greeting_mode == "generate" and s.greeting_prompt:
            return self.session.generate_reply(instructions=s.greeting_prompt)
        return None

    def say_goodbye(self, text: str) -> Any:
        return self.session.generate_reply(instructions=_say_exactly(text), allow_interruptions=False)

    def handle_failure(self, report: ProviderErrorReport, *, kind: str, fatal: bool) -> None:
        # the turn the error hit (a reply, or a turn waiting for the model's answer to its tool
        # results); the tracker, which sees the same event after us, ends it and apologises
        hit = self.agent.tracker.turn_hit()
        hits_reply = hit is not None
        turn_id = hit.turn.turn_id if hit is not None else None
        if report.recoverable and not fatal and report.code != "protocol":
            if not hits_reply or turn_id in self._reported_turns or report.code == "auth":
                # a connection attempt livekit retries, with no reply in flight (or one already
                # told of the failure, or a rejected key: the reply cannot run before an attempt
                # succeeds): logged by the caller; clients hear of it again only if the last
                # attempt fails too (fatal)
                return
            if turn_id is not None:
                self._reported_turns.add(turn_id)
        self.publish_report(report, fatal=fatal, turn_id=turn_id)
        if fatal:
            self._end_after_fatal()

    def _end_after_fatal(self) -> None:
        """The model is gone for good: end the session (and with it the job), even where
        livekit-agents does not (1.8's realtime `aclose` re-raises the model's failure, so its
        session never emits `close`). The turn's stall deadline stops: nothing more is owed."""
        self.agent.tracker.stop()
        if self.bridge is not None:  # before livekit's teardown cancels the waiting calls
            self.bridge.cancel_pending("system:session_closed")
        if self._fatal_close is None and not self.closed.is_set():
            self.close_reason = self.close_reason or "the realtime model failed"
            self.ended = self.ended or "error"
            self._fatal_close = asyncio.ensure_future(self._close_after_fatal())

    async def _close_after_fatal(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), FATAL_CLOSE_GRACE)  # livekit's own close
        await self._close_session(within=FATAL_CLOSE_GRACE)
        if not self.closed.is_set():  # closed quietly, no `close` event: end it for the listeners
            self._on_close(CloseEvent(reason=CloseReason.ERROR))

    def _on_stall(self, report: ProviderErrorReport, turn_id: str | None) -> None:
        self.publish_report(report, turn_id=turn_id)

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            if self._fatal_close is not None and not self._fatal_close.done():
                self._fatal_close.cancel()
            await self.model.aclose()
