"""A realtime-mode AgentSession wired to the fake server, without a room.

    async with RealtimeHarness(tools=[...]) as h:
        h.server.transcripts.append("hello")
        h.server.script.append(Say("Hi there."))
        h.user_says()
        done = await h.turn_done()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

from livekit.agents import AgentSession

from agent.realtime import RealtimeBrainAgent, realtime_session_kwargs
from brain import BrainConfig, BrainEvent, ErrorEvent, TurnDone, VoiceBrain, create_voice_brain
from providers.realtime import RealtimeSettings, create_realtime_model
from providers.realtime_openai import GuardedOpenAIRealtimeModel

from .audio_io import ClockedAudioSink, QueueAudioInput, read_wav
from .gemini_live_server import FakeGeminiLiveServer
from .openai_realtime_server import FakeRealtimeServer

AUDIO_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
UTTERANCE = ("multi_utterance_16k_mono.wav", 0.0, 2.1)
"""The first utterance of the recording (speech 0.03-2.02 s, see turns.json)."""


class RealtimeHarness:
    def __init__(
        self,
        *,
        provider: str = "openai-realtime",
        tools: Iterable[Any] = (),
        api_key: str = "test-key",
        max_retry: int = 3,
        apology: str | None = "Sorry, I lost you for a moment.",
        approval_policy: Any = None,
        allow_interruptions: bool = True,
    ) -> None:
        self.provider = provider
        self.allow_interruptions = allow_interruptions
        self.server: Any = FakeRealtimeServer() if provider == "openai-realtime" else FakeGeminiLiveServer()
        self.api_key = api_key
        self._cleanup = contextlib.AsyncExitStack()
        """What `__aexit__` undoes, newest first; every step runs even if an earlier one raises."""
        self.max_retry = max_retry
        self.apology = apology
        self.tools = list(tools)
        self.approval_policy = approval_policy
        self.events: list[BrainEvent] = []
        self.session_events: list[Any] = []
        self.input = QueueAudioInput()
        self.sink = ClockedAudioSink()
        samples, rate = read_wav(AUDIO_DIR / UTTERANCE[0], UTTERANCE[1], UTTERANCE[2])
        self._utterance = (samples, rate)

    async def __aenter__(self) -> RealtimeHarness:
        try:
            await self._start()
        except BaseException:
            await self._cleanup.aclose()  # a half-built harness leaks nothing either
            raise
        return self

    async def _start(self) -> None:
        from brain import InProcessApprovalGate

        await self.server.start()
        self._cleanup.push_async_callback(self.server.aclose)
        if self.provider == "openai-realtime":
            keys: dict[str, Any] = {"openai_api_key": self.api_key, "openai_base_url": self.server.base_url}
        else:
            keys = {"gemini_api_key": self.api_key, "gemini_base_url": self.server.base_url}
            # google-genai always dials wss:// and reads SSL_CERT_FILE when it builds its client
            self._cleanup.callback(_restore_env, "SSL_CERT_FILE", os.environ.get("SSL_CERT_FILE"))
            os.environ["SSL_CERT_FILE"] = str(self.server.cert_file)
        self.settings = RealtimeSettings(
            _env_file=None,
            provider=self.provider,
            max_retry=self.max_retry,
            retry_interval=0.1,
            connect_timeout=5.0,
            allow_interruptions=self.allow_interruptions,
            **keys,
        )
        self.model = cast(GuardedOpenAIRealtimeModel, create_realtime_model(self.settings))
        self._cleanup.push_async_callback(self.model.aclose)
        self.brain: VoiceBrain = create_voice_brain(
            BrainConfig(_env_file=None, backend="offline", tools=[], hitl_timeout=10.0),  # type: ignore[call-arg]
            tools=self.tools,
            approvals=InProcessApprovalGate(policy=self.approval_policy),
        )
        self.brain.subscribe(self.events.append)
        self.agent = RealtimeBrainAgent(
            self.brain, conversation_id="room-1", instructions="You are a test assistant.", apology=self.apology
        )
        self.session = AgentSession(
            llm=self.model, aec_warmup_duration=None, **realtime_session_kwargs(self.settings)
        )
        self._cleanup.push_async_callback(self.session.aclose)
        self._cleanup.callback(self.input.close)
        self.session.input.audio = self.input
        self.session.output.audio = self.sink
        for name in ("user_input_transcribed", "agent_state_changed", "conversation_item_added", "close"):
            self.session.on(name, self.session_events.append)
        await self.session.start(self.agent)

    async def __aexit__(self, *exc: object) -> None:
        # the microphone, the session, the model, the server, SSL_CERT_FILE: each is undone
        # even if undoing an earlier one raised
        await self._cleanup.aclose()

    # -- driving --

    def user_says(self) -> None:
        """One real user utterance followed by a second of silence, faster than real time."""
        samples, rate = self._utterance
        self.input.push_speech(samples, rate, trailing_silence_s=1.0)

    async def wait_until(self, predicate: Callable[[], bool], within: float = 15.0) -> None:
        """Poll `predicate` (it spans brain events, session state and the fake server)."""

        async def poll() -> None:
            while not predicate():  # noqa: ASYNC110 - no single event to wait on
                await asyncio.sleep(0.02)

        await asyncio.wait_for(poll(), within)

    async def agent_speaking(self) -> None:
        await self.wait_until(lambda: self.session.agent_state == "speaking")

    # -- inspecting --

    def of_type(self, type_: str) -> list[Any]:
        return [e for e in self.events if e.type == type_]

    def done_turns(self) -> list[TurnDone]:
        return [e for e in self.events if isinstance(e, TurnDone)]

    def errors(self) -> list[ErrorEvent]:
        return [e for e in self.events if isinstance(e, ErrorEvent)]

    async def turn_done(self, n: int = 1) -> TurnDone:
        """Wait for the n-th TurnDone overall (1-based) and return it."""
        await self.wait_until(lambda: len(self.done_turns()) >= n)
        return self.done_turns()[n - 1]

    def texts(self, turn_id: str) -> str:
        return "".join(e.text for e in self.of_type("text.delta") if e.turn_id == turn_id)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
