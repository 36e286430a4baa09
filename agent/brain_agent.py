"""The livekit-agents `Agent` whose replies come from the brain.

`BrainAgent.llm_node` turns the chat context's last user message into a brain `Turn` and yields
the brain's text deltas. A `FlushSentinel` is yielded when the brain starts a tool, so the text
said so far ("One moment.") is synthesised and played while the tool (or its approval) runs.

Closing the node (livekit does this when the user barges in) cancels the brain turn: the model
stream, running tools and pending approvals stop.

With a batch STT, a turn livekit commits while a segment of the user's speech is still being
recognised waits for its words (see `BrainAgent._more_words_came`).

`tts_node` runs livekit's default TTS node under a stall deadline (agent.guards): a TTS that
stops producing audio is cut off and reported instead of leaving the user in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from livekit import rtc
from livekit.agents import Agent, FlushSentinel, StopResponse, llm
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.agents.voice import ModelSettings

from brain import Cutoff, ToolStarted, VoiceBrain

from .guards import guard_tts_frames
from .shared_vad import SegmentedSTT
from .turn_tracker import TrackedTurn, TurnTracker

log = logging.getLogger("agent.brain_agent")

AGENT_INSTRUCTIONS = "Replies are produced by the brain (see brain/); this text is not sent to any model."

HOLD_LIMIT = 10.0
"""Seconds a reply waits at most for speech still being recognised (recognitions that stall
have deadlines of their own, AGENT_PROVIDER_TIMEOUT)."""


class BrainLLM(llm.LLM):
    """Placeholder: `AgentSession` only runs its reply pipeline when it has an `llm.LLM`.

    `BrainAgent.llm_node` produces the replies, so `chat()` is never called.
    """

    @property
    def model(self) -> str:
        return "brain"

    @property
    def provider(self) -> str:
        return "brain"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        raise RuntimeError("BrainLLM is a placeholder: BrainAgent.llm_node produces the replies")


def current_speech_handle() -> Any | None:
    """The `SpeechHandle` the running pipeline node belongs to.

    livekit-agents 1.8 keeps it in a context variable of `agent_activity` (no public accessor);
    None if that ever moves, and the turn bookkeeping then skips the speech.
    """
    try:
        from livekit.agents.voice.agent_activity import _SpeechHandleContextVar
    except ImportError:  # pragma: no cover - depends on the livekit-agents version
        return None
    return _SpeechHandleContextVar.get(None)


def session_closing(session: Any) -> bool:
    """Whether the `AgentSession` has begun to close (livekit-agents 1.8 keeps it private; False
    if that ever moves, and a call it cuts off is then reported as interrupted)."""
    closing = getattr(session, "_is_closing", None)
    return bool(callable(closing) and closing())


def last_user_text(chat_ctx: llm.ChatContext) -> str | None:
    for item in reversed(chat_ctx.items):
        if getattr(item, "type", None) == "message":
            if item.role == "user":  # type: ignore[union-attr]
                return item.text_content or ""  # type: ignore[union-attr]
            if item.role == "assistant":  # type: ignore[union-attr]
                return None
    return None


_END = object()
FLUSH = object()


class BrainAgent(Agent):
    def __init__(
        self,
        brain: VoiceBrain,
        tracker: TurnTracker,
        *,
        instructions: str = AGENT_INSTRUCTIONS,
        tts_timeout: float | None = None,
        on_tts_stall: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(instructions=instructions)
        self.brain = brain
        self.tracker = tracker
        self.tts_timeout = tts_timeout
        """Seconds the TTS may stall before the reply's audio is cut off (None: no deadline)."""
        self.on_tts_stall = on_tts_stall
        self._scripted: list[str] = []
        self.user_turn_callbacks: list[Callable[[str], None]] = []
        self.turn_started_callbacks: list[Callable[[TrackedTurn], None]] = []

    def script_next_reply(self, prompt: str) -> None:
        """The next reply not answering a user message answers `prompt` (the generated greeting)."""
        self._scripted.append(prompt)

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        text = new_message.text_content or ""
        for cb in list(self.user_turn_callbacks):
            cb(text)
        if await self._more_words_came(text):
            raise StopResponse()

    async def _more_words_came(self, text: str) -> bool:
        """Whether the user said more in this turn than livekit has committed: if so, the words
        are kept for the turn those late words become, and this turn gets no reply.

        livekit commits a turn once its endpointing delay has run out, with the transcripts it has
        then; with a batch STT, a segment still being recognised returns its words later, and
        livekit takes them for a turn of their own, which would cut off the reply to the first
        part (or answer the two parts apart). So while a segment is still being recognised the
        reply waits; if words come, they end a turn of their own soon, and this turn's words go
        in front of them (`TurnTracker.pending_merge`): the whole utterance is answered once.
        Costs nothing when every segment is recognised in time (the usual case).
        """
        segmented = self.session.stt
        if not isinstance(segmented, SegmentedSTT) or segmented.pending == 0:
            return False
        before = segmented.transcripts
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(segmented.all_recognised(), HOLD_LIMIT)
        if segmented.transcripts == before:
            return False  # nothing more was said (noise, or a recognition that failed): answer this
        merged = self.tracker.pending_merge
        self.tracker.pending_merge = f"{merged} {text}".strip() if merged else text
        return True

    async def tts_node(  # type: ignore[override]
        self, text: AsyncIterable[str], model_settings: ModelSettings
    ) -> AsyncIterable[rtc.AudioFrame]:
        if self.tts_timeout is None:
            async for frame in Agent.default.tts_node(self, text, model_settings):
                yield frame
            return

        def stalled(reason: str) -> None:
            log.warning("TTS stalled: %s", reason)
            if self.on_tts_stall is not None:
                self.on_tts_stall(reason)

        async for frame in guard_tts_frames(
            text,
            lambda t: Agent.default.tts_node(self, t, model_settings),
            stall_after=self.tts_timeout,
            on_stall=stalled,
        ):
            yield frame

    def _session_closing(self) -> bool:
        try:
            session = self.session
        except RuntimeError:  # no longer running
            return False
        return session_closing(session)

    async def llm_node(  # type: ignore[override]
        self,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        model_settings: ModelSettings,
    ) -> AsyncIterable[str | FlushSentinel]:
        user_text = last_user_text(chat_ctx)
        scripted = user_text is None
        if user_text is None:
            if not self._scripted:
                log.warning("llm_node called without a user message and nothing scripted; no reply")
                return
            user_text = self._scripted.pop(0)
        tracked = self.tracker.begin(user_text, current_speech_handle(), scripted=scripted)
        for cb in list(self.turn_started_callbacks):
            cb(tracked)
        async for item in self._stream(tracked):
            yield item

    async def _stream(self, tracked: TrackedTurn) -> AsyncIterator[str | FlushSentinel]:
        turn = tracked.turn
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cutoff = Cutoff()  # why the turn's running calls are cut off, set before cancelling them

        def on_event(event: object) -> None:
            if isinstance(event, ToolStarted) and event.turn_id == turn.turn_id:
                queue.put_nowait(FLUSH)

        async def pump() -> None:
            try:
                async with contextlib.aclosing(self.brain.stream_reply(turn, cutoff)) as deltas:  # type: ignore[type-var]
                    async for delta in deltas:
                        queue.put_nowait(delta)
            finally:
                queue.put_nowait(_END)

        unsubscribe = self.brain.subscribe(on_event)
        task = asyncio.create_task(pump(), name=f"brain-turn-{turn.turn_id}")
        last = ""
        try:
            while (item := await queue.get()) is not _END:
                if item is FLUSH:
                    if not last:
                        continue  # nothing said yet: no segment to end
                    # (the brain starts the next step's text with a space where one is needed)
                    last = ""
                    yield FlushSentinel()
                    continue
                last = item
                yield item
            await task  # surfaces an unexpected brain failure
        finally:
            unsubscribe()
            if not task.done():
                # a barge-in, or the session closing (the user gone, the worker shutting down):
                # the brain turn stops (model stream, tools, approvals), its calls say which
                cutoff.closed = self._session_closing()
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
