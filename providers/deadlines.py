"""Deadlines on batch STTs, which livekit-agents does not impose by itself.

livekit-agents retries a provider request that *fails*, but a request that simply stalls
(connected, then nothing) waits on the plugin's own read timeout (30 s for the OpenAI plugins),
or forever. `DeadlineSTT` turns such a stall into livekit's `APITimeoutError`, which livekit
reports, retries and (inside a fallback chain) moves on from like any other failure. The agent
wraps its session's STT in one (`agent.guards`); a chain of batch STTs wraps each of its
providers in one (`providers.chains.BatchFallbackSTT`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import APIConnectOptions, APITimeoutError, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils.audio import calculate_audio_duration

from .provider_errors import provider_name, tag_provider


class WrappedSTT(stt.STT):
    """Speaks for `inner`: same capabilities, model, provider and label, its metrics forwarded,
    error reports under `name` (the configured provider name)."""

    def __init__(self, inner: stt.STT, name: str) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner
        self._label = inner.label
        tag_provider(self, name)
        inner.on("metrics_collected", self._forward_metrics)

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def provider(self) -> str:
        return self.inner.provider

    def _forward_metrics(self, *args: Any) -> None:
        self.emit("metrics_collected", *args)

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        # the inner implementation, not inner.recognize(): this class's recognize() already
        # retries and reports errors, once
        return await self.inner._recognize_impl(buffer, language=language, conn_options=conn_options)

    def _update_session_keyterms(self, keyterms: list[str]) -> None:
        self.inner._update_session_keyterms(keyterms)

    def _push_conversation_item(self, ev: Any) -> None:
        self.inner._push_conversation_item(ev)

    def prewarm(self) -> None:
        self.inner.prewarm()

    async def aclose(self) -> None:
        self.inner.off("metrics_collected", self._forward_metrics)
        await self.inner.aclose()


class DeadlineSTT(WrappedSTT):
    """A non-streaming STT whose recognitions must finish within `timeout` seconds plus the
    duration of the audio (an upload, or a local recogniser, takes longer on long utterances)."""

    def __init__(self, inner: stt.STT, timeout: float) -> None:
        if inner.capabilities.streaming:
            raise ValueError("DeadlineSTT wraps non-streaming STTs only")
        super().__init__(inner, provider_name(inner))  # error reports name the wrapped provider
        self.timeout = timeout

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        # the inner implementation, not inner.recognize(): this class's recognize() already
        # retries and reports errors, once
        seconds = calculate_audio_duration(buffer)
        # a chain whose providers have deadlines of their own must have had the time to try
        # them all (providers.chains): the guard is for what goes beyond that
        deadline = self.timeout + seconds + time_budget(self.inner, seconds)
        try:
            return await asyncio.wait_for(
                self.inner._recognize_impl(buffer, language=language, conn_options=conn_options),
                deadline,
            )
        except TimeoutError:
            raise APITimeoutError(f"no transcript within {deadline:.1f} s") from None


def time_budget(engine: Any, audio_seconds: float = 0.0) -> float:
    """The most time `engine` takes to give each of its providers its chance, if it is a
    fallback chain of `providers.chains` (for an STT, on `audio_seconds` of speech); else 0."""
    budget = getattr(engine, "time_budget", None)
    return float(budget(audio_seconds)) if callable(budget) else 0.0
