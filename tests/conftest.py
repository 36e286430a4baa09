"""Suite-wide guards."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_frozen_heap() -> Iterator[None]:
    """`VoiceWorker.setup` freezes the heap (right for a job process, wrong for the test run):
    frozen objects are never collected and are invisible to `gc.get_objects()`, which the soak's
    leak check relies on. Thaw after every test."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
