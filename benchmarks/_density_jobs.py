"""Density, one process per session, run the way livekit-agents runs jobs.

The worker is the project's own (`agent.worker.define_voice_agent`: its `setup` loads Silero
per job process) with the entrypoint swapped for `entrypoint` below, started without a LiveKit
server (`AgentServer.run(unregistered=True)`, as livekit's console mode does). K fake jobs are
dispatched with `simulate_job`: livekit's process pool forks each job process from its
forkserver (framework and plugins preloaded there and shared copy-on-write), sends the job over
IPC and supervises it (pings, memory watch, log forwarding) as in production.

Each job builds its session, reports ready, waits for a common start time, plays the clip and
writes its measurements (CPU time, RSS / PSS, loop and frame lag, turn latencies) to
$DENSITY_DIR/result-<i>.json before shutting itself down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
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
    read_clip,
    save_clip,
    stagger,
)

ENV_DIR = "DENSITY_DIR"
ENV_K = "DENSITY_K"
ENV_SPREAD = "DENSITY_SPREAD"
ENV_STACK = "DENSITY_STACK"


# -- in the job process -----------------------------------------------------------------------


async def entrypoint(ctx: Any) -> None:
    """The job: one measured session (room-less; the fake job's room is a mock)."""
    out = Path(os.environ[ENV_DIR])
    k, spread = int(os.environ[ENV_K]), float(os.environ[ENV_SPREAD])
    index = int(ctx.job.room.name.rsplit("-", 1)[1])  # the mock room keeps its own name
    settings = density_settings()
    clip = await asyncio.to_thread(read_clip, out)
    session = DensitySession(index, ctx.proc.userdata["vad"], settings, clip, stack=os.environ[ENV_STACK])
    lag = LoopLag()
    result: dict[str, Any] = {"index": index, "pid": os.getpid()}
    try:
        await session.start()
        lag.start()
        (out / f"ready-{index}").touch()
        go_at = await _go_time(out / "go")
        await asyncio.sleep(max(0.0, go_at + stagger(index, k, spread) - time.time()))
        cpu0, loop0, t0 = cpu_seconds(), loop_thread_cpu_seconds(), time.perf_counter()
        await session.play()
        result["wall_s"] = time.perf_counter() - t0
        result["cpu_s"] = cpu_seconds() - cpu0
        result["loop_cpu_s"] = loop_thread_cpu_seconds() - loop0
        result["memory"] = memory_mb()
        await lag.stop()
        r = session.result()
        result["frame_lag_ms"] = r.frame_lag_ms
        result["session"] = r.summary()
        result["loop_lag_ms"] = lag.lag_ms
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await lag.stop()
        tmp = out / f".result-{index}.tmp"
        tmp.write_text(json.dumps(result))
        tmp.rename(out / f"result-{index}.json")
        await session.aclose()
        ctx.shutdown("density run finished")


def _read_go(go: Path) -> float | None:
    return float(go.read_text()) if go.exists() else None


async def _go_time(go: Path) -> float:
    """The common start time, once the parent has written it (a file: the jobs are processes)."""
    while (at := _read_go(go)) is None:  # noqa: ASYNC110 - another process writes it
        await asyncio.sleep(0.02)
    return at


# -- in the worker process --------------------------------------------------------------------


def _forkserver_pid() -> int | None:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)  # type: ignore[attr-defined]


def _count(out: Path, prefix: str) -> int:
    return sum(1 for p in out.iterdir() if p.name.startswith(prefix))


def _empty_dir(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():
        p.unlink()


async def _wait_files(out: Path, prefix: str, k: int, within: float) -> None:
    """Wait until `k` jobs wrote `prefix`* files (the jobs are other processes: polled)."""
    deadline = time.monotonic() + within
    while (have := _count(out, prefix)) < k:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {have} of {k} jobs wrote {prefix}*")
        await asyncio.sleep(0.1)


async def _warm_processes(server: Any, k: int, within: float) -> None:
    """Wait until the pool has `k` initialised job processes (livekit internals: a benchmark).

    Dispatching K jobs at once into a cold pool makes the set-up of the first jobs compete
    with the initialisation of the rest, which then overruns livekit's 10 s limit and retries;
    in production the pool keeps idle processes warm ahead of demand, as here.
    """
    deadline = time.monotonic() + within
    while server._proc_pool._warmed_proc_queue.qsize() < k:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {server._proc_pool._warmed_proc_queue.qsize()} of {k} job processes warmed up")
        await asyncio.sleep(0.2)


async def run_jobs(
    k: int, out: Path, *, spread: float = 2.0, stack: str = "ours", input_rate: int = 24_000
) -> dict[str, Any]:
    from agent.worker import define_voice_agent

    _empty_dir(out)
    clip = load_clip(input_rate)
    save_clip(clip, out)
    # job processes inherit these through the forkserver, which starts below
    os.environ.update({ENV_DIR: str(out), ENV_K: str(k), ENV_SPREAD: str(spread), ENV_STACK: stack})
    settings = density_settings().model_copy(update={"idle_processes": k, "http_port": 0, "http_host": "127.0.0.1"})
    server = define_voice_agent(settings)
    # same worker, same setup (Silero per job process); only the job itself is the benchmark's
    server._entrypoint_fnc = None
    server.rtc_session(entrypoint, agent_name=settings.name)

    started = asyncio.Event()
    server.on("worker_started", lambda *_: started.set())
    runner = asyncio.create_task(server.run(devmode=False, unregistered=True))
    t_setup = time.perf_counter()
    try:
        await asyncio.wait_for(started.wait(), 120)
        await _warm_processes(server, k, 30 + 2 * k)
        warm_s = time.perf_counter() - t_setup
        for i in range(k):
            await server.simulate_job(f"density-{i}", fake_job=True)
        # the pool would now warm K more idle processes next to the K running jobs (its target
        # is num_idle_processes = K): a one-off burst of process set-up that is not session work
        server._proc_pool.set_target_idle_processes(0)
        await _wait_files(out, "ready-", k, 60 + 2 * k)
        setup_s = time.perf_counter() - t_setup
        clip_s = clip.duration
        go_at = time.time() + 1.0
        tmp = out / ".go.tmp"
        tmp.write_text(repr(go_at))
        tmp.rename(out / "go")  # atomic: a job never reads a half-written file
        parent_cpu0 = cpu_seconds()
        await asyncio.sleep(1.0 + spread / 2 + clip_s / 2)
        forkserver = _forkserver_pid()
        fs_mem = memory_mb(forkserver) if forkserver else None
        worker_mem = memory_mb()
        await _wait_files(out, "result-", k, clip_s + spread + 60)
        parent_cpu = cpu_seconds() - parent_cpu0
        wall = time.time() - go_at
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.aclose(), 30)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    jobs = [json.loads((out / f"result-{i}.json").read_text()) for i in range(k)]
    errors = [j["error"] for j in jobs if j.get("error")]
    ok = [j for j in jobs if not j.get("error")]
    session_s = sum(j["wall_s"] for j in ok)
    job_cpu = sum(j["cpu_s"] for j in ok)
    loop = [x for j in ok for x in j["loop_lag_ms"]]
    return {
        "mode": "jobs",
        "stack": stack,
        "vad": settings.turn.vad_engine,
        "input_rate": input_rate,
        "k": k,
        "warm_s": warm_s,
        "start_method": getattr(server, "_mp_ctx_str", None),
        "setup_s": setup_s,
        "wall_s": wall,
        "errors": errors,
        "cpu_s": job_cpu,
        "session_s": session_s,
        "cpu_pct_per_session": 100 * job_cpu / session_s if session_s else None,
        "loop_cpu_pct_per_session": 100 * sum(j["loop_cpu_s"] for j in ok) / session_s if session_s else None,
        "worker_cpu_pct_per_session": 100 * parent_cpu / session_s if session_s else None,
        "job_memory": [j["memory"] for j in ok],
        "forkserver_memory": fs_mem,
        "worker_memory": worker_mem,
        "loop_lag_p50_ms": pct(loop, 50),
        "loop_lag_p99_ms": pct(loop, 99),
        "loop_lag_max_ms": max(loop, default=None),
        "sessions": [j["session"] for j in ok],
        "frame_lag_ms": [x for j in ok for x in j["frame_lag_ms"]],
    }
