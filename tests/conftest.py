"""Suite-wide guards."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator

import pytest

from tests.fakes.brain_kits import brain_env, kit  # noqa: F401 - fixtures of the brain's test modules


@pytest.fixture(autouse=True)
def _no_frozen_heap() -> Iterator[None]:
    """`VoiceWorker.setup` freezes the heap (right for a job process, wrong for the test run):
    frozen objects are never collected and are invisible to `gc.get_objects()`, which the soak's
    leak check relies on. Thaw after every test."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()


@pytest.fixture(autouse=True)
def _default_log_records() -> Iterator[None]:
    """`VoiceWorker.setup` and the CLI install the redacting log-record factory process-wide
    (right for a worker, not for the test run): put the previous one back after every test."""
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


PROCESS_ENV = (
    "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE",  # agent.worker.PRELOAD_LOCAL_INFERENCE, set by define_voice_agent
    "SSL_CERT_FILE",  # pointed at a fake server's certificate by the realtime rigs
)
"""Environment variables the code under test (or a rig) sets process-wide."""


@pytest.fixture(autouse=True)
def _process_env() -> Iterator[None]:
    """`define_voice_agent` sets LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE for the forkserver it
    starts (right for a worker, a leak into every later test here): put each of `PROCESS_ENV`
    back as it was before the test."""
    saved = {name: os.environ.get(name) for name in PROCESS_ENV}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def redacted_logs() -> None:
    """The agent's log redaction, as the CLI and the worker install it (undone after the test)."""
    from agent.log_redaction import install

    install()
