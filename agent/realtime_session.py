"""Realtime mode (`AGENT_MODE=realtime`): a speech-to-speech model instead of STT -> brain -> TTS.

`build_realtime_session(settings, model)` is the `AgentSession` (server-side turn detection, no
local VAD, STT or TTS); `RealtimeVoiceSession` runs `RealtimeBrainAgent` in it with the same
session life, bridge and error reporting as pipeline mode. The brain's tools, approval gate and
events are used as they are; its model backend and memory are not (the realtime model keeps the
conversation). The model speaks the greeting, goodbye and apologies itself (there is no TTS).
"""

from __future__ import annotations

import logging
from typing import Any

from livekit.agents import AgentSession

from brain import VoiceBrain
from providers.provider_errors import ProviderErrorReport

from .config import AgentSettings
from .realtime import RealtimeBrainAgent, realtime_session_kwargs
from .voice_session import BaseVoiceSession

log = logging.getLogger("agent.realtime_session")


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

    def _turn_id(self) -> str | None:
        t = self.agent.tracker.current()
        return t.turn.turn_id if t is not None else None

    def handle_failure(self, report: ProviderErrorReport, *, kind: str, fatal: bool) -> None:
        # the turn the error hit; the tracker (which sees the same event) ends it and apologises
        self.publish_report(report, fatal=fatal, turn_id=self._turn_id())

    def _on_stall(self, report: ProviderErrorReport, turn_id: str | None) -> None:
        self.publish_report(report, turn_id=turn_id)

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.model.aclose()
