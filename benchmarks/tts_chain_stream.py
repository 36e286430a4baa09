"""A TTS chain led by a streaming provider: does sentence-by-sentence failover cost the primary
its streaming? Side by side in one run, on the real livekit-plugins-deepgram TTS against the
fake Deepgram `/v1/speak` server of the tests (127.0.0.1; each piece of audio starts after
`--first-byte` seconds and is sent at `--speedup` times real time; the fake speaks each sentence
as soon as it is complete, as a streaming server does):

  single   `TTS_PROVIDERS=deepgram`: the plugin's own stream, the whole reply in one request
  livekit  livekit's `tts.FallbackAdapter([deepgram, local])` (what chains were before)
  chain    `StreamingSentenceFallbackTTS([deepgram, local])` (this project: one request per
           sentence, each sentence's words streamed to the provider as they arrive)

The reply's words are pushed as a model streams them (`--wps` words per second). Per reply:
first audio after the first sentence's last word; playback stalls (a player that starts at the
first audio and plays in real time, waiting whenever the next audio is not there yet); the last
audio after the last word. Then the same with the primary failing a third of the way into the
second sentence: how much of the reply is heard.

    .venv/bin/python benchmarks/tts_chain_stream.py            # ~1 min
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from livekit.agents import tts
from livekit.agents.utils import http_context

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from providers import LocalTTS, SpeechSettings, create_tts  # noqa: E402
from providers.tts_chains import StreamingSentenceFallbackTTS  # noqa: E402
from tests.fakes.deepgram_speak_server import FakeDeepgramSpeak, tone_seconds  # noqa: E402

REPLY = [
    "It is sunny in Paris today, with a light breeze from the west.",
    "The afternoon should stay dry and warm, around twenty two degrees.",
    "If you go out this evening, take a jacket, because it cools down quickly.",
    "Tomorrow looks much the same, with a few clouds in the morning.",
]


PER_CHAR = 0.065
"""Seconds of the fake's audio per character: about the pace of speech."""


@dataclass
class Run:
    first_audio: float  # after the first sentence's last word
    stalls: float  # seconds a real-time player waited after it started
    last_audio: float  # after the last word
    heard: float  # seconds of audio


async def one_reply(engine: tts.TTS, wps: float) -> Run:
    words = " ".join(REPLY).split(" ")
    first_sentence_words = len(REPLY[0].split(" "))
    arrivals: list[tuple[float, float]] = []  # (time, seconds of audio)
    pushed: dict[str, float] = {}

    async with engine.stream() as stream:

        async def speak() -> None:
            for i, word in enumerate(words):
                stream.push_text((" " if i else "") + word)  # as models stream: " word"
                if i + 1 == first_sentence_words:
                    pushed["first"] = time.perf_counter()
                await asyncio.sleep(1 / wps)
            pushed["last"] = time.perf_counter()
            stream.end_input()

        writer = asyncio.create_task(speak())
        async for ev in stream:
            arrivals.append((time.perf_counter(), ev.frame.duration))
        await writer
    start = arrivals[0][0]
    played, stalls = 0.0, 0.0
    for at, seconds in arrivals:
        needed = start + played + stalls
        stalls += max(0.0, at - needed)
        played += seconds
    return Run(start - pushed["first"], stalls, arrivals[-1][0] - pushed["last"], played)


def _deepgram(fake: FakeDeepgramSpeak) -> tts.TTS:
    return create_tts(
        SpeechSettings(
            _env_file=None,  # type: ignore[call-arg]
            TTS_PROVIDERS="deepgram",
            DEEPGRAM_API_KEY="dg-bench",
            DEEPGRAM_TTS_BASE_URL=fake.base_url,
        )
    )


CONFIGS: dict[str, Callable[[FakeDeepgramSpeak], tts.TTS]] = {
    "single": _deepgram,
    "livekit": lambda fake: tts.FallbackAdapter([_deepgram(fake), LocalTTS()], max_retry_per_tts=0),
    "chain": lambda fake: StreamingSentenceFallbackTTS([_deepgram(fake), LocalTTS()]),
}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--first-byte", type=float, default=0.15)
    p.add_argument("--speedup", type=float, default=4.0)
    p.add_argument("--wps", type=float, default=8.0, help="words per second from the model (default 8)")
    args = p.parse_args()

    fake = FakeDeepgramSpeak(
        first_byte_delay=args.first_byte, speedup=args.speedup, auto_sentences=True, seconds_per_char=PER_CHAR
    )
    await fake.start()
    runs: dict[str, list[Run]] = {name: [] for name in CONFIGS}
    failed: dict[str, Run] = {}
    async with http_context.open():
        engines = {name: make(fake) for name, make in CONFIGS.items()}
        try:
            for engine in engines.values():  # warm-up: connections, espeak
                await one_reply(engine, 1000.0)
            for _ in range(args.runs):  # interleaved: the same machine noise for each
                for name, engine in engines.items():
                    runs[name].append(await one_reply(engine, args.wps))
            for name in ("livekit", "chain"):
                engine = CONFIGS[name](fake)  # fresh: nothing marked unavailable yet
                fake.auto_sentences = False  # so that a flush is a sentence, and the fault hits the 2nd
                fake.faults[:] = ["ok", "drop"] if name == "chain" else ["drop"]
                try:
                    failed[name] = await one_reply(engine, args.wps)
                finally:
                    await engine.aclose()
                fake.faults.clear()
                fake.auto_sentences = True
        finally:
            for engine in engines.values():
                await engine.aclose()
    await fake.aclose()

    def med(name: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs[name])

    print(f"\n{args.runs} replies each, {len(REPLY)} sentences, {args.wps:g} words/s, first byte "
          f"{args.first_byte * 1000:.0f} ms, audio at {args.speedup:g}x real time\n")
    print("| | first audio after the 1st sentence's last word | playback stalls | last audio after the last word | audio |")
    print("|---|---|---|---|---|")
    for name in CONFIGS:
        print(f"| {name} | {med(name, 'first_audio') * 1000:.0f} ms | {med(name, 'stalls') * 1000:.0f} ms "
              f"| {med(name, 'last_audio') * 1000:.0f} ms | {med(name, 'heard'):.2f} s |")
    ratio = med("chain", "first_audio") / med("single", "first_audio")
    print(f"\nchain / single, first audio: {ratio:.2f}x")
    local = [(await LocalTTS().synthesize(s).collect()).duration for s in REPLY]
    whole = tone_seconds(REPLY[0], PER_CHAR) + tone_seconds(REPLY[1], PER_CHAR) / 3 + sum(local[1:])
    print("\nprimary fails a third of the way into the second sentence (the rest is the local voice's):\n")
    print("| | audio heard | the whole reply would be |")
    print("|---|---|---|")
    for name, run in failed.items():
        print(f"| {name} | {run.heard:.2f} s | {whole:.2f} s |")


if __name__ == "__main__":
    asyncio.run(main())
