"""`define_voice_agent(settings)`: the `AgentServer` the livekit-agents CLI runs.

Per worker process (`setup`): Silero VAD is loaded once, with the TURN_VAD_* parameters
(pipeline mode only).
Per job (`entrypoint`, one room): a brain, the bridge on the room, and an `AgentSession` that
answers with STT / TTS from `providers/` by name and the brain (`AGENT_MODE=pipeline`), or with
a realtime model and the brain's tools (`AGENT_MODE=realtime`); then the session-life rules:
greeting, inactivity timeout, leave when the last remote participant has gone.

Job processes receive `setup` / `entrypoint` by pickling, so they are methods of `VoiceWorker`,
a plain object holding the settings.

Health check: the worker's HTTP server (`AGENT_HTTP_PORT`, default 8081) answers `GET /` with
200 "OK" while the worker runs (also while it retries reaching LiveKit: after ~2 min of that it stops,
and `python -m agent start` exits 1), `GET /worker` with
a JSON description and `GET /providers` with the provider report of `python -m agent doctor`
(every STT / TTS / brain / realtime provider: installed, configured, chosen, and why not).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import weakref
from typing import Any

from livekit.agents import AgentServer, JobContext, JobProcess

from brain import create_voice_brain
from brain.errors import register_secrets_of

from .allocator import pin_mmap_threshold
from .config import AgentSettings
from .health import VoiceAgentServer
from .log_redaction import install as redact_logs
from .room_life import (  # noqa: F401 - re-exported: the worker's session-life API
    USER_KINDS,
    JobClosers,
    LastParticipantWatcher,
    RoomGone,
    attach_session_life,
    remaining_users,
    wait_for_user,
)
from .startup_checks import check_configuration
from .turns import vad_load_kwargs
from .voice_session import BaseVoiceSession, VoiceSession, build_agent_session

log = logging.getLogger("agent.worker")

def conversation_id_for_room(room_name: str) -> str:
    """One conversation per room: the brain's memory and events are keyed by the room name."""
    return room_name or "room"


# livekit's forkserver preloads the local end-of-turn weights (~240 MB RSS) for every job unless
# this is falsy; only TURN_MODE=eou uses them (BENCHMARKS.md "Density")
PRELOAD_LOCAL_INFERENCE = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"


def load_vad(settings: AgentSettings) -> Any:
    """Silero VAD with the TURN_VAD_* knobs, from the engine TURN_VAD_ENGINE names."""
    if settings.turn.vad_engine == "native":
        from livekit.agents import inference

        return inference.VAD(**vad_load_kwargs(settings.turn))
    from livekit.plugins import silero

    return silero.VAD.load(**vad_load_kwargs(settings.turn))


_SESSIONS: weakref.WeakKeyDictionary[JobContext, BaseVoiceSession] = weakref.WeakKeyDictionary()
"""The session each job of this process serves (`entrypoint` and `session_end` are pickled
into the job process separately: they share the module, not a `VoiceWorker`)."""


class VoiceWorker:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings

    def setup(self, proc: JobProcess) -> None:
        """Once per worker process, before any job: load Silero VAD (pipeline mode).

        First the allocator is told to keep large blocks on mmap (`agent.allocator`). Last the
        heap built so far (framework, plugins, model) is frozen: the cyclic GC stops re-scanning
        it on every full collection, which otherwise lands as 50-200 ms event-loop pauses
        mid-session, and its pages stay shared with the forkserver.
        """
        pin_mmap_threshold()  # VAD speech buffers go back to the system when sessions end
        redact_logs()  # a job process's own log records too (agent.log_redaction)
        register_secrets_of(self.settings)  # unpickled settings: their keys, literally, too
        if self.settings.mode == "pipeline":
            proc.userdata["vad"] = load_vad(self.settings)
        gc.collect()
        gc.freeze()

    async def entrypoint(self, ctx: JobContext) -> None:
        await self.run_session(ctx)

    async def session_end(self, ctx: JobContext) -> None:
        """livekit's `on_session_end`: the session has closed (the job closes it first when the
        worker shuts down) and the room is still connected. The bridge's last envelopes (the
        cancelled approvals, `session.ended`) go out now: livekit disconnects the room next."""
        voice = _SESSIONS.get(ctx)
        if voice is not None:
            await voice.deliver_last_events()

    async def run_session(self, ctx: JobContext) -> BaseVoiceSession | None:
        """Serve the room's first user; returns the running session (None if nobody came)."""
        s = self.settings
        realtime = s.mode == "realtime"
        closers = JobClosers()  # the session (once attached) first, then what it uses
        ctx.add_shutdown_callback(closers.run)
        if realtime:
            from providers.realtime import create_realtime_model

            model = create_realtime_model(s.realtime)  # config errors surface before connecting
            closers.add(model.aclose)
        else:
            from providers import create_stt, create_tts

            vad = ctx.proc.userdata.get("vad") or load_vad(s)
            stt = create_stt(s.speech, vad=vad)
            tts = create_tts(s.speech)
            speech_open = True

            async def close_speech() -> None:
                """Once: after the session, when nobody joins, or at job shutdown if the job
                failed before the session was wired (the local recogniser's process, ...)."""
                nonlocal speech_open
                if speech_open:
                    speech_open = False
                    await stt.aclose()
                    await tts.aclose()

            closers.add(close_speech)
            stt.prewarm()  # e.g. build the local recogniser while we wait for the user
            tts.prewarm()
        brain = create_voice_brain(s.effective_brain())
        closers.add(brain.aclose)

        await ctx.connect()
        try:
            participant = await asyncio.wait_for(
                wait_for_user(ctx.room, exclude=s.bridge.allowed_identities), timeout=s.join_timeout or None
            )
        except (TimeoutError, RoomGone) as e:
            why = "the room closed" if isinstance(e, RoomGone) else "nobody joined"
            log.info("%s: %s; leaving", ctx.room.name, why)
            if not realtime:
                await close_speech()  # the prewarmed providers (e.g. the local recogniser's process)
            ctx.shutdown(reason=why)
            return None

        conversation_id = conversation_id_for_room(ctx.room.name)
        voice: BaseVoiceSession
        if realtime:
            from .realtime_session import RealtimeVoiceSession, build_realtime_session

            voice = RealtimeVoiceSession(
                s,
                brain=brain,
                session=build_realtime_session(s, model),
                model=model,
                conversation_id=conversation_id,
                user_id=participant.identity,
            )
        else:
            voice = VoiceSession(
                s,
                brain=brain,
                session=build_agent_session(s, vad=vad, stt=stt, tts=tts),
                conversation_id=conversation_id,
                user_id=participant.identity,
            )
        voice.attach_bridge(ctx.room, served_identity=participant.identity)
        _SESSIONS[ctx] = voice
        # the speech providers and the brain close after the session (the local recogniser's processes)
        watcher = attach_session_life(
            ctx, voice, served=participant.identity, grace=s.inactivity_timeout, closers=closers
        )

        await voice.start(
            room=ctx.room,
            room_options=voice.room_options(participant.identity),
            **voice.start_options(),
        )
        watcher.check()  # they may have left while the session started
        return voice


def define_voice_agent(settings: AgentSettings | None = None, *, check: bool = True) -> AgentServer:
    """The worker: explicit dispatch by `AGENT_NAME`, health check (and `/providers`) on `AGENT_HTTP_PORT`.

    With `check` (the default) the configuration is validated first (`check_configuration`):
    an unknown provider, a missing key or plugin raises here, naming what to fix, instead of
    failing in every job. Call it on the main thread (livekit imports plugins there only).
    """
    s = settings or AgentSettings()
    if check:
        check_configuration(s)
    if s.turn.mode != "eou" or s.mode != "pipeline":
        os.environ.setdefault(PRELOAD_LOCAL_INFERENCE, "0")  # read by the forkserver it starts
    worker = VoiceWorker(s)
    kwargs: dict[str, Any] = {
        "setup_fnc": worker.setup,
        "host": s.http_host,
        "port": s.http_port,
        "drain_timeout": s.drain_timeout,
    }
    if s.livekit_url:
        kwargs["ws_url"] = s.livekit_url
    if s.livekit_api_key is not None:
        kwargs["api_key"] = s.livekit_api_key.get_secret_value()
    if s.livekit_api_secret is not None:
        kwargs["api_secret"] = s.livekit_api_secret.get_secret_value()
    if s.idle_processes is not None:
        kwargs["num_idle_processes"] = s.idle_processes
    if s.livekit_log_level is not None:  # the CLI's default level; --log-level still wins
        kwargs["log_level"] = s.livekit_log_level
    server = VoiceAgentServer(s, **kwargs)
    server.rtc_session(worker.entrypoint, agent_name=s.name, on_session_end=worker.session_end)
    return server
