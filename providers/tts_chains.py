"""TTS fallback chains whose unit of failover is the sentence, each provider under
`FALLBACK_ATTEMPT_TIMEOUT` (see `providers.chains` for why livekit's own adapter is not enough).

- `SentenceFallbackTTS`: a chain led by a TTS that cannot stream (openai, azure, hume): each
  provider must produce each sentence's audio without a wait longer than the attempt timeout,
  and a sentence a provider fails (before or after its first audio) is said again, whole, by
  the next one.
- `StreamingSentenceFallbackTTS`: a chain led by a streaming TTS (elevenlabs, cartesia,
  deepgram), the same sentence by sentence, each sentence's text streamed to the provider as
  it arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from livekit import rtc
from livekit.agents import APIConnectionError, APITimeoutError, tts, utils
from livekit.agents.tts.fallback_adapter import (
    DEFAULT_FALLBACK_API_CONNECT_OPTIONS,
    FallbackChunkedStream,
    FallbackSynthesizeStream,
)
from livekit.agents.types import (
    USERDATA_TIMED_TRANSCRIPT,
    USERDATA_TTS_STARTED_TIME,
    APIConnectOptions,
)

from .chains import _ClosesMembers, attempts_seconds
from .provider_errors import provider_name
from .sentence_script import SentenceScript

log = logging.getLogger("providers.chains")

_AHEAD = 2
"""Sentences one provider is given at once: the next one streams in while the current one plays."""


class SentenceChainTTS(_ClosesMembers, tts.FallbackAdapter):
    """What both TTS chains share: providers tried in order per sentence, each under
    `attempt_timeout`, and `synthesize()` of a whole text as one sentence."""

    def __init__(
        self,
        instances: list[tts.TTS],
        *,
        attempt_timeout: float = 10.0,
        max_retry_per_tts: int = 0,
        retry_interval: float = 0.5,
    ) -> None:
        super().__init__(instances, max_retry_per_tts=max_retry_per_tts)
        self.attempt_timeout = attempt_timeout
        self.retry_interval = retry_interval

    def time_budget(self, audio_seconds: float = 0.0) -> float:
        """Seconds the chain may wait for a sentence's (next) audio before every provider had
        its chance (at most)."""
        return attempts_seconds(
            len(self._tts_instances), self._max_retry_per_tts, self.attempt_timeout, self.retry_interval
        )

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_FALLBACK_API_CONNECT_OPTIONS
    ) -> FallbackChunkedStream:
        return _SentenceStream(tts=self, input_text=text, conn_options=conn_options)


class SentenceFallbackTTS(SentenceChainTTS):
    """A TTS fallback chain whose unit of failover is the sentence.

    livekit's adapter streams the whole reply to one provider and hands it to the next only if
    the failed one had produced no audio yet: once the primary has said its first sentence, its
    failure drops the rest of the reply, without an error. This chain reports itself as
    non-streaming, so the session gives it one sentence at a time (through livekit's
    `StreamAdapter`); each sentence goes to the providers in order until one has said it whole.
    A provider that fails, or leaves a wait for its (first or next) audio longer than
    `attempt_timeout`, is marked unavailable (and probed in the background, as livekit does),
    and the next one says the whole sentence, again from its start if the failed one had begun.

    For a primary that cannot stream this costs nothing: livekit's adapter sends it one sentence
    at a time too.
    """

    def __init__(
        self,
        instances: list[tts.TTS],
        *,
        attempt_timeout: float = 10.0,
        max_retry_per_tts: int = 0,
        retry_interval: float = 0.5,
    ) -> None:
        super().__init__(
            instances, attempt_timeout=attempt_timeout, max_retry_per_tts=max_retry_per_tts, retry_interval=retry_interval
        )
        self._capabilities = dataclasses.replace(self._capabilities, streaming=False)
        self._sentences = tts.StreamAdapter(tts=self)

    def stream(  # type: ignore[override]
        self, *, conn_options: APIConnectOptions = DEFAULT_FALLBACK_API_CONNECT_OPTIONS
    ) -> tts.SynthesizeStream:
        """For callers that stream text themselves: split into sentences, each one `synthesize`d."""
        return self._sentences.stream(conn_options=conn_options)

    async def aclose(self) -> None:
        await self._sentences.aclose()
        await super().aclose()


class _SentenceStream(FallbackChunkedStream):
    """One sentence (or a whole text given to `synthesize`), through a chain's providers in order."""

    _fallback_adapter: SentenceChainTTS

    async def _try_synthesize(
        self, *, tts: tts.TTS, recovering: bool = False
    ) -> AsyncGenerator[tts.SynthesizedAudio, None]:
        """`tts`'s audio for the sentence; a wait for audio longer than the attempt timeout is a
        stall, reported on `tts` as a timeout. (livekit's recovery probes call this too.)"""
        chain = self._fallback_adapter
        limit = chain.attempt_timeout
        options = dataclasses.replace(
            self._conn_options,
            max_retry=chain._max_retry_per_tts,
            timeout=limit,
            retry_interval=chain.retry_interval,
        )
        async with tts.synthesize(self._input_text, conn_options=options) as stream:
            frames = aiter(stream)
            while True:
                try:
                    async with asyncio.timeout(limit):
                        audio = await anext(frames)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    error = APITimeoutError(f"no audio within {limit:g} s")
                    # the plugin did not fail, it was cut off: its error listeners hear why
                    tts.emit("error", _tts_error(tts, error))
                    raise error from None
                if not recovering:
                    chain._active_instance = tts
                yield audio

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        chain = self._fallback_adapter
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=chain.sample_rate,
            num_channels=chain.num_channels,
            mime_type="audio/pcm",
        )
        everyone_down = not any(status.available for status in chain._status)
        for member, status in zip(chain._tts_instances, chain._status, strict=True):
            if status.available or everyone_down:
                said = 0.0
                to_rate = _ToRate(chain.sample_rate)
                try:
                    async for audio in self._try_synthesize(tts=member):
                        if texts := audio.frame.userdata.get(USERDATA_TIMED_TRANSCRIPT):
                            output_emitter.push_timed_transcript(texts)
                        for frame in to_rate.push(audio.frame):
                            output_emitter.push_frame(frame)
                        said += audio.frame.duration
                    for frame in to_rate.flush():
                        output_emitter.push_frame(frame)
                    return
                except Exception as e:  # noqa: BLE001 - any failure moves on to the next provider
                    if status.available:
                        status.available = False
                        chain.emit("tts_availability_changed", tts.AvailabilityChangedEvent(tts=member, available=False))
                    again = f" after {said:.1f} s of its audio (the next one says it again, whole)" if said else ""
                    log.warning("%s failed on a sentence%s: %s", provider_name(member), again, e)
            self._try_recovery(member)
        names = ",".join(provider_name(m) for m in chain._tts_instances)
        raise APIConnectionError(f"every TTS of the chain failed ({names})")


class StreamingSentenceFallbackTTS(SentenceChainTTS):
    """A TTS fallback chain led by a streaming provider (elevenlabs, cartesia, deepgram, ...)
    whose unit of failover is the sentence, without costing the primary its streaming.

    livekit's adapter streams the whole reply to one provider: once it has spoken, its failure
    drops the rest of the reply, and a provider that stalls is waited for until its own read
    timeout. Here the reply text still streams to the provider as it arrives, but one sentence
    per request (livekit 1.8's streams take one segment each; the next sentence streams in
    while the current one plays), so the chain knows which sentences were said whole. A
    provider that fails, or leaves a complete sentence without (first or next) audio for longer
    than `attempt_timeout`, is marked unavailable (and probed in the background, as livekit
    does), and the next provider says the rest of the reply, from the start of the sentence
    that was cut (the user may hear its beginning twice).
    """

    def stream(  # type: ignore[override]
        self, *, conn_options: APIConnectOptions = DEFAULT_FALLBACK_API_CONNECT_OPTIONS
    ) -> tts.SynthesizeStream:
        return _StreamedSentences(tts=self, conn_options=conn_options)


class _StreamedSentences(FallbackSynthesizeStream):
    """One reply through a `StreamingSentenceFallbackTTS`: sentences in order, each streamed to
    the current provider, the rest handed to the next provider when one fails."""

    _fallback_adapter: StreamingSentenceFallbackTTS

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        chain = self._fallback_adapter
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=chain.sample_rate,
            num_channels=chain.num_channels,
            mime_type="audio/pcm",
            stream=True,
        )
        output_emitter.start_segment(segment_id=utils.shortuuid())
        script = SentenceScript()
        self._said = 0  # sentences said whole, by whichever provider
        reader = asyncio.create_task(self._read_input(script))
        everyone_down = not any(status.available for status in chain._status)
        unwell: list[tts.TTS] = []  # failed or skipped: probed in the background
        try:
            for member, status in zip(chain._tts_instances, chain._status, strict=True):
                if status.available or everyone_down:
                    try:
                        await self._speak_with(member, script, output_emitter)
                        if not script.sentences and self._pushed_text.strip():
                            # text without a word to say ("...", an emoji): a moment of silence,
                            # or livekit fails (and retries) the reply for want of audio
                            output_emitter.push_frame(_silence(chain.sample_rate, chain.num_channels))
                        return
                    except Exception as e:  # noqa: BLE001 - any failure moves on to the next provider
                        if status.available:
                            status.available = False
                            chain.emit("tts_availability_changed", tts.AvailabilityChangedEvent(tts=member, available=False))
                        log.warning("%s failed at sentence %d (the next provider says the rest): %s",
                                    provider_name(member), self._said + 1, e)
                unwell.append(member)
            names = ",".join(provider_name(m) for m in chain._tts_instances)
            raise APIConnectionError(f"every TTS of the chain failed ({names})")
        finally:
            await utils.aio.cancel_and_wait(reader)
            if unwell and script.sentences:
                # a probe costs a request: one sentence of this reply (the one that failed)
                self._pushed_tokens = [script.sentences[min(self._said, len(script.sentences) - 1)].text]
                for member in unwell:
                    self._try_recovery(member)

    async def _read_input(self, script: SentenceScript) -> None:
        async for data in self._input_ch:
            if isinstance(data, str):
                if data:
                    script.add(data)
            else:
                script.close_open()
        script.end()

    async def _speak_with(self, member: tts.TTS, script: SentenceScript, emitter: tts.AudioEmitter) -> None:
        """Say the reply from sentence `self._said` on with `member`; returns once the text has
        ended and every sentence was said, raises when `member` fails one."""
        queues: dict[int, asyncio.Queue[tts.SynthesizedAudio | BaseException | None]] = {}
        tasks: list[asyncio.Task[None]] = []

        async def launch() -> None:
            seen = -1
            while True:
                started = False
                for i in range(self._said, self._said + _AHEAD):
                    if i not in queues and script.startable(i):
                        queues[i] = asyncio.Queue()
                        tasks.append(asyncio.create_task(self._sentence(member, script, i, queues[i])))
                        started = True
                if started:
                    script.changed()  # the reply loop may be waiting for this sentence's queue
                seen = await script.wait_change(seen)

        launcher = asyncio.create_task(launch())
        to_rate = _ToRate(self._fallback_adapter.sample_rate)
        seen = -1
        try:
            while True:
                if script.ended and self._said >= len(script.sentences):
                    return
                queue = queues.get(self._said)
                if queue is None:  # the next sentence has not begun (or the launcher has not seen it)
                    seen = await script.wait_change(seen)
                    continue
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:  # said whole
                    for frame in to_rate.flush():
                        emitter.push_frame(frame)
                    to_rate = _ToRate(self._fallback_adapter.sample_rate)
                    del queues[self._said]
                    self._said += 1
                    self._fallback_adapter._active_instance = member
                    script.changed()  # the launcher may start the sentence after next
                    continue
                if not self._started_time and (started := item.frame.userdata.get(USERDATA_TTS_STARTED_TIME)):
                    # when the reply's first text reached a provider: the session's ttfb (and
                    # ttfs) read it on the chain's frames, as livekit's adapter stamps them
                    self._started_time = started
                if texts := item.frame.userdata.get(USERDATA_TIMED_TRANSCRIPT):
                    emitter.push_timed_transcript(texts)
                for frame in to_rate.push(item.frame):
                    emitter.push_frame(frame)
        finally:
            await utils.aio.cancel_and_wait(launcher, *tasks)

    async def _sentence(
        self,
        member: tts.TTS,
        script: SentenceScript,
        index: int,
        out: asyncio.Queue[tts.SynthesizedAudio | BaseException | None],
    ) -> None:
        """Stream sentence `index` to `member` as its text grows; its audio goes to `out`, then
        None, or the failure. Once the sentence is complete, a wait for audio longer than the
        attempt timeout is a stall (reported on `member` as a timeout)."""
        chain = self._fallback_adapter
        limit = chain.attempt_timeout
        options = dataclasses.replace(
            self._conn_options, max_retry=chain._max_retry_per_tts, timeout=limit, retry_interval=chain.retry_interval
        )
        sentence = script.sentences[index]
        complete_at: list[float] = []  # when the sentence's last text went in
        adapter: tts.StreamAdapter | None = None
        feeder: asyncio.Task[None] | None = None

        async def feed() -> None:
            pushed, seen = 0, -1
            while True:
                if len(sentence.text) > pushed:
                    stream.push_text(sentence.text[pushed:])
                    pushed = len(sentence.text)
                if sentence.closed:
                    stream.end_input()
                    complete_at.append(time.monotonic())
                    return
                seen = await script.wait_change(seen)

        try:
            # in the try: a provider that cannot even open a stream fails this sentence (the
            # reply waits on `out` for its audio, its end or its failure)
            adapter = None if member.capabilities.streaming else tts.StreamAdapter(tts=member)
            stream = (adapter or member).stream(conn_options=options)
            feeder = asyncio.create_task(feed())
            async with stream:
                frames = aiter(stream)
                pending: asyncio.Future[tts.SynthesizedAudio] = asyncio.ensure_future(anext(frames))
                progress = 0.0
                try:
                    while True:
                        if complete_at:
                            since = max(complete_at[0], progress)
                            remaining = since + limit - time.monotonic()
                            if remaining <= 0:
                                error = APITimeoutError(f"no audio within {limit:g} s")
                                member.emit("error", _tts_error(member, error))
                                raise error
                            await asyncio.wait({pending}, timeout=min(remaining, 0.25))
                        else:
                            await asyncio.wait({pending}, timeout=0.25)
                        if not pending.done():
                            continue
                        try:
                            audio = pending.result()
                        except StopAsyncIteration:
                            break
                        progress = time.monotonic()
                        out.put_nowait(audio)
                        pending = asyncio.ensure_future(anext(frames))
                finally:
                    if not pending.done():
                        pending.cancel()
            if not complete_at:  # the provider ended the stream before the sentence was complete
                raise APIConnectionError("the stream ended before the sentence was complete")
            out.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - handed to the reply, which fails over
            out.put_nowait(e)
        finally:
            if feeder is not None:
                await utils.aio.cancel_and_wait(feeder)
            if adapter is not None:
                await adapter.aclose()


class _ToRate:
    """Frames at `rate`, resampled when a provider speaks at another one."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: rtc.AudioResampler | None = None

    def push(self, frame: rtc.AudioFrame) -> list[rtc.AudioFrame]:
        if frame.sample_rate == self.rate and self._resampler is None:
            return [frame]
        if self._resampler is None:
            self._resampler = rtc.AudioResampler(
                input_rate=frame.sample_rate, output_rate=self.rate, num_channels=frame.num_channels
            )
        return self._resampler.push(frame)

    def flush(self) -> list[rtc.AudioFrame]:
        return self._resampler.flush() if self._resampler is not None else []


def _silence(rate: int, channels: int, seconds: float = 0.02) -> rtc.AudioFrame:
    samples = int(rate * seconds)
    return rtc.AudioFrame(
        data=b"\0\0" * samples * channels, sample_rate=rate, num_channels=channels, samples_per_channel=samples
    )


def _tts_error(member: tts.TTS, error: Exception) -> Any:
    return tts.TTSError(timestamp=time.time(), label=member.label, error=error, recoverable=False)
