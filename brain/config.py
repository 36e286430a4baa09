"""Brain configuration, read from the environment and `.env` (pydantic-settings)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError, redact_secrets

BUILTIN_BACKENDS = ("offline", "openai", "gemini")
DEFAULT_MODELS = {"openai": "gpt-4o-mini", "gemini": "gemini-2.5-flash", "offline": "offline"}

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Your replies are spoken aloud: keep them short, "
    "conversational and free of markdown, lists or emoji. Use tools when they help."
)


def checked_base_url(value: object) -> object:
    """A provider base URL as the SDKs need it: blank means unset, the scheme is required
    (`127.0.0.1:8000/v1` failed only at the first request, deep in the HTTP client), and a
    trailing slash goes (plugins that append `/path` would ask for `//path`)."""
    if not isinstance(value, str):
        return value
    url = value.strip()
    if not url:
        return None
    if not url.lower().startswith(("http://", "https://", "ws://", "wss://")):
        raise ValueError(f"{_shown_url(url)!r} is not a URL: it must start with http:// or https://")
    return url.rstrip("/")


def _shown_url(url: str) -> str:
    """What an error may say of a URL given without its scheme: its host and path, without any
    `user:password@` (without a scheme no pattern recognises a password) and without anything
    credential-shaped (a key pasted into the wrong variable)."""
    authority, slash, rest = url.partition("/")
    if "@" in authority:
        authority = "…@" + authority.rpartition("@")[2]
    return redact_secrets(authority + slash + rest)


class BrainConfig(BaseSettings):
    """Every field maps to an environment variable: `BRAIN_<FIELD>` unless noted."""

    model_config = SettingsConfigDict(
        allow_inf_nan=False,  # `inf` timeouts overflow later; NaN passes every bound
        env_prefix="BRAIN_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,  # `BRAIN_MODEL=` (as in .env.example) means "use the default"
    )

    backend: str = "offline"
    """`offline`, `openai`, `gemini`, or a user brain as `package.module:factory`."""
    model: str | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)
    user_id: str | None = None
    """Default identity approvals are addressed to when a turn names none."""

    tools: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["brain.example_tools"])
    """Import paths of tool modules (comma-separated in the env); every @tool in each is loaded.
    `none` loads no module (an empty value cannot: it means "the default", the example tools)."""
    hitl_timeout: float = Field(default=30.0, gt=0)
    tool_timeout: float = Field(default=20.0, gt=0)
    max_tool_steps: int = Field(default=5, ge=1)
    memory_turns: int = Field(default=20, ge=1)
    memory_chars: int = Field(default=48_000, ge=1)
    """Size bound on a conversation's history (text, tool arguments and results; not the system
    prompt): the oldest whole turns are dropped until it fits. The current turn is always sent."""
    request_timeout: float = Field(default=30.0, gt=0)
    """Seconds the model may stay silent: before its first chunk (per attempt) and between two
    chunks (a server's keep-alives do not count as the model speaking). Not a bound on a whole
    reply, which streams for as long as it flows. A custom backend gets it from the brain
    (`VoiceBrain`), unless it sets `bounds_silence = True` and enforces it itself."""
    max_retries: int = Field(default=0, ge=0)
    """Retries of a request that failed or stayed silent before its first chunk, made by the brain
    (`brain.backends.base.bounded_stream`), after the server's retry hint, all within
    `request_timeout` x (`max_retries` + 1); 0 keeps latency predictable (a failed turn apologises)."""
    apology: str = "Sorry, something went wrong on my side. Could you say that again?"
    """Spoken when a turn fails; empty to stay silent."""
    offline_token_delay: float = Field(default=0.0, ge=0)
    """Seconds between offline deltas (0: as fast as possible)."""

    openai_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None, validation_alias=AliasChoices("OPENAI_BASE_URL"))
    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )
    gemini_base_url: str | None = Field(default=None, validation_alias=AliasChoices("GEMINI_BASE_URL"))

    @field_validator("openai_base_url", "gemini_base_url", mode="before")
    @classmethod
    def _base_url(cls, v: object) -> object:
        return checked_base_url(v)

    @field_validator("tools", mode="before")
    @classmethod
    def _split_tools(cls, v: object) -> object:
        if isinstance(v, str):
            names = [p.strip() for p in v.split(",") if p.strip()]
            if not names and v.strip():
                raise ValueError(f"BRAIN_TOOLS={v!r} names no tool module; use BRAIN_TOOLS=none for no tools")
            v = names
        if isinstance(v, list) and any(isinstance(p, str) and p.lower() == "none" for p in v):
            if len(v) > 1:
                raise ValueError(f"BRAIN_TOOLS=none cannot be combined with tool modules: {v}")
            return []
        return v

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, v: str) -> str:
        v = v.strip()
        if v not in BUILTIN_BACKENDS and ":" not in v:
            raise ValueError(
                f"unknown brain backend {v!r}: use one of {', '.join(BUILTIN_BACKENDS)} "
                "or a custom brain as 'package.module:factory'"
            )
        return v

    @property
    def effective_model(self) -> str:
        return self.model or DEFAULT_MODELS.get(self.backend, "custom")

    def require_keys(self) -> None:
        """Fail at start-up, naming the missing variable."""
        if self.backend == "openai" and not _present(self.openai_api_key):
            raise ConfigError("OPENAI_API_KEY is not set; BRAIN_BACKEND=openai needs it")
        if self.backend == "gemini" and not _present(self.gemini_api_key):
            raise ConfigError("GEMINI_API_KEY (or GOOGLE_API_KEY) is not set; BRAIN_BACKEND=gemini needs it")

    def masked(self) -> dict[str, object]:
        """The effective configuration with secrets masked, for `doctor` and logs."""
        out: dict[str, object] = {}
        for name, value in self.model_dump().items():
            if isinstance(getattr(self, name), SecretStr):
                out[name] = "***" if _present(getattr(self, name)) else None
            elif isinstance(value, str) and name.endswith("base_url"):
                out[name] = redact_secrets(value)  # https://user:password@proxy/...
            else:
                out[name] = value
        return out


def _present(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value().strip())


def env_variable(settings_cls: type[BaseSettings], field_name: str) -> str:
    """The environment variable a pydantic-settings field is read from (its first alias, else
    the class's prefix + the field name)."""
    field = settings_cls.model_fields.get(field_name)
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, AliasChoices) and alias.choices and isinstance(alias.choices[0], str):
        return alias.choices[0]
    if isinstance(alias, str):
        return alias
    prefix = str(settings_cls.model_config.get("env_prefix") or "")
    return (prefix + field_name).upper()


def describe_settings_error(exc: ValidationError, classes: Iterable[type[BaseSettings]]) -> str:
    """One line per problem, naming the variable to fix and never echoing its value (it may be a
    secret): "BRAIN_HITL_TIMEOUT: Input should be a finite number"."""
    by_title = {cls.__name__: cls for cls in classes}
    cls = by_title.get(exc.title)
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc) or "value"
        if cls is not None and loc and loc[0] in cls.model_fields:
            where = env_variable(cls, loc[0]) + ("." + ".".join(loc[1:]) if loc[1:] else "")
        problems.append(f"{where}: {err['msg']}")
    return "invalid configuration: " + "; ".join(problems)
