"""Credentials in log records (provider messages echo them) are redacted before any handler
formats them: plain formatters, livekit's JSON formatter, messages and tracebacks alike."""

from __future__ import annotations

import io
import json
import logging

import pytest
from livekit.agents import APIStatusError
from livekit.agents.cli.log import JsonFormatter

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
