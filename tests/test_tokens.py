"""Join tokens: decoded with pyjwt and the secret, their claims are exactly what a web client needs."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest

from agent.config import AgentSettings
from agent.tokens import (
    MAX_TTL_SECONDS,
    TokenInputError,
    TokenSettings,
    issue_token,
    token_command,
)

KEY = "APItestkey"
SECRET = "test-secret-0123456789-abcdefghijklmnop"


def settings(**overrides: object) -> TokenSettings:
    values: dict[str, object] = {"api_key": KEY, "api_secret": SECRET, "agent_name": "helper-bot"}
    values.update(overrides)
    return TokenSettings(_env_file=None, **values)  # type: ignore[arg-type]


def decode(token: str) -> dict:
    return jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)


def test_token_grants_only_what_a_web_client_needs() -> None:
    claims = decode(issue_token(settings(), room="room-1", identity="alice").token)

    assert claims["sub"] == "alice"
    assert claims["iss"] == KEY
    assert claims["video"] == {
        "roomJoin": True,
        "room": "room-1",
        "canPublish": True,
        "canPublishSources": ["microphone"],
        "canSubscribe": True,
        "canPublishData": True,
        "canUpdateOwnMetadata": False,
    }
    # nothing beyond joining: no admin / create / list / record / agent / sip grants
    assert set(claims) <= {"sub", "iss", "nbf", "exp", "video", "roomConfig", "name"}


def test_token_dispatches_the_agent_by_name_and_caps_the_room() -> None:
    claims = decode(issue_token(settings(), room="r", identity="u").token)
    # a room its holder creates takes the user, the agent and one supervisor by default
    assert claims["roomConfig"] == {"agents": [{"agentName": "helper-bot"}], "maxParticipants": 3}
    unlimited = decode(issue_token(settings(max_participants=0), room="r", identity="u").token)
    assert unlimited["roomConfig"] == {"agents": [{"agentName": "helper-bot"}]}


def test_token_expires_after_default_ttl_and_custom_ttl() -> None:
    issued = issue_token(settings(), room="r", identity="u")
    claims = decode(issued.token)
    assert claims["exp"] - claims["nbf"] == 600
    assert issued.expires_at == claims["exp"]

    short = decode(issue_token(settings(), room="r", identity="u", ttl_seconds=120).token)
    assert short["exp"] - short["nbf"] == 120

    from_settings = decode(issue_token(settings(ttl_seconds=900), room="r", identity="u").token)
    assert from_settings["exp"] - from_settings["nbf"] == 900


def test_ttl_is_capped_at_one_hour() -> None:
    with pytest.raises(TokenInputError, match="ttl"):
        issue_token(settings(), room="r", identity="u", ttl_seconds=MAX_TTL_SECONDS + 1)
    with pytest.raises(ValueError, match="TOKEN_TTL"):
        TokenSettings(_env_file=None, TOKEN_TTL=7200)  # type: ignore[call-arg]


def test_display_name_is_carried() -> None:
    claims = decode(issue_token(settings(), room="r", identity="u", name="Alice B.").token)
    assert claims["name"] == "Alice B."


def test_wrong_secret_does_not_verify() -> None:
    token = issue_token(settings(), room="r", identity="u").token
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-of-sufficient-length!!", algorithms=["HS256"])


@pytest.mark.parametrize(
    ("room", "identity", "name", "field"),
    [
        ("", "u", None, "room"),
        ("has space", "u", None, "room"),
        ("-leading-dash", "u", None, "room"),
        ("r" * 65, "u", None, "room"),
        ("room/../x", "u", None, "room"),
        ("r", "", None, "identity"),
        ("r", "a<script>", None, "identity"),
        ("r", "x" * 129, None, "identity"),
        ("r", "u", "n" * 65, "name"),
        ("r", "u", "bell\x07", "name"),
    ],
)
def test_bad_input_names_the_field(room: str, identity: str, name: str | None, field: str) -> None:
    with pytest.raises(TokenInputError) as err:
        issue_token(settings(), room=room, identity=identity, name=name)
    assert err.value.field == field


def test_missing_keys_name_the_variables() -> None:
    with pytest.raises(ValueError, match="LIVEKIT_API_KEY and LIVEKIT_API_SECRET"):
        issue_token(TokenSettings(_env_file=None), room="r", identity="u")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("TOKEN_TTL", "WEB_ROOM_PREFIX", "LIVEKIT_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    monkeypatch.setenv("LIVEKIT_URL", "ws://livekit.test:7880")
    monkeypatch.setenv("AGENT_NAME", "cli-agent")
    return monkeypatch


def test_cli_prints_a_token(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert token_command(["--room", "demo", "--identity", "bob"]) == 0
    out, err = capsys.readouterr()
    claims = decode(out.strip())
    assert claims["sub"] == "bob"
    assert claims["video"]["room"] == "demo"
    assert claims["roomConfig"]["agents"][0]["agentName"] == "cli-agent"
    assert SECRET not in out + err


def test_cli_json_output(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert token_command(["--room", "demo", "--identity", "bob", "--ttl", "60", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["url"] == "ws://livekit.test:7880"
    assert (body["room"], body["identity"]) == ("demo", "bob")
    claims = decode(body["token"])
    assert claims["exp"] - claims["nbf"] == 60 == body["expires_at"] - claims["nbf"]


def test_cli_rejects_bad_room(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert token_command(["--room", "bad room", "--identity", "bob"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "room:" in err


def test_cli_missing_secret(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.delenv("LIVEKIT_API_SECRET")
    assert token_command(["--room", "demo", "--identity", "bob"]) == 2
    assert "LIVEKIT_API_SECRET" in capsys.readouterr().err


def test_cli_bad_ttl_setting_names_variable_not_value(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("TOKEN_TTL", "86400")
    assert token_command(["--room", "demo", "--identity", "bob"]) == 2
    err = capsys.readouterr().err
    assert "TOKEN_TTL" in err and "86400" not in err


@pytest.mark.parametrize("value", ["concierge", " concierge ", "", "  "])
def test_tokens_dispatch_the_name_the_worker_registers_under(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """One AGENT_NAME for both sides (outside compose too): a blank one meant `voice-agent` in
    tokens but automatic dispatch (no name) for the worker, so the agent never joined."""
    monkeypatch.setenv("AGENT_NAME", value)
    worker_name = AgentSettings(_env_file=None).name  # type: ignore[call-arg]
    token_settings = TokenSettings(_env_file=None, api_key=KEY, api_secret=SECRET)  # type: ignore[call-arg]
    claims = decode(issue_token(token_settings, room="r", identity="u").token)
    assert claims["roomConfig"]["agents"] == [{"agentName": worker_name}]
    assert worker_name == (value.strip() or "voice-agent")
