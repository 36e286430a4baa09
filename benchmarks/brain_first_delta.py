"""Time to first delta: `VoiceBrain.stream_reply` vs the raw `openai` SDK stream.

Both talk to the same local fake OpenAI server (tests/fakes/openai_server.py), which runs in its
own process so it does not share the measured event loop. Each turn sends the same request
(system prompt + one user message, the same tool list) and reads the whole reply; only the time
from starting the call to the first non-empty text delta is recorded. A and B are interleaved
(ABBA ...) to cancel drift on a shared machine.

    .venv/bin/python benchmarks/brain_first_delta.py            # 300 turns each
    .venv/bin/python benchmarks/brain_first_delta.py --turns 50 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from brain import BrainConfig, ModelRequest, TextChunk, Turn, VoiceBrain, create_voice_brain  # noqa: E402
from brain.backends.openai_chat import to_openai_messages  # noqa: E402
from brain.memory import Message  # noqa: E402

USER_TEXT = "What's the weather like in Paris today?"


async def start_server() -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.serve", "openai", cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    return proc, line.decode().strip()


async def brain_first_delta(brain: VoiceBrain, conversation_id: str) -> float:
    first = -1.0
    t0 = time.perf_counter()
    async with contextlib.aclosing(brain.stream_reply(Turn(USER_TEXT, conversation_id))) as deltas:
        async for _ in deltas:  # read the whole reply (keeps the connection reusable), time the first
            if first < 0:
                first = time.perf_counter() - t0
    return first


async def raw_first_delta(client: openai.AsyncOpenAI, model: str, system: str, tools: list[dict[str, Any]]) -> float:
    first = -1.0
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": to_openai_messages(system, [Message("user", USER_TEXT)]),
        "stream": True,
    }
    if tools:
        kwargs["tools"] = tools
    stream = await client.chat.completions.create(**kwargs)
    async with stream:
        async for chunk in stream:
            if first < 0 and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t0
    return first


class InstantBackend:
    """A model that answers at once, in-process: what remains is the brain's own cost."""

    name = "instant"

    async def stream(self, request: ModelRequest) -> Any:
        yield TextChunk("Hello")
        yield TextChunk(" there.")

    async def aclose(self) -> None:
        return None


async def in_process_overhead(config: BrainConfig, turns: int) -> dict[str, float]:
    """Median µs to the first delta with an instant backend: bare backend vs brain (fresh / full memory)."""
    backend = InstantBackend()
    brain = create_voice_brain(config, backend=backend)
    request = ModelRequest([Message("user", USER_TEXT)], config.system_prompt, "m", list(brain.tools))

    async def bare() -> float:
        t0 = time.perf_counter()
        async with contextlib.aclosing(backend.stream(request)) as s:
            async for _ in s:
                dt = time.perf_counter() - t0
                break
        return dt

    for _ in range(config.memory_turns):  # fill one conversation's memory
        await brain_first_delta(brain, "full")
    bare_t: list[float] = []
    fresh_t: list[float] = []
    full_t: list[float] = []
    for i in range(turns):
        bare_t.append(await bare())
        fresh_t.append(await brain_first_delta(brain, f"fresh-{i}"))  # history: one message
        full_t.append(await brain_first_delta(brain, "full"))  # history: memory_turns turns

    def median_us(xs: list[float]) -> float:
        return statistics.median(xs) * 1e6

    return {
        "bare_backend_us": median_us(bare_t),
        "brain_fresh_us": median_us(fresh_t),
        "brain_full_memory_us": median_us(full_t),
    }



def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "median_ms": statistics.median(ms),
        "p90_ms": pct(ms, 0.9),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
    }


async def run(turns: int, warmup: int, with_tools: bool) -> dict[str, Any]:
    proc, base_url = await start_server()
    try:
        fields: dict[str, Any] = {
                "_env_file": None,
                "backend": "openai",
                "model": "gpt-fake",
                "openai_api_key": "sk-bench",
                "openai_base_url": base_url,
                "tools": ["brain.example_tools"] if with_tools else [],
        }
        config = BrainConfig(**fields)
        brain = create_voice_brain(config)
        raw = openai.AsyncOpenAI(
            api_key="sk-bench", base_url=base_url, timeout=config.request_timeout, max_retries=config.max_retries
        )
        tools = [t.openai_schema() for t in brain.tools]
        model, system = config.effective_model, config.system_prompt

        async def a(i: int) -> float:
            # a fresh conversation per turn: the request is the same as the raw SDK's
            return await brain_first_delta(brain, f"bench-{i}")

        async def b(i: int) -> float:
            return await raw_first_delta(raw, model, system, tools)

        for i in range(warmup):
            await a(-1 - i)
            await b(i)
        brain_t: list[float] = []
        raw_t: list[float] = []
        for i in range(turns):
            if i % 2 == 0:  # ABBA: alternate who goes first
                brain_t.append(await a(i))
                raw_t.append(await b(i))
            else:
                raw_t.append(await b(i))
                brain_t.append(await a(i))
        assert min(brain_t) > 0 and min(raw_t) > 0, "a turn produced no delta"
        await brain.aclose()
        await raw.close()
        overhead = await in_process_overhead(config, turns)
    finally:
        proc.terminate()
        await proc.wait()
    diffs = [(x - y) * 1000 for x, y in zip(brain_t, raw_t, strict=True)]
    sb, sr = summary(brain_t), summary(raw_t)
    return {
        "turns": turns,
        "tools": with_tools,
        "brain": sb,
        "raw_sdk": sr,
        "median_difference_ms": sb["median_ms"] - sr["median_ms"],
        "median_paired_difference_ms": statistics.median(diffs),
        "ratio_of_medians": sb["median_ms"] / sr["median_ms"],
        "in_process": overhead,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "openai": openai.__version__,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--no-tools", action="store_true", help="send no tool declarations (both sides)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.turns, args.warmup, not args.no_tools))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"time to first delta, {result['turns']} turns each, tools={result['tools']}, machine={result['machine']}")
    print(f"{'':10} {'median':>8} {'p90':>8} {'mean':>8} {'min':>8}   (ms)")
    for name in ("brain", "raw_sdk"):
        s = result[name]
        print(f"{name:10} {s['median_ms']:8.3f} {s['p90_ms']:8.3f} {s['mean_ms']:8.3f} {s['min_ms']:8.3f}")
    print(
        f"brain - raw: median {result['median_difference_ms']:+.3f} ms, "
        f"median of paired differences {result['median_paired_difference_ms']:+.3f} ms, "
        f"ratio of medians {result['ratio_of_medians']:.3f}"
    )
    o = result["in_process"]
    print(
        f"in-process, instant backend (median to first delta): bare backend {o['bare_backend_us']:.1f} us, "
        f"brain fresh conversation {o['brain_fresh_us']:.1f} us, brain with full memory {o['brain_full_memory_us']:.1f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
