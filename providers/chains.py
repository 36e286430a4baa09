"""Fallback chains whose providers each get `FALLBACK_ATTEMPT_TIMEOUT`, then the next one answers.

livekit's adapters pass the attempt timeout to each provider as its *connect* timeout only: the
OpenAI plugins then wait 30 s for an answer (their read timeout), and the agent's own stall
guards (`AGENT_PROVIDER_TIMEOUT`) give up on the whole chain long before the chain gives up on
its primary. Here every provider of a chain has its own deadline, and each chain tells the agent
how long it may take to try them all (`time_budget`), so the guards wait for that first.

- `BatchFallbackSTT`: a chain of batch STTs (local, openai), each recognition bounded by the
  attempt timeout plus the utterance's duration.
- `StreamingFallbackSTT`: livekit's adapter, for a chain with a streaming STT.
- TTS chains, which fail over sentence by sentence: `providers.tts_chains`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from livekit.agents import stt
from livekit.agents.vad import VAD

from .deadlines import DeadlineSTT
from .provider_errors import provider_name

log = logging.getLogger("providers.chains")


class _ClosesMembers:
    """A chain that closes the providers it chains: livekit's adapters close their own helpers
    only (a local recogniser inside a chain kept its decoder processes after the job)."""

    def __init__(self, instances: list[Any], **kwargs: Any) -> None:
        super().__init__(instances, **kwargs)  # type: ignore[call-arg]
        self._members = list(instances)

    async def aclose(self) -> None:
        await super().aclose()  # type: ignore[misc]
        for member in self._members:
            try:
                await member.aclose()
            except Exception:  # noqa: BLE001 - the other members must still close
                log.warning("closing %s failed", provider_name(member), exc_info=True)


class StreamingFallbackSTT(_ClosesMembers, stt.FallbackAdapter):
    """livekit's adapter (a chain with a streaming STT) that closes its providers with it."""


def attempts_seconds(providers: int, max_retry: int, per_attempt: float, retry_interval: float) -> float:
    """An upper bound on the time a chain takes to try all its providers, each with retries."""
    return providers * (max_retry + 1) * (per_attempt + retry_interval)


class BatchFallbackSTT(_ClosesMembers, stt.FallbackAdapter):
    """A fallback chain of non-streaming STTs that stays non-streaming.

    livekit's adapter always streams: each provider runs behind its own VAD `StreamAdapter`,
    and the utterance the primary was recognising when it failed is lost in the hand-over.
    Reported as non-streaming, the chain is handed each whole utterance the session's VAD cut
    (the agent's `SegmentedSTT`, or livekit's `StreamAdapter`), through `recognize()`: the adapter tries the
    providers in order on the same audio, so a failing primary costs time, not words.

    Each provider runs under a `DeadlineSTT` of `attempt_timeout` (plus the utterance's
    duration): a provider that takes the upload and never answers fails with a timeout and
    the next one is asked, instead of the chain waiting on the plugin's read timeout.
    """

    def __init__(
        self,
        instances: list[stt.STT],
        *,
        vad: VAD | None = None,
        attempt_timeout: float = 10.0,
        max_retry_per_stt: int = 0,
        retry_interval: float = 0.5,
    ) -> None:
        bounded: list[stt.STT] = [DeadlineSTT(s, attempt_timeout) for s in instances]
        super().__init__(
            bounded,
            vad=vad,
            attempt_timeout=attempt_timeout,
            max_retry_per_stt=max_retry_per_stt,
            retry_interval=retry_interval,
        )
        self._capabilities = dataclasses.replace(self._capabilities, streaming=False, interim_results=False)

    async def _try_recognize(self, **kwargs: Any) -> stt.SpeechEvent:  # type: ignore[override]
        # livekit put each provider behind a VAD StreamAdapter whose recognize() retries the
        # provider's own recognize(), which retries too: (retries + 1)^2 attempts. The chain
        # hands whole utterances, so each provider is asked directly, its retries once.
        member = kwargs.pop("stt")
        if isinstance(member, stt.StreamAdapter):
            member = member.wrapped_stt
        return await super()._try_recognize(stt=member, **kwargs)

    def time_budget(self, audio_seconds: float = 0.0) -> float:
        """Seconds a recognition of `audio_seconds` of speech may take before every provider
        had its chance (at most)."""
        return attempts_seconds(
            len(self._stt_instances),
            self._max_retry_per_stt,
            self._attempt_timeout + audio_seconds,
            self._retry_interval,
        )


