"""Join tokens for web clients: `python -m agent token` and the issuing logic the web server uses.

A token carries only what a browser participant needs (join one room, publish the microphone,
subscribe, send data / text streams / RPC) and asks LiveKit to dispatch this agent, by name, to
the room when the token's holder creates it. It expires after `TOKEN_TTL` seconds (default 600,
at most 3600). The API secret signs the token and never leaves this process.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

from livekit import api
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_AGENT_NAME = "voice-agent"
DEFAULT_TTL_SECONDS = 600
MAX_TTL_SECONDS = 3600
MIN_TTL_SECONDS = 30

# Conservative charsets: they survive URLs, logs and LiveKit's own checks unchanged.
ROOM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")
NAME_MAX = 64
ROOM_PREFIX_MAX = 48
"""Leaves 16 of a room name's 64 characters for the page's random part."""
ROOM_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TokenInputError(ValueError):
    """A room, identity, name or ttl that may not go into a token; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class TokenSettings(BaseSettings):
    """What token issuing reads from the environment (or `.env`)."""

    model_config = SettingsConfigDict(allow_inf_nan=False, env_file=".env", extra="ignore", populate_by_name=True)

    api_key: str | None = Field(default=None, validation_alias=AliasChoices("LIVEKIT_API_KEY"))
    api_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("LIVEKIT_API_SECRET")
    )
    url: str | None = Field(default=None, validation_alias=AliasChoices("LIVEKIT_URL"))
    public_url: str | None = Field(
        default=None, validation_alias=AliasChoices("LIVEKIT_PUBLIC_URL")
    )
    """The LiveKit URL browsers connect to; differs from LIVEKIT_URL inside docker compose."""
    agent_name: str = Field(
        default=DEFAULT_AGENT_NAME, validation_alias=AliasChoices("AGENT_NAME")
    )
    ttl_seconds: int = Field(
        default=DEFAULT_TTL_SECONDS,
        ge=MIN_TTL_SECONDS,
        le=MAX_TTL_SECONDS,
        validation_alias=AliasChoices("TOKEN_TTL"),
    )
    room_prefix: str = Field(default="web-", validation_alias=AliasChoices("WEB_ROOM_PREFIX"))
    """The web endpoint only issues tokens for rooms whose name starts with it (empty: any room)."""
    max_participants: int = Field(default=3, ge=0, le=1000, validation_alias=AliasChoices("ROOM_MAX_PARTICIPANTS"))
    """A room created with one of these tokens holds at most this many participants, the agent
    included (0: no limit). 3 = the user, the agent and one supervisor."""

    @field_validator("api_key", "url", "public_url", mode="before")
    @classmethod
    def _blank_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("ttl_seconds", "max_participants", "agent_name", mode="before")
    @classmethod
    def _blank_is_default(cls, v: object, info: ValidationInfo) -> object:
        """`TOKEN_TTL=` (as `.env.example` may leave it) means the default, as for every other
        blank setting; WEB_ROOM_PREFIX is the exception: empty there means any room."""
        if isinstance(v, str) and not v.strip() and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        if info.field_name == "agent_name" and isinstance(v, str):
            return v.strip()  # as the worker reads AGENT_NAME: tokens must dispatch the name it registers
        return v

    @field_validator("room_prefix", mode="before")
    @classmethod
    def _check_room_prefix(cls, v: object) -> object:
        """Blank is empty (any room). A prefix no room name can start with made the endpoint refuse
        every request ("room: must start with ' '") while the server started as if all was well."""
        if not isinstance(v, str):
            return v
        v = v.strip()
        if v and not (len(v) <= ROOM_PREFIX_MAX and ROOM_PREFIX_RE.fullmatch(v)):
            raise ValueError(
                f"empty, or 1-{ROOM_PREFIX_MAX} characters a room name can start with: letters, digits, "
                "'_', '-', '.', starting with a letter or digit"
            )
        return v

    @field_validator("api_secret", mode="before")
    @classmethod
    def _blank_secret_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @property
    def browser_url(self) -> str | None:
        return self.public_url or self.url

    def require_keys(self) -> tuple[str, str]:
        """The key pair, or a ValueError naming the missing variable(s)."""
        missing = [
            name
            for name, value in (("LIVEKIT_API_KEY", self.api_key), ("LIVEKIT_API_SECRET", self.api_secret))
            if not value
        ]
        if missing:
            raise ValueError(f"set {' and '.join(missing)} (see .env.example) to issue tokens")
        assert self.api_key is not None and self.api_secret is not None
        return self.api_key, self.api_secret.get_secret_value()


@dataclass(frozen=True)
class IssuedToken:
    token: str
    room: str
    identity: str
    expires_at: int
    """Epoch seconds."""


def check_room(room: object) -> str:
    if not isinstance(room, str) or not room:
        raise TokenInputError("room", "required")
    if not ROOM_RE.fullmatch(room):
        raise TokenInputError(
            "room", "1-64 characters: letters, digits, '_', '-', '.', starting with a letter or digit"
        )
    return room


def check_identity(identity: object) -> str:
    if not isinstance(identity, str) or not identity:
        raise TokenInputError("identity", "required")
    if not IDENTITY_RE.fullmatch(identity):
        raise TokenInputError(
            "identity",
            "1-128 characters: letters, digits, '_', '-', '.', '@', ':', starting with a letter or digit",
        )
    return identity


def check_name(name: object) -> str | None:
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        raise TokenInputError("name", "must be a string")
    if len(name) > NAME_MAX:
        raise TokenInputError("name", f"at most {NAME_MAX} characters")
    if not name.isprintable():
        raise TokenInputError("name", "control characters are not allowed")
    return name


def check_ttl(ttl: object) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TokenInputError("ttl", "must be a whole number of seconds")
    if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        raise TokenInputError("ttl", f"must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS} seconds")
    return ttl


def client_grants(room: str) -> api.VideoGrants:
    """Join this one room; publish the microphone only; subscribe; data, text streams and RPC."""
    return api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=["microphone"],
        can_subscribe=True,
        can_publish_data=True,
        can_update_own_metadata=False,
    )


def issue_token(
    settings: TokenSettings,
    *,
    room: str,
    identity: str,
    name: str | None = None,
    ttl_seconds: int | None = None,
) -> IssuedToken:
    """Validate the inputs and sign a client token that dispatches `settings.agent_name`."""
    room = check_room(room)
    identity = check_identity(identity)
    name = check_name(name)
    ttl = check_ttl(settings.ttl_seconds if ttl_seconds is None else ttl_seconds)
    key, secret = settings.require_keys()

    dispatch = api.RoomAgentDispatch(agent_name=settings.agent_name)
    token = (
        api.AccessToken(key, secret)
        .with_identity(identity)
        .with_grants(client_grants(room))
        .with_room_config(api.RoomConfiguration(agents=[dispatch], max_participants=settings.max_participants))
        .with_ttl(timedelta(seconds=ttl))
    )
    if name:
        token = token.with_name(name)
    expires_at = int(time.time()) + ttl
    return IssuedToken(token=token.to_jwt(), room=room, identity=identity, expires_at=expires_at)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agent token",
        description="Print a join token for a web client; joining with it dispatches the agent.",
    )
    p.add_argument("--room", required=True, help="room name")
    p.add_argument("--identity", required=True, help="participant identity")
    p.add_argument("--name", default=None, help="display name (optional)")
    p.add_argument(
        "--ttl",
        type=int,
        default=None,
        help=f"lifetime in seconds (default TOKEN_TTL or {DEFAULT_TTL_SECONDS}, max {MAX_TTL_SECONDS})",
    )
    p.add_argument(
        "--json", action="store_true", help="print {url, token, room, identity, expires_at} as JSON"
    )
    return p


def token_command(argv: list[str]) -> int:
    """`python -m agent token --room R --identity U`: print the token (or JSON with --json)."""
    args = _parser().parse_args(argv)
    try:
        settings = TokenSettings()
        issued = issue_token(
            settings, room=args.room, identity=args.identity, name=args.name, ttl_seconds=args.ttl
        )
    except ValidationError as e:
        print(f"error: bad token settings: {describe_settings_error(e)}", file=sys.stderr)
        return 2
    except ValueError as e:  # TokenInputError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        out = {
            "url": settings.browser_url,
            "token": issued.token,
            "room": issued.room,
            "identity": issued.identity,
            "expires_at": issued.expires_at,
        }
        print(json.dumps(out))
    else:
        print(issued.token)
    return 0


_ENV_NAMES = {
    "ttl_seconds": "TOKEN_TTL",
    "agent_name": "AGENT_NAME",
    "room_prefix": "WEB_ROOM_PREFIX",
    "max_participants": "ROOM_MAX_PARTICIPANTS",
    "tokens_per_minute": "WEB_TOKENS_PER_MINUTE",
    "trusted_proxies": "WEB_TRUSTED_PROXIES",
    "host": "WEB_HOST",
    "port": "WEB_PORT",
    "root": "WEB_ROOT",
    "test_mode": "WEB_TEST_MODE",
}


def describe_settings_error(e: ValidationError) -> str:
    """Name the env variable, never echo the value (it could be a secret)."""
    parts = []
    for err in e.errors():
        loc = str(err["loc"][0]) if err["loc"] else "?"
        parts.append(f"{_ENV_NAMES.get(loc, loc)}: {err['msg']}")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(token_command(sys.argv[1:]))
