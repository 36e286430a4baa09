"""A stall deadline for streaming STTs, and replay of the speech a failed connection was given.

A streaming STT (Deepgram, ...) keeps one connection open for the whole session. When that
connection stalls (the socket stays up, pings are answered, but no transcript ever comes back),
the plugin cannot tell: silence from the provider is also what a quiet room looks like. The
agent can tell, because its own VAD heard the user: `StallGuardSTT` is told when the VAD's
speech segments start and end, and after a segment ends the stream owes a transcript
(a final transcript or the provider's end of speech). If none arrives within the deadline the
connection counts as stalled: the attempt fails with `APITimeoutError`, which livekit-agents
reports and retries like any other provider failure. An interim transcript restarts the
deadline (a provider with long endpointing finalises only when the user's whole turn ends,
but shows progress meanwhile). The retries are counted here, in stalls in a row with no
transcript between them (one the chain moves on from not counted): past the connection
options' `max_retry` the attempt gives up, so the session reports the lost speech.

Every new connection (after a stall, a dropped socket or a provider error) is first given the
audio of the speech that has not been answered yet, from just before the earliest unanswered
segment began, so an utterance spoken into a dead connection still reaches the next one whole.
For a fallback chain that includes the chain dropping a failed provider: livekit's adapter
would go on to the next provider with only the audio from then on, so the guard opens a new
stream of the chain instead, which starts with that next provider and gets the replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from dataclasses import replace
from typing import Any

from livekit import rtc
from livekit.agents import APITimeoutError, stt
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.agents.utils import aio

from providers.deadlines import WrappedSTT
from providers.provider_errors import provider_name

log = logging.getLogger("agent.stream_guard")

PRE_ROLL = 1.0
"""Seconds of audio kept before a segment's start: the VAD reports speech after it began."""
MAX_REPLAY = 120.0
"""At most this much unanswered audio is kept for the next connection."""
_EPSILON = 1e-6  # positions are sums of frame durations: compare them with some slack
_ANSWERS = (stt.SpeechEventType.FINAL_TRANSCRIPT, stt.SpeechEventType.END_OF_SPEECH)
_PROGRESS = (stt.SpeechEventType.INTERIM_TRANSCRIPT, stt.SpeechEventType.START_OF_SPEECH)


class StallGuardSTT(WrappedSTT):
    """A streaming STT whose streams must answer each speech segment within `timeout` seconds
    of its end, and which hand unanswered speech to the next connection."""

    def __init__(self, inner: stt.STT, timeout: float, *, end_of_speech_lag: float = 0.5) -> None:
        if not inner.capabilities.streaming:
            raise ValueError("StallGuardSTT wraps streaming STTs only")
        chain = getattr(inner, "_stt_instances", None) if isinstance(inner, stt.FallbackAdapter) else None
        super().__init__(inner, ",".join(provider_name(i) for i in chain) if chain else provider_name(inner))
        self.timeout = timeout
        self.end_of_speech_lag = end_of_speech_lag
        """How long after the speech ends the VAD says so (its minimum silence): a provider that
        endpoints faster answers before the segment is closed, and that answer counts."""
        self._streams: weakref.WeakSet[GuardedStream] = weakref.WeakSet()

    def speech_started(self) -> None:
        """The agent's VAD hears the user (from the session's user state)."""
        for stream in list(self._streams):
            stream.speech_started()

    def speech_ended(self) -> None:
        """The agent's VAD closed a speech segment: a transcript is owed from now."""
        for stream in list(self._streams):
            stream.speech_ended()

    def give_up_on_current_provider(self) -> bool:
        """After a stall, make a fallback chain start its next stream with the next provider;
        True if the chain has another provider to go on with.

        livekit's `stt.FallbackAdapter` moves on only when a provider's stream *fails*; a stalled
        one fails in this guard instead, so the guard marks the provider the chain is using (its
        first available one) unavailable, as the adapter itself would, announcing it with the
        adapter's `stt_availability_changed` event. The adapter's own recovery stream brings the
        provider back once it transcribes again.
        """
        chain = self.inner
        if not isinstance(chain, stt.FallbackAdapter):
            return False
        instances, statuses = getattr(chain, "_stt_instances", None), getattr(chain, "_status", None)
        if instances is None or statuses is None:  # not the livekit-agents 1.x adapter
            return False
        for instance, status in zip(instances, statuses, strict=True):
            if status.available:
                status.available = False
                log.warning("%s stalled; the chain moves on to its next provider", provider_name(instance))
                chain.emit("stt_availability_changed", stt.AvailabilityChangedEvent(stt=instance, available=False))
                return any(other.available for other in statuses)
        return False

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> GuardedStream:
        stream = GuardedStream(self, language=language, conn_options=conn_options)
        self._streams.add(stream)
        return stream



class GuardedStream(stt.RecognizeStream):
    """One stream of the inner STT per attempt; this stream's own retry loop (livekit's) makes
    the attempts, so the inner stream is opened with no retries of its own."""

    def __init__(self, guard: StallGuardSTT, *, language: NotGivenOr[str], conn_options: APIConnectOptions) -> None:
        super().__init__(stt=guard, conn_options=conn_options)
        self._guard = guard
        self._language = language
        self._loop = asyncio.get_running_loop()
        self._position = 0.0
        """Seconds of audio taken from the input so far."""
        self._kept: deque[tuple[float, rtc.AudioFrame]] = deque()
        """(position, frame) of recent audio: the pre-roll, or the unanswered speech."""
        self._speaking_since: float | None = None
        self._unanswered_since: float | None = None
        """Position where the earliest speech without a transcript began (None: all answered)."""
        self._owed_since: float | None = None
        """Loop time when a finished segment started waiting for its transcript."""
        self._answered_at: float | None = None
        """Position when the last transcript arrived."""
        self._timer: asyncio.TimerHandle | None = None
        self._stalled = asyncio.Event()
        self._handed_over = asyncio.Event()
        self._stalls = 0
        """Connections in a row that stalled with no transcript in between (livekit-agents starts
        its retry count over after an attempt that outlived the connect timeout, as every stalled
        one did: without this count a provider that stays stuck is retried forever)."""
        self.replayed_seconds = 0.0
        """Audio handed to new connections so far (for tests and diagnostics)."""

    @property
    def deadline(self) -> float | None:
        """Loop time at which this connection counts as stalled (None: no transcript is owed)."""
        return None if self._owed_since is None else self._owed_since + self._guard.timeout

    # -- what the agent's VAD says ---------------------------------------------------------------

    def speech_started(self) -> None:
        self._speaking_since = self._position
        if self._unanswered_since is None:
            self._unanswered_since = self._position

    def speech_ended(self) -> None:
        self._speaking_since = None
        answered = self._answered_at
        if answered is not None and answered >= self._position - self._guard.end_of_speech_lag:
            self._unanswered_since = None  # the provider answered while the VAD was still waiting
            return
        if self._unanswered_since is None:  # started before this stream existed
            self._unanswered_since = max(0.0, self._position - PRE_ROLL)
        if self._owed_since is None:
            self._owed_since = self._loop.time()
            log.debug("%s owes a transcript (segment ended at %.2f s)", provider_name(self._guard), self._position)
            self._arm()

    def _arm(self) -> None:
        """One timer per owed transcript: progress only moves the deadline, and the timer, when
        it fires early, re-arms itself for the new one."""
        if self._timer is None and (deadline := self.deadline) is not None:
            self._timer = self._loop.call_later(max(0.0, deadline - self._loop.time()), self._check)

    def _check(self) -> None:
        self._timer = None
        deadline = self.deadline
        if deadline is None:
            return
        if self._loop.time() >= deadline:
            self._stalled.set()
        else:
            self._arm()

    def _progressed(self) -> None:
        """An interim transcript: the provider is alive and working on the speech, which stays
        unanswered (replayed after a stall) until its final transcript; the deadline restarts."""
        if self._owed_since is not None:
            self._owed_since = self._loop.time()

    def _answered(self) -> None:
        self._stalls = 0
        self._answered_at = self._position
        self._owed_since = None
        self._unanswered_since = self._speaking_since  # speech going on now is still owed
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- audio kept for the next connection ---------------------------------------------------

    def _keep(self, frame: rtc.AudioFrame) -> None:
        self._kept.append((self._position, frame))
        self._position += frame.duration
        since = self._unanswered_since
        start = self._position - PRE_ROLL if since is None else since - PRE_ROLL
        start = max(start, self._position - MAX_REPLAY)
        while self._kept and self._kept[0][0] < start - _EPSILON:
            self._kept.popleft()

    def _replay(self) -> list[rtc.AudioFrame]:
        if self._unanswered_since is None:
            return []
        start = self._unanswered_since - PRE_ROLL
        return [frame for position, frame in self._kept if position >= start - _EPSILON]

    # -- one attempt ---------------------------------------------------------------------------

    async def _run(self) -> None:
        self._stalled.clear()
        if self._owed_since is not None:  # the new connection gets the whole deadline
            self._owed_since = self._loop.time()
            self._arm()  # the timer that caught the last stall is spent: this one must be timed too
        chain = self._guard.inner if isinstance(self._guard.inner, stt.FallbackAdapter) else None
        if chain is not None:
            chain.on("stt_availability_changed", self._on_availability)
        try:
            while await self._connect():
                pass
        finally:
            if chain is not None:
                chain.off("stt_availability_changed", self._on_availability)

    def _on_availability(self, ev: stt.AvailabilityChangedEvent) -> None:
        """A provider of the chain failed. livekit's adapter goes on to the next provider within
        the same stream, giving it only the audio from then on; a new stream of the chain, which
        starts with that same next provider, is given the unanswered speech first."""
        if not ev.available:
            self._handed_over.set()

    async def _connect(self) -> bool:
        """One connection of the inner STT, given the unanswered speech first. True: the chain
        dropped a provider, and a new connection should take over."""
        self._handed_over.clear()
        replay = self._replay()
        inner = self._guard.inner.stream(
            language=self._language, conn_options=replace(self._conn_options, max_retry=0)
        )
        seconds = sum(f.duration for f in replay)
        inner.start_time_offset = max(0.0, self._position - seconds)
        if replay:
            self.replayed_seconds += seconds
            log.info("giving %.1f s of unanswered speech to the new %s connection", seconds, provider_name(self._guard))
        for frame in replay:
            inner.push_frame(frame)

        async def forward_input() -> None:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    inner.flush()
                    continue
                self._keep(item)
                inner.push_frame(item)
            inner.end_input()

        async def forward_events() -> None:
            async for ev in inner:
                if ev.type in _ANSWERS:
                    self._answered()
                elif ev.type in _PROGRESS:
                    self._progressed()
                self._event_ch.send_nowait(ev)

        input_task = asyncio.create_task(forward_input(), name="stt-guard-input")
        events_task = asyncio.create_task(forward_events(), name="stt-guard-events")
        stall_task = asyncio.create_task(self._stalled.wait(), name="stt-guard-stall")
        handover_task = asyncio.create_task(self._handed_over.wait(), name="stt-guard-handover")
        tasks: set[asyncio.Task[Any]] = {input_task, events_task, stall_task, handover_task}
        try:
            while not events_task.done():
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if stall_task in done and not events_task.done():
                    if not self._guard.give_up_on_current_provider():
                        self._stalls += 1
                    # past the retries the request gives up: the held speech is lost, the user
                    # is told (AGENT_STT_APOLOGY), and the next stream starts afresh
                    raise APITimeoutError(
                        f"no transcript within {self._guard.timeout:g} s of the end of speech",
                        retryable=self._stalls <= self._conn_options.max_retry,
                    )
                if handover_task in done and not events_task.done():
                    return True
                # input ended (or the inner stream closed under it: its events end with its error)
                tasks -= done
            events_task.result()
            return False
        finally:
            for task in (input_task, events_task, stall_task, handover_task):
                task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.gather(input_task, events_task, stall_task, handover_task, return_exceptions=True)
            await inner.aclose()
            await self._end_recovery_probes()

    async def _end_recovery_probes(self) -> None:
        """livekit's chain probes a failed provider with a stream fed by the chain's stream that
        dropped it; with that stream closed the probe would hear nothing and, still pending, keep
        the next stream from starting its own. End the probes so the next stream starts fresh ones."""
        chain = self._guard.inner
        if not isinstance(chain, stt.FallbackAdapter):
            return
        for status in getattr(chain, "_status", ()):
            task = getattr(status, "recovering_stream_task", None)
            if task is not None and not task.done():
                await aio.cancel_and_wait(task)

    async def _metrics_monitor_task(self, event_aiter: Any) -> None:
        # the inner stream reports usage on the inner STT, forwarded by StallGuardSTT; emitting
        # it here again would count it twice
        async for ev in event_aiter:
            if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                self._num_retries = 0

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await super().aclose()
