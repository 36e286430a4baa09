"""One VAD pass per session, shared by turn handling and a batch STT.

livekit-agents runs a non-streaming STT (the local pocketsphinx one, OpenAI's, a chain of them)
behind its `StreamAdapter`, which runs a Silero stream of its own over the same microphone
audio the session's VAD already analyses: two Silero streams per session, the second one only
to cut the utterances the first one has already found. Here the session's VAD stream hands its
speech segments to the STT instead:

- `SharedVAD` wraps the session's VAD; the streams it makes are the inner VAD's streams,
  and each start / end of speech they yield to the session is also published to subscribers.
- `SegmentedSTT` is a streaming STT over a batch one: its stream recognises the audio of each
  segment the `SharedVAD` ends (the VAD event's frames, as livekit's adapter does), and reports
  START / END_OF_SPEECH and the final transcript the same way.

The VAD's metrics go to the wrapped VAD (which all sessions of a process share), not to the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils, vad
from livekit.agents.metrics import STTMetrics
from livekit.agents.metrics.base import Metadata
from livekit.agents.stt.stream_adapter import DEFAULT_STREAM_ADAPTER_API_CONNECT_OPTIONS
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils.audio import calculate_audio_duration

from providers.deadlines import WrappedSTT
from providers.provider_errors import provider_name

from .early_recognition import EarlyRecognition, EarlyStats, free_recognitions

_SEGMENT_EVENTS = (vad.VADEventType.START_OF_SPEECH, vad.VADEventType.END_OF_SPEECH)

log = logging.getLogger("agent.stt")


class SharedVAD(vad.VAD):
    def __init__(self, inner: vad.VAD) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner
        self._label = inner._label
        self._listeners: list[Callable[[vad.VADEvent], None]] = []
        self._window_listeners: list[Callable[[vad.VADEvent], None]] = []

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def provider(self) -> str:
        return self.inner.provider

    def subscribe(self, listener: Callable[[vad.VADEvent], None], *, windows: bool = False) -> Callable[[], None]:
        """Call `listener` with each start / end of speech the session's VAD stream yields (and
        each inference window's event too, with `windows`)."""
        group = self._window_listeners if windows else self._listeners
        group.append(listener)
        return lambda: group.remove(listener) if listener in group else None

    def stream(self) -> vad.VADStream:
        # the inner stream itself, observed where the session reads it: no extra task or channel
        return cast(vad.VADStream, _PublishingStream(self.inner.stream(), self))

    def publish(self, event: vad.VADEvent) -> None:
        if event.type in _SEGMENT_EVENTS:
            for listener in list(self._listeners):
                listener(event)
        if self._window_listeners:
            for listener in list(self._window_listeners):
                listener(event)


class _PublishingStream:
    """The inner VAD stream, publishing its speech events as the session consumes them."""

    def __init__(self, inner: vad.VADStream, shared: SharedVAD) -> None:
        self._inner = inner
        self._shared = shared

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._inner.push_frame(frame)

    def flush(self) -> None:
        self._inner.flush()

    def end_input(self) -> None:
        self._inner.end_input()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _PublishingStream:
        return self

    async def __anext__(self) -> vad.VADEvent:
        event = await self._inner.__anext__()
        self._shared.publish(event)
        return event


class SegmentedSTT(WrappedSTT):
    """A batch STT as a streaming one, on the speech segments of a `SharedVAD`."""

    def __init__(self, inner: stt.STT, shared_vad: SharedVAD) -> None:
        if inner.capabilities.streaming:
            raise ValueError("SegmentedSTT wraps non-streaming STTs only")
        super().__init__(inner, provider_name(inner))
        self._capabilities = stt.STTCapabilities(
            streaming=True,
            interim_results=False,
            keyterms=inner.capabilities.keyterms,
            chat_context=inner.capabilities.chat_context,
        )
        self.shared_vad = shared_vad
        self.early = EarlyStats()
        """Early recognitions (`agent.early_recognition`) used / dropped, when the STT allows them."""
        self.pending = 0
        """Speech segments that have ended but are not recognised yet (queued or in recognition):
        while above 0, a transcript may still come (`agent.simulate` waits for it)."""
        self.transcripts = 0
        """Final transcripts given to the session so far (empty recognitions give none)."""
        self._recognised = asyncio.Event()
        self._recognised.set()
        # the recognitions' failures are the session's to hear (livekit listens on session.stt)
        inner.on("error", self._forward_error)

    def _count_pending(self, change: int) -> None:
        self.pending += change
        if self.pending > 0:
            self._recognised.clear()
        else:
            self._recognised.set()

    async def all_recognised(self) -> None:
        """Until every speech segment that has ended is recognised (at once if none waits)."""
        await self._recognised.wait()

    def _forward_error(self, error: Any, *args: Any) -> None:
        if getattr(error, "recoverable", False):
            # an attempt livekit retries (AGENT_PROVIDER_MAX_RETRY): logged, not the session's
            # error; clients hear of the request only if its last attempt fails too
            log.warning("%s: a recognition attempt failed; retrying: %s", self.label, getattr(error, "error", error))
            return
        self.emit("error", error, *args)

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return _SegmentStream(self, language=language, conn_options=conn_options)

    async def aclose(self) -> None:
        self.inner.off("error", self._forward_error)
        await super().aclose()


class _SegmentStream(stt.RecognizeStream):
    def __init__(self, owner: SegmentedSTT, *, language: NotGivenOr[str], conn_options: APIConnectOptions) -> None:
        # as livekit's adapter: no retries of the stream itself; each recognition is retried
        # with the session's options and reports its own failures
        super().__init__(stt=owner, conn_options=DEFAULT_STREAM_ADAPTER_API_CONNECT_OPTIONS)
        self._owner = owner
        self._language = language
        self._recognize_options = conn_options

    async def _run(self) -> None:
        segments: asyncio.Queue[vad.VADEvent | None] = asyncio.Queue()  # None: the input ended
        early = EarlyRecognition(self._recognize_early, stats=self._owner.early) if free_recognitions(self._owner.inner) else None
        owner = self._owner

        def on_vad_event(event: vad.VADEvent) -> None:
            if event.type == vad.VADEventType.END_OF_SPEECH:
                owner._count_pending(+1)
            segments.put_nowait(event)

        unsubscribe = self._owner.shared_vad.subscribe(on_vad_event, windows=early is not None)

        async def drain_input() -> None:
            async for _ in self._input_ch:  # the audio arrives with the VAD's events
                pass
            segments.put_nowait(None)

        drain = asyncio.create_task(drain_input(), name="segmented-stt-input")
        try:
            while (event := await segments.get()) is not None:
                if early is not None:
                    early.on_vad_event(event)
                if event.type in _SEGMENT_EVENTS:
                    try:
                        await self._on_vad_event(event, early)
                    finally:
                        if event.type == vad.VADEventType.END_OF_SPEECH:
                            owner._count_pending(-1)
        finally:
            unsubscribe()
            while not segments.empty():  # segments nobody will recognise now
                left = segments.get_nowait()
                if left is not None and left.type == vad.VADEventType.END_OF_SPEECH:
                    owner._count_pending(-1)
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
            if early is not None:
                await early.aclose()

    async def _recognize_early(self, frames: list[rtc.AudioFrame]) -> stt.SpeechEvent:
        # the provider's implementation: no retries, no error report, no metrics (see take())
        return await self._owner.inner._recognize_impl(
            utils.merge_frames(frames), language=self._language, conn_options=self._recognize_options
        )

    async def _on_vad_event(self, event: vad.VADEvent, early: EarlyRecognition | None) -> None:
        if event.type == vad.VADEventType.START_OF_SPEECH:
            self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH))
            return
        speech_end_time = time.time() - event.silence_duration - event.inference_duration
        self._event_ch.send_nowait(
            stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, speech_end_time=speech_end_time)
        )
        if not event.frames:
            return
        taken = await early.take() if early is not None else None
        if taken is not None:
            result, took = taken
            self._report_early(result, took, event.frames)
        else:
            result = await self._owner.inner.recognize(
                buffer=utils.merge_frames(event.frames), language=self._language, conn_options=self._recognize_options
            )
        if not result.alternatives or not result.alternatives[0].text:
            return
        self._owner.transcripts += 1
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                alternatives=[result.alternatives[0]],
                speech_end_time=result.speech_end_time if result.speech_end_time is not None else speech_end_time,
            )
        )

    def _report_early(self, result: stt.SpeechEvent, took: float, frames: list[rtc.AudioFrame]) -> None:
        """The usage metrics `recognize()` would have reported for the segment."""
        inner = self._owner.inner
        inner.emit(
            "metrics_collected",
            STTMetrics(
                request_id=result.request_id,
                timestamp=time.time(),
                duration=took,
                label=inner.label,
                audio_duration=calculate_audio_duration(frames),
                streamed=False,
                metadata=Metadata(model_name=inner.model, model_provider=inner.provider),
            ),
        )

    def _emit_error(self, api_error: Exception, recoverable: bool) -> None:
        pass  # the recognition that failed has already reported it (through SegmentedSTT)

    async def _metrics_monitor_task(self, event_aiter: Any) -> None:
        async for _ in event_aiter:  # usage is reported by the recognitions themselves
            pass
