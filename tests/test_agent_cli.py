"""`python -m agent`: command dispatch, clear errors, and the worker the livekit CLI runs."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from livekit.agents import AgentServer
from livekit.agents.job import JobExecutorType, JobProcess

from agent import allocator
from agent.cli import main
from agent.turns import TurnSettings
from agent.worker import VoiceWorker, define_voice_agent

from .agent_fakes import settings
from .bridge_fakes import wait_until

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(var, raising=False)


def test_usage_and_unknown_command(capsys) -> None:
    assert main(["--help"]) == 0
    assert "simulate" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["teleport"]) == 2
    assert "unknown command 'teleport'" in capsys.readouterr().err


def test_start_without_livekit_settings_names_the_variables(capsys) -> None:
    assert main(["start"]) == 2
    err = capsys.readouterr().err
    assert "LIVEKIT_URL" in err and "LIVEKIT_API_KEY" in err and "LIVEKIT_API_SECRET" in err


@pytest.mark.parametrize(
    ("argv", "url", "named"),
    [
        (["start"], "localhost:7880", "LIVEKIT_URL='localhost:7880' is not a LiveKit server URL"),
        (["start"], "livekit.example.com", "LIVEKIT_URL='livekit.example.com' is not a LiveKit server URL"),
        (["dev"], "ftp://livekit:7880", "LIVEKIT_URL='ftp://livekit:7880' is not a LiveKit server URL"),
        (["start"], "ws://livekit:78o0", "LIVEKIT_URL='ws://livekit:78o0' is not a URL"),
        (["start"], "ws://:7880", "LIVEKIT_URL='ws://:7880' is not a LiveKit server URL"),
        (["start", "--url", "livekit:7880"], "ws://localhost:7880", "--url='livekit:7880' is not a LiveKit server URL"),
        (["start", "--url=wss//cloud"], "ws://localhost:7880", "--url='wss//cloud' is not a LiveKit server URL"),
    ],
)
def test_start_refuses_a_livekit_url_it_cannot_connect_with(monkeypatch, capsys, argv, url, named) -> None:
    """`LIVEKIT_URL=localhost:7880` (no scheme) started a worker that failed every connection
    attempt with the bare error "agent" for about two minutes, then exited."""
    monkeypatch.setenv("LIVEKIT_URL", url)
    monkeypatch.setenv("LIVEKIT_API_KEY", "devkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "devsecret-change-me-0123456789abcdef")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named}") and "ws://HOST:7880" in err, err


def test_livekit_urls_livekit_agents_connects_with_are_accepted() -> None:
    from agent.config import livekit_url_problem

    for url in ("ws://livekit:7880", "wss://project.livekit.cloud", "http://127.0.0.1:7880", "https://lk.example/base"):
        assert livekit_url_problem(url, "LIVEKIT_URL") is None, url
    problem = livekit_url_problem("wss://user:hunter2-password@:443", "LIVEKIT_URL")
    assert problem is not None and "hunter2" not in problem


def test_simulate_reports_a_missing_file(capsys) -> None:
    assert main(["simulate", "no-such-file.wav"]) == 2
    assert "audio file not found: no-such-file.wav" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AGENT_MODE", "foo", "AGENT_MODE: Input should be 'pipeline' or 'realtime'"),
        ("TURN_MODE", "xyz", "TURN_MODE: Input should be 'vad', 'stt' or 'eou'"),
        ("BRAIN_HITL_TIMEOUT", "-1", "BRAIN_HITL_TIMEOUT: Input should be greater than 0"),
        ("BRIDGE_MAX_MESSAGE_BYTES", "10", "BRIDGE_MAX_MESSAGE_BYTES: Input should be greater than or equal to 256"),
        ("AGENT_PROVIDER_TIMEOUT", "inf", "AGENT_PROVIDER_TIMEOUT: Input should be a finite number"),
        ("AGENT_LOG_LEVEL", "loud", "AGENT_LOG_LEVEL='loud': use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ],
)
def test_bad_settings_name_the_variable_not_the_field(monkeypatch, capsys, variable: str, value: str, expected: str) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err


def test_an_empty_agent_variable_means_its_default_but_an_empty_text_means_silence(monkeypatch) -> None:
    from agent.config import AgentSettings

    monkeypatch.setenv("AGENT_JOIN_TIMEOUT", "")  # as `.env.example` may leave it
    monkeypatch.setenv("AGENT_MODE", " ")
    for var in ("AGENT_STT_APOLOGY", "AGENT_GREETING", "AGENT_GOODBYE"):
        monkeypatch.setenv(var, "")  # documented as "say nothing"
    s = AgentSettings()
    assert s.join_timeout == AgentSettings.model_fields["join_timeout"].default and s.mode == "pipeline"
    assert (s.stt_apology, s.greeting, s.goodbye) == ("", "", "")


def test_simulate_refuses_an_unwritable_out_and_an_absurd_speed_before_running(tmp_path, capsys) -> None:
    (tmp_path / "adir.wav").mkdir()
    (tmp_path / "file").write_text("x")
    for argv, expected in (
        (["--out", str(tmp_path / "adir.wav")], "is a directory; give a file name"),
        (["--out", str(tmp_path / "file" / "x.wav")], "is a file, not a folder"),
        (["--speed", "1e6"], "--speed must be above 0 and at most 10"),
        (["--speed", "inf"], "--speed must be above 0 and at most 10"),
        (["--tail", "-5"], "--tail must be 0 or more seconds"),
    ):
        assert main(["simulate", "no-such-file.wav", *argv]) == 2
        assert expected in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "adir.wav")]) == 2
    assert "is a directory, not an audio file" in capsys.readouterr().err


def test_simulate_checks_events_and_refuses_to_overwrite_its_input_before_running(tmp_path, capsys) -> None:
    """--events was opened only after the input was decoded, and its failures named neither the
    flag nor the problem ("[Errno 17] File exists: 'x'"); --out or --events naming the input
    file replaced the user's recording with the reply (or with JSON lines)."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "file").write_text("x")
    recording = tmp_path / "question.wav"
    recording.write_bytes(b"RIFF not really")
    for argv, expected in (
        (["no-such-file.wav", "--events", str(tmp_path / "adir")], "is a directory; give a file name such as out/events.jsonl"),
        (["no-such-file.wav", "--events", str(tmp_path / "file" / "e.jsonl")], "is a file, not a folder"),
        ([str(recording), "--out", str(recording)], "--out is the input file"),
        ([str(recording), "--events", str(tmp_path / "." / "question.wav")], "--events is the input file"),
        (["--out", str(tmp_path / "r.wav"), "--events", str(tmp_path / "r.wav")], "--events and --out name the same file"),
        ([str(recording), "--say", "hello"], "give one of them"),  # --say was silently ignored
    ):
        assert main(["simulate", *argv]) == 2
        err = capsys.readouterr().err
        assert expected in err, err
    assert recording.read_bytes() == b"RIFF not really" and not (tmp_path / "r.wav").exists()


def test_python_m_brain_reports_config_errors_in_one_line(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAIN_", "OPENAI_"))}
    for extra, expected in (
        ({"BRAIN_BACKEND": "openai"}, "error: OPENAI_API_KEY is not set; BRAIN_BACKEND=openai needs it"),
        ({"BRAIN_HITL_TIMEOUT": "-1"}, "error: invalid configuration: BRAIN_HITL_TIMEOUT: Input should be greater than 0"),
        ({"BRAIN_TOOLS": "nosuch_module"}, "error: cannot import tool module 'nosuch_module' (BRAIN_TOOLS)"),
    ):
        done = subprocess.run([sys.executable, "-m", "brain"], env={**env, **extra, "PYTHONPATH": str(ROOT)},
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(expected) and "Traceback" not in done.stderr, done.stderr


def test_token_is_dispatched_to_the_deployment_module(monkeypatch, capsys) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", "devkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "a-secret-that-is-long-enough-for-hs256-0123456789")
    assert main(["token", "--room", "room-1", "--identity", "alice"]) == 0
    assert capsys.readouterr().out.strip()


def test_livekit_worker_commands_are_offered() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "start", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "--url" in proc.stdout and "--api-key" in proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_worker_health_endpoint_and_dispatch_name() -> None:
    port = _free_port()
    server = define_voice_agent(settings(http_port=port, http_host="127.0.0.1", name="concierge"))
    assert isinstance(server, AgentServer)
    started = asyncio.Event()
    server.on("worker_started", lambda *_: started.set())
    task = asyncio.create_task(server.run(devmode=True, unregistered=True))
    try:
        await asyncio.wait_for(started.wait(), 30)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/") as r:
                assert (r.status, await r.text()) == (200, "OK")
            async with http.get(f"http://127.0.0.1:{port}/worker") as r:
                info = await r.json(content_type=None)
        assert info["agent_name"] == "concierge"  # explicit dispatch by name
    finally:
        await server.aclose()
        await asyncio.wait_for(task, 10)


def _start_once(monkeypatch: pytest.MonkeyPatch, url: str) -> tuple[int, list[AgentServer]]:
    """`python -m agent start` against `url`, giving up after the first refused attempt."""
    import logging
    import signal

    from livekit.agents.inference_runner import _InferenceRunner

    import agent.worker

    for var, value in (("LIVEKIT_URL", url), ("LIVEKIT_API_KEY", "devkey"),
                       ("LIVEKIT_API_SECRET", "devsecret-change-me-0123456789abcdef"), ("AGENT_IDLE_PROCESSES", "0"),
                       ("AGENT_HTTP_HOST", "127.0.0.1"), ("AGENT_HTTP_PORT", str(_free_port()))):
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(_InferenceRunner, "registered_runners", {})  # no end-of-turn process here
    servers: list[AgentServer] = []

    def one_attempt(*args: object, **kwargs: object) -> AgentServer:
        server = define_voice_agent(*args, **kwargs)  # type: ignore[arg-type]
        server.update_options(max_retry=0)  # give up after the first refused attempt, not ~2 min
        servers.append(server)
        return server

    monkeypatch.setattr(agent.worker, "define_voice_agent", one_attempt)
    # the livekit CLI takes over signals, the root logger and the event loop: put them back
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    root, livekit_logger = logging.getLogger(), logging.getLogger("livekit.agents")
    root_state, livekit_level = (list(root.handlers), root.level), livekit_logger.level
    livekit_logger.setLevel(logging.NOTSET)  # as in a fresh process: the CLI sets it only when unset
    try:
        code = main(["start"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        root.handlers[:], root.level = root_state
        livekit_logger.setLevel(livekit_level)
        asyncio.set_event_loop(None)
    return code, servers


def test_start_exits_1_once_the_worker_gives_up_reaching_livekit(monkeypatch, capsys) -> None:
    """livekit-agents logs "worker failed" and returns normally when its connection attempts run
    out: `python -m agent start` exited 0, so a supervisor that restarts on failure (systemd's
    Restart=on-failure, a job runner) took the dead worker for a clean stop."""
    closed = _free_port()  # nothing listens: each attempt is refused at once
    code, servers = _start_once(monkeypatch, f"ws://user:pw-not-shown@127.0.0.1:{closed}")
    assert servers and servers[0]._connection_failed  # the worker did try, and gave up
    assert code == 1
    err = capsys.readouterr().err
    assert f"error: the worker gave up connecting to LiveKit at ws://127.0.0.1:{closed}" in err, err
    assert "pw-not-shown" not in err


def test_livekit_log_level_in_dotenv_sets_the_workers_level(monkeypatch, tmp_path, capsys) -> None:
    """livekit's CLI reads LIVEKIT_LOG_LEVEL from the environment only: written in `.env`, where
    `.env.example` sends every setting, it was ignored and `start` went on logging INFO."""
    monkeypatch.delenv("LIVEKIT_LOG_LEVEL", raising=False)
    closed = _free_port()
    code, _ = _start_once(monkeypatch, f"ws://127.0.0.1:{closed}")
    assert code == 1
    assert '"starting worker"' in capsys.readouterr().out  # livekit's JSON log, at its default for start: INFO

    (tmp_path / ".env").write_text("LIVEKIT_LOG_LEVEL=error\n")  # the fixture made tmp_path the cwd
    code, servers = _start_once(monkeypatch, f"ws://127.0.0.1:{closed}")
    assert code == 1 and servers[0].log_level == "ERROR"
    out, err = capsys.readouterr()
    assert '"level": "INFO"' not in out and '"level": "WARNING"' not in out, out
    assert '"message": "worker failed", "level": "ERROR"' in out  # the level is set, not logging off
    assert "error: the worker gave up connecting to LiveKit" in err  # our own line still comes


def test_a_bad_livekit_log_level_is_named(monkeypatch, tmp_path, capsys) -> None:
    (tmp_path / ".env").write_text("LIVEKIT_LOG_LEVEL=loud\n")
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert "LIVEKIT_LOG_LEVEL: Value error, use one of trace, debug, info, warn, error, critical" in err, err


def test_log_level_comes_from_env_or_dotenv(monkeypatch, tmp_path) -> None:
    from agent.cli import log_level

    monkeypatch.delenv("AGENT_LOG_LEVEL", raising=False)
    assert log_level() == "WARNING"
    (tmp_path / ".env").write_text("AGENT_LOG_LEVEL=info\n")  # the fixture made tmp_path the cwd
    assert log_level() == "INFO"
    (tmp_path / ".env").write_text("agent_log_level=error\n")  # any case, as every other setting
    assert log_level() == "ERROR"
    monkeypatch.setenv("AGENT_LOG_LEVEL", "debug")
    assert log_level() == "DEBUG"  # the environment wins over .env


@pytest.mark.parametrize("engine", ["plugin", "native"])
def test_setup_loads_vad_once_per_process_with_turn_settings(engine: str) -> None:
    from livekit.agents import inference
    from livekit.plugins import silero

    s = settings(turn=TurnSettings(_env_file=None, vad_engine=engine, vad_activation_threshold=0.4))  # type: ignore[call-arg]
    server = define_voice_agent(s)
    setup = pickle.loads(pickle.dumps(server.setup_fnc))  # job processes receive it pickled
    proc = JobProcess(executor_type=JobExecutorType.THREAD, user_arguments=None, http_proxy=None)
    gc.unfreeze()
    try:
        setup(proc)
        # the heap built by setup is frozen: full collections no longer walk it mid-session
        assert gc.get_freeze_count() > 0
        assert allocator.pinned  # large blocks (VAD speech buffers) stay on mmap
    finally:
        gc.unfreeze()
    vad = proc.userdata["vad"]
    assert isinstance(vad, silero.VAD if engine == "plugin" else inference.VAD)
    assert vad._opts.min_silence_duration == pytest.approx(s.turn.vad_min_silence_duration)
    assert vad._opts.activation_threshold == pytest.approx(0.4)
    assert vad._opts.max_buffered_speech == pytest.approx(s.turn.vad_max_buffered_speech) == 300


@pytest.mark.parametrize(
    ("mode", "turn_mode", "preset", "expected"),
    [
        ("pipeline", "vad", None, "0"),  # nobody uses the end-of-turn weights: not preloaded
        ("realtime", "eou", None, "0"),
        ("pipeline", "eou", None, None),  # the adaptive detector does: livekit's default
        ("pipeline", "vad", "1", "1"),  # an operator's own choice stands
    ],
)
def test_worker_preloads_end_of_turn_weights_only_when_used(
    monkeypatch, mode: str, turn_mode: str, preset: str | None, expected: str | None
) -> None:
    from agent.worker import PRELOAD_LOCAL_INFERENCE

    monkeypatch.delenv(PRELOAD_LOCAL_INFERENCE, raising=False)
    if preset is not None:
        monkeypatch.setenv(PRELOAD_LOCAL_INFERENCE, preset)
    s = settings(mode=mode, turn=TurnSettings(_env_file=None, mode=turn_mode))  # type: ignore[call-arg]
    define_voice_agent(s, check=False)  # (realtime has no key here)
    assert os.environ.get(PRELOAD_LOCAL_INFERENCE) == expected


def _decoder_processes() -> list[int]:
    """This process's pocketsphinx worker children (the local STT's decoders)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == os.getpid() and b"providers._sphinx_worker" in cmdline:
                pids.append(int(proc.name))
    return pids


async def test_room_entrypoint_leaves_when_nobody_joins_and_closes_its_providers() -> None:
    from livekit.agents.ipc.mock_room import create_mock_room
    from livekit.agents.testing import fake_job_context

    from agent.worker import VoiceWorker

    room = create_mock_room()
    present = dict(room.remote_participants)
    room.remote_participants.clear()  # nobody comes (the mock rooms share this dict: put it back)
    worker = VoiceWorker(settings(greeting_mode="off", join_timeout=0.5))
    shutdowns: list[str] = []
    before = set(_decoder_processes())
    try:
        with fake_job_context(room=room) as ctx:
            worker.setup(ctx.proc)
            ctx.shutdown = lambda reason="": shutdowns.append(reason)  # type: ignore[method-assign]
            assert await asyncio.wait_for(worker.run_session(ctx), 30) is None
    finally:
        room.remote_participants.update(present)
    assert shutdowns == ["nobody joined"]
    # the local STT's prewarmed decoder process was closed with it, not left to the job's exit
    assert set(_decoder_processes()) <= before
    room.reset_mock()


async def test_a_job_that_fails_before_its_session_still_closes_its_speech_providers() -> None:
    """The prewarmed providers are closed at job shutdown even when the job fails between
    creating them and wiring the session (here: connecting to the room fails)."""
    from livekit.agents.ipc.mock_room import create_mock_room
    from livekit.agents.testing import fake_job_context

    from agent.worker import VoiceWorker

    room = create_mock_room()
    worker = VoiceWorker(settings(greeting_mode="off"))
    before = set(_decoder_processes())

    async def broken_connect(**_: object) -> None:
        for _ in range(300):  # fail once the prewarmed decoder process runs (a bound, not a goal)
            if set(_decoder_processes()) - before:
                break
            await asyncio.sleep(0.1)
        raise RuntimeError("signalling went away")

    with fake_job_context(room=room) as ctx:
        worker.setup(ctx.proc)
        ctx.connect = broken_connect  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="signalling went away"):
            await asyncio.wait_for(worker.run_session(ctx), 30)
        assert set(_decoder_processes()) - before, "the local STT was prewarmed"
        for callback in list(ctx._shutdown_callbacks):
            await callback("job failed")
    assert set(_decoder_processes()) <= before
    room.reset_mock()


async def test_room_entrypoint_on_livekits_mock_room() -> None:
    """The per-room entrypoint end to end on the mock room livekit-agents' console mode uses."""
    from livekit.agents.ipc.mock_room import create_mock_room
    from livekit.agents.testing import fake_job_context

    from agent.worker import VoiceWorker

    room = create_mock_room()
    worker = VoiceWorker(settings(greeting_mode="off"))
    shutdowns: list[str] = []
    with fake_job_context(room=room) as ctx:
        worker.setup(ctx.proc)
        ctx.shutdown = lambda reason="": shutdowns.append(reason)  # type: ignore[method-assign]
        voice = await asyncio.wait_for(worker.run_session(ctx), 30)
        try:
            assert voice is not None
            assert voice.conversation_id == room.name  # one conversation per room
            assert voice.tracker.user_id == "mock_user"  # the served participant
            # the bridge listens for client controls on the room, livekit's session host is off
            methods = [c.args[0] for c in room.local_participant.register_rpc_method.call_args_list]
            assert "voice-agent.control" in methods
            from livekit.agents.voice.remote_session import TOPIC_SESSION_MESSAGES

            topics = [c.args[0] for c in room.register_byte_stream_handler.call_args_list]
            assert TOPIC_SESSION_MESSAGES not in topics
            assert voice.session.agent_state == "listening"
            # livekit gathers a job's shutdown callbacks: one ordered callback closes the
            # session, then the speech providers and the brain (never concurrently)
            ours = [getattr(cb, "__qualname__", "") for cb in ctx._shutdown_callbacks if not cb.__module__.startswith("livekit")]
            assert ours == ["JobClosers.run"]
            await asyncio.gather(*(callback("job ended") for callback in ctx._shutdown_callbacks))
            assert voice.closed.is_set()
        finally:
            await voice.aclose()  # type: ignore[union-attr]
    assert shutdowns == [f"session closed: {voice.close_reason}"]
    room.reset_mock()  # the mock keeps every call's arguments (the whole session) alive


async def test_a_worker_shutdown_tells_clients_why_before_the_room_disconnects() -> None:
    """A worker shutting down (SIGTERM, its drain timeout over, a restart) closes each job's
    session: livekit closes it (`aclose`), runs the server's `on_session_end`, then disconnects
    the room, and only then the job's shutdown callbacks. Clients saw the agent leave, as after
    a crash: no envelope said the worker was going away, and the bridge's last ones (queued
    when the session closed) raced the disconnect. Now `session.ended` (`shutdown`) has been
    sent when the server's `on_session_end` returns, however long the link takes (within the
    bridge's flush timeout)."""
    from livekit.agents.ipc.mock_room import create_mock_room
    from livekit.agents.testing import fake_job_context

    s = settings(greeting_mode="off")
    server = define_voice_agent(s, check=False)
    on_session_end = server._session_end_fnc  # what livekit runs between the two
    assert on_session_end is not None
    room = create_mock_room()
    room.reset_mock()
    sends = room.local_participant.send_text
    present = dict(room.remote_participants)
    # keyed by identity, as `rtc.Room` does (the mock keys its user by sid: the bridge, which
    # addresses the identities present, would send it nothing)
    room.remote_participants.update({p.identity: p for p in present.values()})

    delivered: list[dict] = []

    async def send_text(text: str, **kwargs: object) -> None:
        envelope = json.loads(text)
        if envelope["type"] == "session.ended":
            await asyncio.sleep(0.5)  # a text stream takes round trips to the server (a slow link)
        if kwargs.get("topic") == "voice-agent.events":
            delivered.append(envelope)

    sends.side_effect = send_text

    with fake_job_context(room=room) as ctx:
        ctx.shutdown = lambda reason="": None  # type: ignore[method-assign]
        voice = await asyncio.wait_for(VoiceWorker(s).run_session(ctx), 30)
        assert voice is not None
        try:
            assert [e["type"] for e in await wait_until(lambda: list(delivered))] == ["session.hello"]
            await asyncio.wait_for(ctx._primary_agent_session.aclose(), 30)  # livekit's job shutdown
            await asyncio.wait_for(on_session_end(ctx), 30)
            out = list(delivered)  # what clients have when livekit disconnects the room, next
        finally:
            await voice.aclose()
            room.remote_participants.clear()  # the mock rooms share this dict: put it back
            room.remote_participants.update(present)
            sends.side_effect = None
    room.reset_mock()
    assert (out[-1]["type"], out[-1]["data"]) == ("session.ended", {"reason": "shutdown"}), out
    assert [e["seq"] for e in out] == list(range(1, len(out) + 1))


def test_an_unparsable_env_file_line_is_reported_once_by_number(tmp_path, capsys) -> None:
    """python-dotenv skips a line it cannot parse (a key on it is simply not set) and said so once
    per line per settings class, without the file; the CLI says it once, with the line numbers."""
    (tmp_path / ".env").write_text('BRAIN_MODEL=x\nthis is bad\nOPENAI_API_KEY="sk-unclosed\nAGENT_NAME=y\n')
    assert main(["doctor"]) == 0
    err = capsys.readouterr().err
    assert err.count("could not be parsed") == 1, err
    assert "warning: .env: lines 2, 3 could not be parsed and are ignored" in err
    assert "sk-unclosed" not in err


def test_a_dotenv_that_is_not_utf8_is_one_error_naming_the_line(tmp_path, capsys) -> None:
    """A `.env` saved in Latin-1 (an accent in a greeting) crashed every command with a
    UnicodeDecodeError traceback that named neither the file nor the line."""
    (tmp_path / ".env").write_bytes("AGENT_NAME=x\nAGENT_GREETING=Bonjour, ici le café\n".encode("latin-1"))
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: .env: line 2 is not UTF-8 text"), err
    assert "Traceback" not in err


def test_a_misspelt_variable_in_dotenv_is_named_with_the_one_meant(tmp_path, capsys) -> None:
    """`BRAIN_BAKEND=openai` in `.env` was silently ignored: the run used the offline brain and
    nothing said why. Names only this project uses are checked; others (OPENAI_ORG_ID) are not."""
    (tmp_path / ".env").write_text(
        "BRAIN_BAKEND=openai\nagent_greetng_mode=off\nAGENT_NAME=x\nagent_greeting=hi\nOPENAI_ORG_ID=org\n"
        "AGENT_EXTRAS=openai\nLOCAL_TTS_VOICE=en-gb\nWEB_ROOM_PREFIX=web-\nTURN_WHATEVER_THIS_IS=1\n"
    )
    assert main(["doctor"]) == 0
    err = capsys.readouterr().err
    assert "warning: .env: BRAIN_BAKEND is not a variable the agent reads (did you mean BRAIN_BACKEND?)" in err, err
    assert "agent_greetng_mode is not a variable the agent reads (did you mean AGENT_GREETING_MODE?)" in err
    assert "TURN_WHATEVER_THIS_IS is not a variable the agent reads; it has no effect unless" in err
    for fine in ("AGENT_NAME", "agent_greeting", "OPENAI_ORG_ID", "AGENT_EXTRAS", "LOCAL_TTS_VOICE", "WEB_ROOM_PREFIX"):
        assert f" {fine} is not" not in err
    assert err.count("warning:") == 3


def test_names_the_voice_config_file_does_not_hold_are_named(tmp_path, capsys, monkeypatch) -> None:
    """The TOML file of VOICE_CONFIG_FILE holds speech and realtime settings only: a misspelt
    name in it, or a BRAIN_* / TURN_* setting put there, was silently ignored."""
    import re

    monkeypatch.delenv("VOICE_CONFIG_FILE", raising=False)
    (tmp_path / ".env").write_text("VOICE_CONFIG_FILE=voice.toml\n")  # found through .env too
    (tmp_path / "voice.toml").write_text(
        'BRAIN_BACKEND = "offline"\nTURN_MODE = "vad"\n[local]\ntts_rat = 190\ntts_pitch = 40\n'
        '[realtime]\nprovider = "openai-realtime"\n'
    )
    assert main(["doctor"]) == 0
    err = capsys.readouterr().err
    assert ("warning: VOICE_CONFIG_FILE=voice.toml: LOCAL_TTS_RAT is not a speech or realtime setting "
            "(did you mean LOCAL_TTS_RATE?); it has no effect") in err, err
    assert "voice.toml: BRAIN_BACKEND is read from the environment and .env only, not from this file" in err
    assert "voice.toml: TURN_MODE is read from the environment and .env only" in err
    assert err.count("warning:") == 3  # LOCAL_TTS_PITCH and REALTIME_PROVIDER are read from it

    # the example of docs/providers.md is clean
    docs = (ROOT / "docs" / "providers.md").read_text()
    (tmp_path / "voice.toml").write_text(re.search(r"```toml\n(.*?)```", docs, re.S)[1])  # type: ignore[index]
    main(["doctor"])  # exit 1: its cartesia TTS has no key here
    assert "warning" not in capsys.readouterr().err


def test_the_example_dotenv_names_only_variables_the_agent_reads(tmp_path, capsys) -> None:
    import shutil

    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    assert main(["doctor"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_scheme_less_base_url_is_named_without_its_password(monkeypatch, capsys) -> None:
    """`error:` lines are printed, not logged: the log redaction never saw them."""
    monkeypatch.setenv("OPENAI_BASE_URL", "bob:hunter2pass@proxy.corp/v1")
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert "OPENAI_BASE_URL: Value error, '…@proxy.corp/v1' is not a URL" in err, err
    assert "hunter2pass" not in err
