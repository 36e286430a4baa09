"""Density, all K sessions in one process (one event loop, one Silero VAD shared)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _density_session import (
    DensitySession,
    LoopLag,
    cpu_seconds,
    density_settings,
    load_clip,
    loop_thread_cpu_seconds,
    memory_mb,
    pct,
    stagger,
)


async def run_inproc(
    k: int, *, spread: float = 2.0, stack: str = "ours", input_rate: int = 24_000
) -> dict[str, Any]:
    from agent.worker import load_vad

    settings = density_settings()
    clip = load_clip(input_rate)
    vad = load_vad(settings)  # as the worker's setup does
    idle = memory_mb()
    sessions = [DensitySession(i, vad, settings, clip, stack=stack) for i in range(k)]
    await asyncio.gather(*(s.start() for s in sessions))
    lag = LoopLag()
    lag.start()
    await asyncio.sleep(0.5)
    played: list[float] = []

    async def play(s: DensitySession) -> None:
        await asyncio.sleep(stagger(s.index, k, spread))
        t = time.perf_counter()
        await s.play()
        played.append(time.perf_counter() - t)

    cpu0, loop0, t0 = cpu_seconds(), loop_thread_cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(play(s) for s in sessions))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    loop_cpu = loop_thread_cpu_seconds() - loop0
    active = memory_mb()
    await lag.stop()
    results = [s.result() for s in sessions]
    await asyncio.gather(*(s.aclose() for s in sessions))
    return {
        "mode": "inproc",
        "stack": stack,
        "vad": settings.turn.vad_engine,
        "input_rate": input_rate,
        "k": k,
        "clip_s": clip.duration,
        "wall_s": wall,
        "cpu_s": cpu,
        "session_s": sum(played),
        "cpu_pct_per_session": 100 * cpu / sum(played),
        "loop_cpu_pct_per_session": 100 * loop_cpu / sum(played),
        "process_cpu_pct": 100 * cpu / wall,
        "memory_idle": idle,
        "memory_active": active,
        "loop_lag_p50_ms": pct(lag.lag_ms, 50),
        "loop_lag_p99_ms": pct(lag.lag_ms, 99),
        "loop_lag_max_ms": max(lag.lag_ms, default=None),
        "sessions": [r.summary() for r in results],
        "frame_lag_ms": [x for r in results for x in r.frame_lag_ms],
    }
