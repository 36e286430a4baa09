"""Bridge settings from the environment (`BRIDGE_*`), for the agent layer."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .event_bridge import BridgeOptions
from .livekit_transport import agent_session_start_options
from .protocol import DEFAULT_CONTROL_METHOD, DEFAULT_TOPIC
from .redact import REPORT_LEVELS


class BridgeConfig(BaseSettings):
    """Every field maps to `BRIDGE_<FIELD>`."""

    model_config = SettingsConfigDict(
        allow_inf_nan=False,  # `inf` timeouts overflow later; NaN passes every bound
        env_prefix="BRIDGE_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    enabled: bool = True
    """False: the agent attaches no bridge (clients see only LiveKit's transcription and agent state)."""
    topic: str = Field(default=DEFAULT_TOPIC, min_length=1)
    """Text-stream topic the envelopes are published on."""
    control_method: str = Field(default=DEFAULT_CONTROL_METHOD, min_length=1)
    """RPC method clients call with hitl.respond / agent.interrupt / user.text / session.sync."""
    allowed_identities: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Identities besides the served participant that may see events, answer approvals and interrupt
    the agent, not type to it (comma-separated)."""
    report_overrides: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """Per-tool report levels, `tool=level,...` with level none|name|args|full."""
    broadcast: bool = False
    """Publish envelopes to every participant instead of the served one (plus allowed identities)."""
    expose_agent_session: bool = False
    """Keep livekit-agents' own `lk.agent.session` host on (it sends tool arguments to every participant)."""
    max_message_bytes: int = Field(default=8192, ge=256, le=15 * 1024)
    """Largest accepted client message (LiveKit RPC caps payloads at 15 KiB anyway)."""

    @field_validator("allowed_identities", mode="before")
    @classmethod
    def _split_ids(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("report_overrides", mode="before")
    @classmethod
    def _split_overrides(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        out: dict[str, str] = {}
        for part in (p.strip() for p in v.split(",")):
            if not part:
                continue
            name, sep, level = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"BRIDGE_REPORT_OVERRIDES entry {part!r} must look like tool=level")
            out[name.strip()] = level.strip()
        return out

    @field_validator("report_overrides")
    @classmethod
    def _check_levels(cls, v: dict[str, str]) -> dict[str, str]:
        for name, level in v.items():
            if level not in REPORT_LEVELS:
                raise ValueError(
                    f"BRIDGE_REPORT_OVERRIDES: level for {name!r} must be one of {', '.join(REPORT_LEVELS)}, got {level!r}"
                )
        return v

    def attach_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `attach_event_bridge` (besides room, brain, names and controls)."""
        return {
            "topic": self.topic,
            "allowed_identities": tuple(self.allowed_identities),
            "report_overrides": dict(self.report_overrides),
            "options": BridgeOptions(
                control_method=self.control_method,
                max_message_bytes=self.max_message_bytes,
                broadcast=self.broadcast,
            ),
        }

    def session_start_options(self) -> dict[str, Any]:
        """Keyword arguments for `AgentSession.start` (turns `lk.agent.session` off by default)."""
        return agent_session_start_options(self.expose_agent_session)
