"""Soak: 200 simulated sessions in this process, 20 at a time; nothing may leak.

Each session is the worker's per-job set-up without a room (own brain, `VoiceSession`, bridge
on a `MemoryTransport`, simulated speaker, stub STT / TTS, the process's Silero VAD), driven
through the bridge: a `book_table` call approved with `hitl.respond`, then a reply interrupted
with `agent.interrupt` while it plays. The session code is `benchmarks/soak.py`, which runs the
full 1,000-session soak and records the memory curve (RELIABILITY.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from soak import Resources, run_session, run_soak, soak_settings  # noqa: E402

from agent.worker import load_vad  # noqa: E402

SESSIONS = 200
CONCURRENCY = 20


@pytest.fixture(scope="module")
def vad():
    return load_vad(soak_settings())


async def test_one_session_approves_a_tool_and_is_interrupted(vad) -> None:
    report = await run_session(0, vad, soak_settings())
    assert report.approval_ack and report.tool_ok
    assert report.interrupt_ack
    # the bridge saw the approved turn complete and the second one cut off by the barge-in
    assert report.turn_reasons == ["completed", "interrupted"]
    assert report.outcomes == ["completed", "interrupted"]
    assert report.played_cut  # the reply's audio stopped part-way
    assert report.seqs_ok  # envelopes numbered 1..n without gaps


async def test_soak_leaks_nothing(vad) -> None:
    before = Resources.sample()
    result = await run_soak(SESSIONS, concurrency=CONCURRENCY, every=50, vad=vad, settings=soak_settings())

    assert len(result.reports) == SESSIONS
    assert not result.failures, result.failures[:3]

    # every session's objects were freed (nothing holds on to a finished session)
    assert not any(result.live.values()), result.live

    base, final = result.baseline, result.final
    # baseline: after one warm-up batch (imports, caches, executor threads exist by then)
    assert final.tasks <= base.tasks, (base, final)
    assert final.fds <= base.fds, (base, final)
    # threads: none beyond the loop's default executor, whose pool is bounded and reused
    assert final.threads - final.pool_threads <= base.threads - base.pool_threads, (base, final)
    assert final.pool_threads <= min(32, (os.cpu_count() or 1) + 4), final
    assert final.tasks <= before.tasks and final.fds <= before.fds

    # resident memory levels off: the last 100 sessions add at most 5 %
    r100 = result.rss_at(100)
    assert final.rss_mb <= r100 * 1.05, [(s.sessions, round(s.resources.rss_mb, 1)) for s in result.samples]
