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

from .turn_detector import AdaptiveEouDetector, EouPolicy

logger = logging.getLogger(__name__)

TurnMode = Literal["vad", "stt", "eou"]
VadEngine = Literal["plugin", "native"]


# Per-mode defaults for knobs left unset (env or kwargs). Chosen with
# benchmarks/turn_latency.py; see BENCHMARKS.md, "Turn handling".
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    # VAD closes the segment early (the batch STT and preemptive LLM start then); the turn is
    # taken once the pause outlasts the longest mid-sentence pause on the shared recordings.
    "vad": {"vad_min_silence_duration": 0.5, "min_endpointing_delay": 0.86},
    # the STT's own endpointing decides; livekit-agents' defaults around it
    "stt": {"vad_min_silence_duration": 0.55, "min_endpointing_delay": 0.5},
    # the adaptive end-of-turn detector decides; VAD and endpointing only set the floor
    "eou": {"vad_min_silence_duration": 0.3, "min_endpointing_delay": 0.3},
}


class TurnSettings(BaseSettings):
    """Turn handling knobs (env prefix ``TURN_``). Unset knobs take `MODE_DEFAULTS[mode]`."""

    model_config = SettingsConfigDict(
        allow_inf_nan=False,  # `inf` timeouts overflow later; NaN passes every bound
        env_prefix="TURN_",
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        validate_default=True,
    )

    mode: TurnMode = Field(
        default="vad",
        description="What ends a user turn: 'vad' (silence), 'stt' (the STT's own endpointing, "
        "streaming STT only), 'eou' (VAD plus the adaptive audio end-of-turn detector).",
    )
    min_endpointing_delay: float = Field(default=0.86, ge=0.0)
    max_endpointing_delay: float = Field(default=3.0, gt=0.0)
    min_interruption_words: int = Field(default=0, ge=0)
    min_interruption_duration: float = Field(default=0.5, ge=0.0)
    preemptive_generation: bool = True
    allow_interruptions: bool = True

    # Silero VAD
    vad_engine: VadEngine = Field(
        default="native",
        description="Which Silero runs: 'native' (livekit-local-inference's build, bundled with "
        "livekit-agents: a quarter less CPU per session, the same turns; BENCHMARKS.md 'Density') "
        "or 'plugin' (livekit-plugins-silero on ONNX Runtime).",
    )
    vad_min_silence_duration: float = Field(default=0.5, gt=0.0)
    vad_min_speech_duration: float = Field(default=0.05, gt=0.0)
    vad_activation_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    vad_prefix_padding: float = Field(default=0.5, ge=0.0)
    vad_max_buffered_speech: float = Field(
        default=300.0,
        gt=0.0,
        description="Seconds of one uninterrupted speech the VAD keeps for a non-streaming STT; "
        "speech past it is dropped (livekit's default is 60 s). Bounds memory per session: "
        "about 10 MB at 16 kHz, 29 MB at 48 kHz.",
    )

    # adaptive audio end-of-turn detector ('eou' mode), see agent/turn_detector.py
    eou_fast_threshold: float = Field(default=0.85, gt=0.0, le=1.0)
    eou_slow_threshold: float = Field(default=0.7, gt=0.0, le=1.0)
    eou_max_silence: float = Field(default=0.86, gt=0.2)
    eou_step: float = Field(default=0.06, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("mode"), str):
            data["mode"] = data["mode"].strip().lower()
        return {**MODE_DEFAULTS.get(data.get("mode", "vad"), {}), **data}

    @model_validator(mode="after")
    def _check(self) -> TurnSettings:
        if self.max_endpointing_delay < self.min_endpointing_delay:
            raise ValueError(
                "TURN_MAX_ENDPOINTING_DELAY must be >= TURN_MIN_ENDPOINTING_DELAY "
                f"(got {self.max_endpointing_delay} < {self.min_endpointing_delay})"
            )
        if self.eou_slow_threshold > self.eou_fast_threshold:
            raise ValueError("TURN_EOU_SLOW_THRESHOLD must be <= TURN_EOU_FAST_THRESHOLD")
        if self.mode == "eou" and self.vad_min_silence_duration < 0.25:
            raise ValueError(
                "TURN_MODE=eou needs TURN_VAD_MIN_SILENCE_DURATION >= 0.25 "
                "(the end-of-turn model is asked after 0.2 s of silence)"
            )
        return self

    def eou_policy(self) -> EouPolicy:
        return EouPolicy(
            fast_threshold=self.eou_fast_threshold,
            slow_threshold=self.eou_slow_threshold,
            max_silence=self.eou_max_silence,
            step=self.eou_step,
        )


def vad_load_kwargs(s: TurnSettings) -> dict[str, Any]:
    """Keyword arguments for ``silero.VAD.load(...)`` and ``inference.VAD(...)`` (the same knobs)."""
    return {
        "min_silence_duration": s.vad_min_silence_duration,
        "min_speech_duration": s.vad_min_speech_duration,
        "activation_threshold": s.vad_activation_threshold,
        "prefix_padding_duration": s.vad_prefix_padding,
        "max_buffered_speech": s.vad_max_buffered_speech,
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
        return AdaptiveEouDetector(s.eou_policy())
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
