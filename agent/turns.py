"""Turn-taking settings: what ends a user turn, when the agent may be interrupted.

`TurnSettings` is read from the environment (prefix ``TURN_``, ``.env`` honoured) and mapped
onto the two places livekit-agents takes these knobs: the Silero VAD (`vad_load_kwargs`) and
`AgentSession(turn_handling=...)` (`session_turn_kwargs`). Defaults are chosen with
``benchmarks/turn_latency.py`` (see BENCHMARKS.md, "Turn handling").
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

TurnMode = Literal["vad", "stt", "eou"]


class TurnSettings(BaseSettings):
    """Turn handling knobs (env prefix ``TURN_``)."""

    model_config = SettingsConfigDict(
        env_prefix="TURN_", env_file=".env", extra="ignore", validate_default=True
    )

    mode: TurnMode = Field(
        default="vad",
        description="What ends a user turn: 'vad' (silence), 'stt' (the STT's own endpointing, "
        "streaming STT only), 'eou' (VAD plus the local audio end-of-turn model).",
    )
    min_endpointing_delay: float = Field(default=0.5, ge=0.0)
    max_endpointing_delay: float = Field(default=3.0, gt=0.0)
    min_interruption_words: int = Field(default=0, ge=0)
    min_interruption_duration: float = Field(default=0.5, ge=0.0)
    preemptive_generation: bool = True
    allow_interruptions: bool = True

    # Silero VAD
    vad_min_silence_duration: float = Field(default=0.55, gt=0.0)
    vad_min_speech_duration: float = Field(default=0.05, gt=0.0)
    vad_activation_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    vad_prefix_padding: float = Field(default=0.5, ge=0.0)

    # audio end-of-turn model ('eou' mode)
    eou_threshold: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="P(turn ended) below which the turn is held open for max_endpointing_delay; "
        "None keeps the model's calibrated per-language threshold.",
    )

    @model_validator(mode="after")
    def _check_delays(self) -> TurnSettings:
        if self.max_endpointing_delay < self.min_endpointing_delay:
            raise ValueError(
                "TURN_MAX_ENDPOINTING_DELAY must be >= TURN_MIN_ENDPOINTING_DELAY "
                f"(got {self.max_endpointing_delay} < {self.min_endpointing_delay})"
            )
        return self


def vad_load_kwargs(s: TurnSettings) -> dict[str, Any]:
    """Keyword arguments for ``livekit.plugins.silero.VAD.load(...)``."""
    return {
        "min_silence_duration": s.vad_min_silence_duration,
        "min_speech_duration": s.vad_min_speech_duration,
        "activation_threshold": s.vad_activation_threshold,
        "prefix_padding_duration": s.vad_prefix_padding,
    }


def _turn_detection(s: TurnSettings, *, stt_streaming: bool) -> Any:
    if s.mode == "stt":
        if stt_streaming:
            return "stt"
        logger.warning(
            "TURN_MODE=stt needs a streaming STT with its own endpointing; "
            "the configured STT is not streaming, falling back to TURN_MODE=vad"
        )
        return "vad"
    if s.mode == "eou":
        from livekit.agents.inference import TurnDetector

        kwargs: dict[str, Any] = {"version": "v1-mini"}
        if s.eou_threshold is not None:
            kwargs["unlikely_threshold"] = s.eou_threshold
        return TurnDetector(**kwargs)
    return "vad"


def session_turn_kwargs(s: TurnSettings, *, stt_streaming: bool) -> dict[str, Any]:
    """Keyword arguments for ``AgentSession(...)`` (``turn_handling=TurnHandlingOptions``)."""
    from livekit.agents.voice.turn import (
        EndpointingOptions,
        InterruptionOptions,
        PreemptiveGenerationOptions,
        TurnHandlingOptions,
    )

    turn_handling = TurnHandlingOptions(
        turn_detection=_turn_detection(s, stt_streaming=stt_streaming),
        endpointing=EndpointingOptions(
            mode="fixed",
            min_delay=s.min_endpointing_delay,
            max_delay=s.max_endpointing_delay,
        ),
        interruption=InterruptionOptions(
            enabled=s.allow_interruptions,
            # 'adaptive' needs LiveKit Cloud; keep interruption handling local.
            mode="vad",
            min_duration=s.min_interruption_duration,
            min_words=s.min_interruption_words,
        ),
        preemptive_generation=PreemptiveGenerationOptions(enabled=s.preemptive_generation),
    )
    return {"turn_handling": turn_handling}
