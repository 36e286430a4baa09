"""Soak: 100 simulated sessions in this process, 8 at a time; nothing may leak.

Each session is the worker's per-job set-up without a room (own brain, `VoiceSession`, bridge
on a `MemoryTransport`, simulated speaker, a paced microphone that opens in turn 2, stub STT /
TTS, the process's Silero VAD), driven through the bridge and the microphone: a `book_table` call approved
with `hitl.respond`, a reply cut off by real speech played into the microphone (livekit's VAD
interruption), that speech answered as a turn of its own, then an `agent.interrupt` acknowledged.
The session code is `benchmarks/soak.py`, which runs the full 1,000-session soak and records the
memory curve (RELIABILITY.md).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from soak import (  # noqa: E402
    BOOK,
    CHAT,
    CONCURRENCY,
    SPOKEN,
    Resources,
    run_session,
    run_soak,
    soak_settings,
)

from agent.allocator import pin_mmap_threshold  # noqa: E402
from agent.worker import load_vad  # noqa: E402

SESSIONS = 100  # about 45 s: from turn 2 on, each session's audio runs through two Silero streams


def _fd_targets() -> list[str]:
    """What this process's descriptors point at (for the failure message)."""
    out = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            out.append(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return out


@pytest.fixture(scope="module")
def vad():
    pin_mmap_threshold()  # as the worker's setup does in each job process
    return load_vad(soak_settings())


async def test_one_session_approves_a_tool_and_is_interrupted_by_speech(vad) -> None:
    report = await run_session(0, vad, soak_settings())
    assert report.approval_ack and report.tool_ok
    # the bridge saw the approved turn complete, the second one cut off by the spoken barge-in,
    # and the barge-in answered as a turn of its own
    assert report.turn_reasons == ["completed", "interrupted", "completed"]
    assert report.outcomes == ["completed", "interrupted", "completed"]
    assert report.user_texts == [BOOK, CHAT, SPOKEN]
    assert report.played_cut  # the reply's audio stopped part-way
    assert report.answer_played  # the answer to the barge-in played to the end
    assert report.interrupt_ack  # a client interrupt with nothing playing is acknowledged
    assert report.seqs_ok  # envelopes numbered 1..n without gaps
    assert report.ok


async def test_soak_leaks_nothing(vad, caplog: pytest.LogCaptureFixture) -> None:
    before = Resources.sample()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        result = await run_soak(SESSIONS, concurrency=CONCURRENCY, every=25, vad=vad, settings=soak_settings())
        gc.collect()  # a task dropped while still pending is reported when it is collected
    dropped = [r.getMessage()[:160] for r in caplog.records if "Task was destroyed but it is pending" in r.getMessage()]
    assert not dropped, dropped[:3]

    assert len(result.reports) == SESSIONS
    assert not result.failures, result.failures[:3]

    # every session's objects were freed (nothing holds on to a finished session)
    assert not any(result.live.values()), result.live

    base, final = result.baseline, result.final
    # baseline: after one warm-up batch (imports, caches, executor threads exist by then)
    assert final.tasks <= base.tasks, (base, final)
    # descriptors: none per session (a leak of one per session would be 100 here). The suite's
    # earlier tests leave background work that may open one of its own meanwhile (seen once in
    # CI: 34 -> 35 with every session's objects freed), so a handful is not a session leak.
    assert final.fds - base.fds < SESSIONS // 20, (base, final, _fd_targets())
    # threads: none beyond the loop's default executor, a pool bounded and reused (a plain tool's
    # thread ends with its call, so none is left once the sessions are over)
    assert final.threads - final.pool_threads <= base.threads - base.pool_threads, (base, final)
    assert final.pool_threads <= min(32, (os.cpu_count() or 1) + 4), final
    assert final.tasks <= before.tasks and final.fds - before.fds < SESSIONS // 20

    # Python objects do not pile up (the benchmark's own reports aside)
    assert final.py_blocks <= base.py_blocks * 1.02, (base, final)
    # resident memory stays flat: with the worker's allocator setting each VAD speech buffer
    # (TURN_VAD_MAX_BUFFERED_SPEECH, 9 MiB per VAD stream) goes back to the
    # system when its session ends; without it RSS climbed by about CONCURRENCY sessions'
    # buffers (RELIABILITY.md, "Soak"), about 9 MB per 50 sessions here. (The first ~50
    # sessions still fill caches: the curve is compared from session 50 on.)
    curve = [(s.sessions, round(s.resources.rss_mb, 1)) for s in result.samples]
    assert final.rss_mb <= result.rss_at(SESSIONS // 2) * 1.02, curve
