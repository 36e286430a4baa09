"""The shared shell of the agent's STT guards: an STT that wraps another one."""

from __future__ import annotations

from typing import Any

from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from providers.provider_errors import tag_provider


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
