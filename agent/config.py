"""`AgentSettings`: the whole worker's configuration in one object, read from env and `.env`.

It nests the settings each package owns (each keeps its own variable names):
`brain` (BRAIN_*, model keys), `speech` (STT_* / TTS_* and provider keys), `turn` (TURN_*) and
`bridge` (BRIDGE_*). The agent's own knobs use the `AGENT_` prefix; the LiveKit connection uses
the standard LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from brain import BrainConfig, ConfigError
from brain.errors import register_secrets_of
from bridge import BridgeConfig

from .turns import TurnSettings

GreetingMode = Literal["say", "generate", "off"]
AgentMode = Literal["pipeline", "realtime"]

DEFAULT_GREETING = "Hi! I'm your voice assistant. Ask me about the weather, or ask me to book a table."
DEFAULT_GREETING_PROMPT = "The user just joined the call. Greet them in one short sentence."
DEFAULT_GOODBYE = "It's been quiet for a while, so I'll hang up now. Goodbye!"
DEFAULT_STT_APOLOGY = "Sorry, I didn't catch that. Could you say it again?"

_NESTED = ("brain", "speech", "turn", "bridge", "realtime")
LIVEKIT_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "CRITICAL")
"""What livekit-agents' `--log-level` / LIVEKIT_LOG_LEVEL accepts (any case)."""
_SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL")


def _speech_settings() -> Any:
    from providers import SpeechSettings

    return SpeechSettings()


def _realtime_settings() -> Any:
    from providers.realtime import RealtimeSettings

    return RealtimeSettings()


class AgentSettings(BaseSettings):
    """Every field maps to an environment variable: `AGENT_<FIELD>` unless noted."""

    model_config = SettingsConfigDict(
        allow_inf_nan=False,  # `inf` timeouts overflow later; NaN passes every bound
        env_prefix="AGENT_", env_file=".env", extra="ignore", populate_by_name=True,
    )

    # --- LiveKit connection (needed only by the commands that connect: start, dev, connect) ---
    livekit_url: str | None = Field(default=None, validation_alias=AliasChoices("LIVEKIT_URL"))
    livekit_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("LIVEKIT_API_KEY"))
    livekit_api_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("LIVEKIT_API_SECRET")
    )
    livekit_log_level: str | None = Field(default=None, validation_alias=AliasChoices("LIVEKIT_LOG_LEVEL"))
    """Log level of the worker commands (start, dev, connect, console), as livekit's `--log-level`
    takes it; None = livekit-agents' default (INFO for start, DEBUG for dev). livekit's CLI reads
    the variable from the environment only: set here, it is honoured in `.env` too."""

    # --- the worker ---
    name: str = "voice-agent"
    """Agent name for explicit dispatch (AGENT_NAME): rooms get this agent only when a token or
    the dispatch API asks for it by name. Blank means the default, as for the tokens the web
    service and `python -m agent token` issue (they dispatch this same name)."""
    http_host: str = ""
    """Interface of the worker's health-check HTTP server ('' = all)."""
    http_port: int = Field(default=8081, ge=0, le=65535)
    """Port of the health-check server: GET / answers 200 OK while the worker is healthy."""
    idle_processes: int | None = Field(default=None, ge=0)
    """Job processes kept warm (Silero VAD loaded); empty = livekit-agents' default."""
    drain_timeout: int = Field(default=600, ge=0)
    """Seconds running sessions may continue after SIGTERM."""

    # --- what answers ---
    mode: AgentMode = "pipeline"
    """`pipeline`: STT -> brain -> TTS; `realtime`: a speech-to-speech model (REALTIME_*) with
    the brain's tools, approvals and events."""

    # --- provider failures ---
    provider_timeout: float = Field(default=10.0, gt=0)
    """Seconds a provider may stall (an STT recognition, a TTS's first audio after text, a
    realtime reply) before it counts as a `timeout` failure; also the connect timeout."""
    provider_max_retry: int = Field(default=1, ge=0)
    """Retries of a failed STT / TTS request before the turn gives up on it (and apologises)."""
    provider_retry_interval: float = Field(default=0.5, ge=0)
    """Seconds before the second retry (the first one is immediate)."""
    stt_apology: str = DEFAULT_STT_APOLOGY
    """Spoken when the user's speech could not be transcribed (empty: stay silent). Failed
    replies use BRAIN_APOLOGY."""

    # --- session life ---
    join_timeout: float = Field(default=120.0, ge=0)
    """Seconds a dispatched agent waits for a user to join the room (0 = forever)."""
    greeting_mode: GreetingMode = "say"
    """`say`: speak AGENT_GREETING verbatim; `generate`: the brain answers AGENT_GREETING_PROMPT; `off`."""
    greeting: str = DEFAULT_GREETING
    greeting_prompt: str = DEFAULT_GREETING_PROMPT
    inactivity_timeout: float = Field(default=60.0, ge=0)
    """Seconds of silence from both sides before the agent says AGENT_GOODBYE and leaves (0 = never)."""
    goodbye: str = DEFAULT_GOODBYE

    # --- nested settings of the other packages ---
    brain: BrainConfig = Field(default_factory=BrainConfig)
    speech: Any = Field(default_factory=_speech_settings)
    turn: TurnSettings = Field(default_factory=TurnSettings)
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    realtime: Any = Field(default_factory=_realtime_settings)
    """`providers.realtime.RealtimeSettings` (REALTIME_*), used when AGENT_MODE=realtime."""

    @field_validator("idle_processes", "livekit_url", "livekit_log_level", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("livekit_log_level")
    @classmethod
    def _livekit_level(cls, v: str | None) -> str | None:
        if v is None:
            return None
        level = v.strip().upper()
        if level not in LIVEKIT_LOG_LEVELS:
            raise ValueError(f"use one of {', '.join(LIVEKIT_LOG_LEVELS).lower()}")
        return level

    @field_validator(
        "name", "http_port", "drain_timeout", "mode", "provider_timeout", "provider_max_retry",
        "provider_retry_interval", "join_timeout", "greeting_mode", "inactivity_timeout", mode="before",
    )
    @classmethod
    def _blank_is_default(cls, v: object, info: ValidationInfo) -> object:
        """`AGENT_JOIN_TIMEOUT=` (as `.env.example` may leave it) means the default. Not for the
        texts: an empty AGENT_GREETING / AGENT_GOODBYE / AGENT_STT_APOLOGY means "say nothing"."""
        if isinstance(v, str) and not v.strip() and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return v

    @field_validator("name", "greeting", "greeting_prompt", "goodbye", "stt_apology", mode="before")
    @classmethod
    def _strip(cls, v: object) -> object:
        return v.strip() if isinstance(v, str) else v

    def model_post_init(self, context: Any, /) -> None:
        # every configured key is scrubbed literally from logs and error envelopes
        register_secrets_of(self)

    def effective_brain(self) -> BrainConfig:
        """The brain config the worker builds: in realtime mode the realtime model answers, so a
        built-in model backend (openai, gemini) is replaced by the offline one and needs no key;
        the tools, approvals and prompt stay. A custom brain is kept as it is."""
        if self.mode == "realtime" and self.brain.backend in ("openai", "gemini"):
            return self.brain.model_copy(update={"backend": "offline"})
        return self.brain

    def missing_livekit(self) -> list[str]:
        """The LiveKit connection variables that are not set."""
        return [
            var
            for var, value in (
                ("LIVEKIT_URL", self.livekit_url),
                ("LIVEKIT_API_KEY", _reveal(self.livekit_api_key)),
                ("LIVEKIT_API_SECRET", _reveal(self.livekit_api_secret)),
            )
            if not value
        ]

    def livekit_url_problem(self) -> str | None:
        """Why LIVEKIT_URL cannot reach a LiveKit server (None when it can, or is not set)."""
        return None if self.livekit_url is None else livekit_url_problem(self.livekit_url, "LIVEKIT_URL")

    def require_livekit(self, missing: list[str] | None = None) -> tuple[str, str, str]:
        """URL, key and secret for the commands that connect; names the missing variables."""
        missing = self.missing_livekit() if missing is None else missing
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} not set: connecting to LiveKit needs LIVEKIT_URL, "
                "LIVEKIT_API_KEY and LIVEKIT_API_SECRET (in the environment or .env)"
            )
        return str(self.livekit_url), _reveal(self.livekit_api_key), _reveal(self.livekit_api_secret)

    def masked(self) -> dict[str, Any]:
        """The effective configuration, grouped by package, secrets replaced by '***'."""
        own = {
            name: _mask_value(name, getattr(self, name))
            for name in type(self).model_fields
            if name not in _NESTED
        }
        out: dict[str, Any] = {"agent": own, "brain": self.brain.masked()}
        out["speech"] = _mask_model(self.speech)
        out["turn"] = _mask_model(self.turn)
        out["bridge"] = _mask_model(self.bridge)
        out["realtime"] = _mask_model(self.realtime)
        return out


LIVEKIT_SCHEMES = ("ws", "wss", "http", "https")
"""What livekit-agents connects a worker with (it turns http(s) into ws(s))."""


def livekit_url_problem(url: str, name: str) -> str | None:
    """Why `url` (the value of `name`) is not a LiveKit server URL, or None. livekit-agents does
    not check it: `localhost:7880` (no scheme) failed every connection attempt with the error
    "agent" for two minutes, then the worker exited."""
    from brain.errors import redact_secrets

    shown = redact_secrets(url.strip())
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # a port that is not a number raises
    except ValueError as e:
        return f"{name}={shown!r} is not a URL ({e}); write ws://HOST:7880 (wss://HOST behind TLS)"
    if parts.scheme not in LIVEKIT_SCHEMES or not parts.hostname:
        return (f"{name}={shown!r} is not a LiveKit server URL: write ws://HOST:7880 (or wss://HOST "
                "behind TLS; LiveKit Cloud gives wss://PROJECT.livekit.cloud)")
    if port == 0:
        return f"{name}={shown!r}: port 0 cannot be connected to"
    return None


def _reveal(secret: SecretStr | None) -> str:
    return secret.get_secret_value().strip() if secret is not None else ""


def _looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in _SECRET_WORDS)


def _mask_value(name: str, value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else None
    if isinstance(value, dict):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if value not in (None, "") and _looks_secret(name) and isinstance(value, str):
        return "***"
    return value


def _mask_model(model: Any) -> Any:
    if model is None:
        return None
    if hasattr(model, "masked") and callable(model.masked):
        return model.masked()
    if isinstance(model, BaseModel):
        return {name: _mask_value(name, getattr(model, name)) for name in type(model).model_fields}
    return repr(model)


# --- variables nobody reads (a misspelt name in `.env` is otherwise silently ignored) ---

OWN_PREFIXES = ("AGENT_", "BRAIN_", "TURN_", "BRIDGE_", "REALTIME_", "WEB_", "TOKEN_", "STT_", "TTS_", "FALLBACK_", "LOCAL_")
"""Prefixes only this project's settings use: a `.env` name with one of them that no settings
class reads is a mistake (other prefixes, e.g. OPENAI_, may belong to other tools)."""
OTHER_READERS = frozenset({
    "AGENT_LOG_LEVEL",  # agent.cli, before any settings object exists
    "AGENT_EXTRAS", "AGENT_STOP_GRACE_PERIOD",  # docker-compose.yml
})


def known_variables() -> set[str]:
    """Every variable name a settings class of the agent (or docker compose) reads, upper case."""
    from pydantic import AliasChoices

    from providers import SpeechSettings
    from providers.realtime import RealtimeSettings

    from .tokens import TokenSettings
    from .web import WebSettings

    names = set(OTHER_READERS)
    classes: tuple[type[BaseSettings], ...] = (
        AgentSettings, BrainConfig, TurnSettings, BridgeConfig, SpeechSettings, RealtimeSettings, TokenSettings, WebSettings,
    )
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix") or "")
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names.update(str(c).upper() for c in alias.choices if isinstance(c, str))
            elif isinstance(alias, str):
                names.add(alias.upper())
            else:
                names.add((prefix + name).upper())
    names.update(SpeechSettings.collected_variables())
    return names


def config_file_variables() -> set[str]:
    """The names the TOML file of VOICE_CONFIG_FILE is read for: speech and realtime settings."""
    from providers import SpeechSettings
    from providers.realtime import RealtimeSettings
    from providers.spec import field_variables

    names = {
        v.upper()
        for cls in (SpeechSettings, RealtimeSettings)
        for n, f in cls.model_fields.items()
        if n != "provider_env"
        for v in field_variables(n, f)
    }
    return names | SpeechSettings.collected_variables()


def unknown_config_file_variables(path: str) -> list[str]:
    """Warnings for the names in the TOML file `path` that nothing reads from it (a misspelt
    name, or a BRAIN_* / TURN_* / AGENT_* setting, which only the environment and `.env` hold).
    A file that is missing or not TOML gives none: the settings report it, as an error."""
    import difflib

    from providers.errors import ProviderConfigError
    from providers.settings import CONFIG_FILE_VAR, read_config_file

    try:
        names = list(read_config_file(path))
    except ProviderConfigError:
        return []
    readable = config_file_variables()
    elsewhere = known_variables()
    out: list[str] = []
    for name in names:
        if name in readable:
            continue
        where = f"{CONFIG_FILE_VAR}={path}: {name}"
        if name in elsewhere:
            out.append(f"{where} is read from the environment and .env only, not from this file "
                       "(it holds speech and realtime settings); it has no effect here")
            continue
        close = difflib.get_close_matches(name, sorted(readable), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"{where} is not a speech or realtime setting{hint}; it has no effect")
    return out


def unknown_variables(names: list[str]) -> list[tuple[str, str | None]]:
    """The names with one of `OWN_PREFIXES` that nothing reads, each with the closest known name."""
    import difflib

    known: set[str] | None = None
    out: list[tuple[str, str | None]] = []
    for name in names:
        upper = name.upper()
        if not upper.startswith(OWN_PREFIXES):
            continue
        known = known_variables() if known is None else known
        if upper not in known:
            close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.75)
            out.append((name, close[0] if close else None))
    return out
