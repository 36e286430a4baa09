"""Credentials in log records (provider messages echo them) are redacted before any handler
formats them: plain formatters, livekit's JSON formatter, messages and tracebacks alike."""

from __future__ import annotations

import io
import json
import logging
import pickle
from pathlib import Path

import pytest
from livekit.agents import APIStatusError
from livekit.agents.cli.log import ColoredFormatter, JsonFormatter

from brain.errors import redact_secrets

KEY_ECHO = "Incorrect API key provided: sk-plac*******lder. You can find your API key at the dashboard."


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.redaction.{id(out)}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    return logger, out


def _fail() -> None:
    raise APIStatusError(KEY_ECHO, status_code=401, body={"message": KEY_ECHO})


@pytest.mark.usefixtures("redacted_logs")
@pytest.mark.parametrize("formatter", [logging.Formatter("%(levelname)s %(message)s"), JsonFormatter()])
def test_messages_and_tracebacks_lose_their_credentials(formatter: logging.Formatter) -> None:
    logger, out = _logger(formatter)
    # how livekit's fallback adapter logs a failed provider: the message as an argument
    logger.warning("%s failed, switching to next STT: %s", "openai", APIStatusError(KEY_ECHO, status_code=401))
    try:
        _fail()
    except APIStatusError:
        logger.exception("recognize failed")
    text = out.getvalue()
    assert "plac" not in text and "lder" not in text, text
    assert text.count("[redacted]") >= 2, text  # where the key was...
    assert "switching to next STT" in text and "Traceback" in text and "_fail" in text  # ...the rest is kept
    if isinstance(formatter, JsonFormatter):
        lines = [json.loads(line) for line in text.splitlines()]
        assert "[redacted]" in lines[1]["exc_info"]


@pytest.mark.usefixtures("redacted_logs")
def test_records_without_credentials_are_left_as_they_were() -> None:
    logger, out = _logger(logging.Formatter("%(message)s"))
    records: list[logging.LogRecord] = []
    logger.addFilter(lambda r: records.append(r) or True)
    try:
        raise ValueError("plain failure")
    except ValueError:
        logger.exception("step %d of %d", 1, 2)
    assert records[0].exc_info is not None and records[0].args == (1, 2)  # exception object kept
    assert out.getvalue().startswith("step 1 of 2\nTraceback")


def test_without_the_redaction_the_key_would_be_logged() -> None:
    """The control: the same record with Python's default factory keeps the key fragment."""
    logger, out = _logger(logging.Formatter("%(message)s"))
    logger.warning("%s", KEY_ECHO)
    assert "sk-plac*******lder" in out.getvalue()


@pytest.mark.usefixtures("redacted_logs")
@pytest.mark.parametrize(
    "formatter",
    [JsonFormatter(), ColoredFormatter("%(levelname)s %(name)s %(message)s %(extra)s")],
    ids=["json", "colored"],
)
def test_extra_fields_lose_their_credentials(formatter: logging.Formatter) -> None:
    """livekit logs a failed reply with `extra={"error": str(e)}`, its session close with the
    error object, realtime errors as dicts: each one is redacted, the rest of the field kept."""
    logger, out = _logger(formatter)
    error = APIStatusError(KEY_ECHO, status_code=401)
    logger.error("failed to generate a reply", extra={"error": str(error)})
    logger.debug("session closed", extra={"reason": "error", "error": error})
    logger.error("realtime error", extra={"event": {"error": {"message": KEY_ECHO, "code": 401}}, "attempt": 2})
    text = out.getvalue()
    assert "plac" not in text and "lder" not in text, text
    assert text.count("[redacted]") >= 3, text
    assert "Incorrect API key provided" in text and "failed to generate a reply" in text
    if isinstance(formatter, JsonFormatter):
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines[1]["reason"] == "error"
        assert lines[2]["event"]["error"]["code"] == 401 and lines[2]["attempt"] == 2


@pytest.mark.usefixtures("redacted_logs")
def test_extra_fields_without_credentials_are_the_same_objects() -> None:
    logger, out = _logger(JsonFormatter())
    payload = {"stt": "local", "attempt": 1, "words": ["a", "b"]}
    records: list[logging.LogRecord] = []
    logger.addFilter(lambda r: records.append(r) or True)
    logger.warning("retrying", extra={"payload": payload, "where": ("a", 1)})
    assert records[0].__dict__["payload"] is payload
    assert json.loads(out.getvalue())["payload"] == payload


def test_redact_value_keeps_shapes() -> None:
    from agent.log_redaction import redact_value

    assert redact_value(("x", KEY_ECHO)) == ("x", redact_secrets(KEY_ECHO))
    assert redact_value([1, {"k": KEY_ECHO}]) == [1, {"k": redact_secrets(KEY_ECHO)}]
    error = APIStatusError(KEY_ECHO, status_code=401)
    assert redact_value(error) == redact_secrets(str(error)) != str(error)
    clean = ValueError("nothing secret")
    assert redact_value(clean) is clean


def test_long_runs_that_once_backtracked_are_redacted_correctly() -> None:
    """The shapes `benchmarks/redaction_scaling.py` times (its cost must stay linear: a regex
    lookahead once took quadratic time on them), checked here for what they become."""
    from bridge.redact import scrub_text

    n = 2_000
    assert redact_secrets("Basic " + "g" * n) == "Basic " + "g" * n  # a word, not a credential
    assert redact_secrets("password: " + "a" * n) == "password: [redacted]"
    assert redact_secrets("https://" + "u" * n + ":" + "p" * n + "@h") == "https://" + "u" * n + ":[redacted]@h"
    for text in ("x." * n, "x-" * n, "xy+" * n, "eyJ-" * n):
        assert redact_secrets(text) == text and scrub_text(text, limit=10**7) == text
    assert "[redacted]" in redact_secrets("eyJa." * n)  # dotted eyJ segments read as a JWT


def test_scheme_values_are_masked_only_when_they_look_like_credentials() -> None:
    from brain.errors import credential_like

    assert credential_like("dXNlcjpwYXNz") and credential_like("abcd1234") and credential_like("abcdefgh==")
    assert not credential_like("Authentication") and not credential_like("estimation")
    assert redact_secrets("Authorization: Basic dXNlcjpwYXNz") == "Authorization: Basic [redacted]"
    assert redact_secrets("Basic Authentication required") == "Basic Authentication required"
    # a bearer value is always a credential, letters only or not
    assert redact_secrets("Authorization: Bearer abcdefghijklmnopqrstuvwx") == "Authorization: Bearer [redacted]"
    assert redact_secrets("token refresh_token: abcdef123456") == "token refresh_token: [redacted]"
    assert redact_secrets("auth-eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.abcdef") == "auth-[redacted]"


def _unshaped_key() -> str:
    """A key in no shape the patterns know (a team proxy's token): words and one dash."""
    import secrets

    return "team-proxy-" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12))


def test_configured_keys_are_scrubbed_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy echoing the key verbatim leaked it: no pattern knows its shape."""
    from agent.config import AgentSettings
    from brain import BrainConfig, create_voice_brain
    from brain.errors import UnavailableError

    speech_key, brain_key = _unshaped_key(), _unshaped_key()
    echo = "401 Invalid proxy token passed. Received API Key = {}"
    assert redact_secrets(echo.format(speech_key)) == echo.format(speech_key)  # unknown: kept
    monkeypatch.setenv("DEEPGRAM_API_KEY", speech_key)
    AgentSettings(_env_file=None)  # type: ignore[call-arg]
    assert redact_secrets(echo.format(speech_key)) == echo.format("[redacted]")
    # the brain alone (a plain asyncio program) registers its own key
    create_voice_brain(BrainConfig(_env_file=None, backend="openai", openai_api_key=brain_key))  # type: ignore[call-arg]
    assert brain_key not in str(UnavailableError(echo.format(brain_key), provider="openai"))


def test_secret_named_environment_variables_are_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plugin keys the settings do not hold (`RESEMBLE_API_KEY`, ...) are read from the environment."""
    from agent.log_redaction import install

    key, other = _unshaped_key(), _unshaped_key()
    monkeypatch.setenv("SOME_PLUGIN_API_KEY", key)
    monkeypatch.setenv("SOME_PLUGIN_VOICE", other)  # not a secret's name: left alone
    install()
    assert redact_secrets(f"bad key {key} for voice {other}") == f"bad key [redacted] for voice {other}"
    logger, out = _logger(logging.Formatter("%(message)s"))
    logger.error("upstream said: %s", key)
    assert key not in out.getvalue()


@pytest.mark.usefixtures("redacted_logs")
@pytest.mark.parametrize(
    "formatter",
    [JsonFormatter(), ColoredFormatter("%(levelname)s %(name)s %(message)s %(extra)s")],
    ids=["json", "colored"],
)
def test_fields_livekit_marks_private_stay_out_of_logs_above_debug(formatter: logging.Formatter) -> None:
    """livekit-agents puts conversation content in `lk.pii.*` extras (its telemetry drops them)
    and logs some at WARNING: a realtime tool call's arguments when it repairs their JSON, the
    user's words when it skips a reply (the goodbye cannot be interrupted). Both formatters
    printed them whole; above DEBUG they now read `[private]`, the rest of the record kept."""
    from livekit.agents.llm.utils import parse_function_arguments

    card = "4111 1111 1111 1111"
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    lk = logging.getLogger("livekit.agents")
    lk.addHandler(handler)
    level = lk.level
    lk.setLevel(logging.DEBUG)
    try:
        # the real parser: a trailing comma is repaired, and the raw arguments were logged
        assert parse_function_arguments(f'{{"card": "{card}", "amount": 12,}}') == {"card": card, "amount": 12}
        lk.warning("skipping reply to user input, current speech generation cannot be interrupted",
                   extra={"lk.pii.user_input": f"my card is {card}", "speech_id": "speech_1"})
        lk.debug("received user transcript", extra={"lk.pii.user_transcript": f"my card is {card}"})
    finally:
        lk.removeHandler(handler)
        lk.setLevel(level)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    for line in lines[:2]:  # WARNING
        assert card not in line and "[private]" in line, line
    assert "repaired malformed function-call JSON arguments" in lines[0] and "speech_1" in lines[1]
    assert card in lines[2]  # DEBUG: the operator asked for the conversation


@pytest.mark.usefixtures("redacted_logs")
def test_a_new_providers_key_read_from_dotenv_is_scrubbed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A provider added as docs/providers.md shows declares its key as a `SecretStr` option; the
    settings collect it into `provider_env`. Read from `.env` only (never in `os.environ`), it was
    scrubbed by shape alone: an unshaped key echoed by its service went to the log verbatim."""
    from pydantic import Field, SecretStr

    from agent.config import AgentSettings
    from brain import errors
    from providers import registry
    from providers.spec import ProviderOptions, ProviderSpec

    class AcmeOptions(ProviderOptions):
        api_key: SecretStr | None = Field(None, validation_alias="ACME_API_KEY")
        voice: str | None = Field(None, validation_alias="ACME_TTS_VOICE")

    monkeypatch.setitem(registry.SPECS["tts"], "acme", ProviderSpec("acme", "tts", AcmeOptions, lambda o: None))
    key, voice = _unshaped_key(), _unshaped_key()
    monkeypatch.delenv("ACME_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"ACME_API_KEY={key}\nACME_TTS_VOICE={voice}\n")
    settings = AgentSettings()
    assert settings.speech.provider_env["ACME_API_KEY"] == key  # the settings did read it
    logger, out = _logger(logging.Formatter("%(message)s"))
    logger.error("acme: 401 Received API Key = %s for voice %s", key, voice)
    assert out.getvalue() == f"acme: 401 Received API Key = [redacted] for voice {voice}\n"
    # a job process gets the settings pickled and registers their keys again (VoiceWorker.setup)
    monkeypatch.setattr(errors, "_KNOWN_SECRETS", ())
    assert key in redact_secrets(key)
    errors.register_secrets_of(pickle.loads(pickle.dumps(settings)))
    assert redact_secrets(f"{key} {voice}") == f"[redacted] {voice}"
