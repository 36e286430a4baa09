"""The Dockerfile, linted by parsing it (no Docker engine here): stages, base images, user,
health checks, command. Its embedded scripts (requirements from pyproject, the health checks)
are run for real against local servers."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@dataclass
class Instruction:
    op: str
    args: str
    heredoc: str | None = None

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD / HEALTHCHECK CMD."""
        import json

        text = self.args
        if self.op == "HEALTHCHECK":
            text = text[text.index("CMD") + 3 :]
        return list(json.loads(text.strip()))


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def ops(self, op: str) -> list[Instruction]:
        return [i for i in self.instructions if i.op == op]


def parse(text: str) -> tuple[dict[str, str], list[Stage], str]:
    """(global ARG defaults, stages, syntax directive) of a Dockerfile."""
    lines = text.splitlines()
    syntax = ""
    if lines and lines[0].startswith("# syntax="):
        syntax = lines[0].split("=", 1)[1]
    args: dict[str, str] = {}
    stages: list[Stage] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#"):
                continue
            line = line[:-1] + " " + nxt.strip()
        op, _, rest = line.strip().partition(" ")
        op = op.upper()
        heredoc = None
        m = re.search(r"<<-?'?(\w+)'?", rest)
        if m:
            body = []
            while lines[i] != m.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            heredoc = "\n".join(body)
        inst = Instruction(op, rest.strip(), heredoc)
        if op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda mm: args.get(mm.group(1), mm.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif op == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append(inst)
    return args, stages, syntax


ARGS, STAGES, SYNTAX = parse(DOCKERFILE)
BY_NAME = {s.name: s for s in STAGES}


def test_multi_stage_with_agent_as_default_target() -> None:
    assert [s.name for s in STAGES] == ["web-deps", "builder", "runtime", "web", "agent"]
    assert STAGES[-1].name == "agent", "plain `docker build .` must give the worker"
    targets = {svc["build"]["target"] for svc in COMPOSE["services"].values() if "build" in svc}
    assert targets <= set(BY_NAME)


def test_base_images_and_syntax_are_pinned() -> None:
    assert re.fullmatch(r"docker/dockerfile:\d+\.\d+", SYNTAX)
    for stage in STAGES:
        if stage.base in BY_NAME:  # FROM an earlier stage
            continue
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-[\w-]+(@sha256:[0-9a-f]{64})?", stage.base), stage.base
    assert BY_NAME["builder"].base.startswith("python:3.11.")
    assert BY_NAME["runtime"].base == BY_NAME["builder"].base  # same Python ABI for the copied venv


def test_final_stages_run_as_a_non_root_user() -> None:
    runtime = BY_NAME["runtime"]
    useradd = " ".join(i.args for i in runtime.ops("RUN") if "useradd" in i.args)
    uid = re.search(r"--uid (\d+)", useradd)
    user = re.search(r"useradd .* (\w+)$", useradd.split("&&")[1].strip())
    assert uid and int(uid.group(1)) >= 1000 and user
    for name in ("web", "agent"):
        users = [i.args for i in BY_NAME[name].ops("USER")]
        assert users == [user.group(1)], f"{name}: USER {users}"
        # nothing after USER needs root
        after = BY_NAME[name].instructions[[i.op for i in BY_NAME[name].instructions].index("USER") :]
        assert not [i for i in after if i.op == "RUN"]


def test_agent_command_and_health_check() -> None:
    agent = BY_NAME["agent"]
    assert agent.ops("CMD")[-1].exec_form() == COMPOSE["services"]["agent"]["command"]
    assert agent.ops("CMD")[-1].exec_form() == ["python", "-m", "agent", "start"]
    (health,) = agent.ops("HEALTHCHECK")
    assert "8081" in health.args and health.exec_form()[0] == "python"
    web_stage = BY_NAME["web"]
    assert web_stage.ops("CMD")[-1].exec_form()[:4] == ["python", "-m", "agent", "web"]
    assert "/healthz" in web_stage.ops("HEALTHCHECK")[0].args


def test_health_port_is_the_workers_default() -> None:
    from agent.config import AgentSettings

    assert AgentSettings.model_fields["http_port"].default == 8081


def test_dependencies_come_from_pyproject_and_models_are_fetched_at_build_time() -> None:
    builder = BY_NAME["builder"]
    runs = [i.args for i in builder.ops("RUN")]
    assert any(r.startswith("pip install -r /tmp/requirements.txt") for r in runs)
    assert any(r.startswith("pip install --no-deps .") for r in runs)
    assert any("python -m agent download-files" in r for r in runs)
    # the runtime gets the venv and the model directory, and refuses run-time model downloads
    copies = [i.args for i in BY_NAME["runtime"].ops("COPY")]
    assert "--from=builder /opt/venv /opt/venv" in copies
    assert "--from=builder /opt/models /opt/models" in copies
    env = " ".join(i.args for i in BY_NAME["runtime"].ops("ENV"))
    assert "HF_HUB_OFFLINE=1" in env
    # the page gets livekit-client from `npm ci` against the committed lock file
    web_deps = BY_NAME["web-deps"]
    assert any("package-lock.json" in i.args for i in web_deps.ops("COPY"))
    assert any(i.args.startswith("npm ci --omit=dev") for i in web_deps.ops("RUN"))


def test_requirements_script_reads_pyproject() -> None:
    (script,) = [i.heredoc for i in BY_NAME["builder"].ops("RUN") if i.heredoc]
    assert script is not None
    out = subprocess.run(
        [sys.executable, "-"],
        input=script,
        cwd=ROOT,
        env={**os.environ, "EXTRAS": "openai"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert out == project["dependencies"] + project["optional-dependencies"]["openai"]
    assert all(re.search(r"[~<>=]", req) for req in out), "every requirement has a version range"


def test_copied_paths_exist_and_are_not_dockerignored() -> None:
    ignore = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    assert ".env" in ignore and ".venv" in ignore and ".git" in ignore
    for stage in STAGES:
        for inst in stage.ops("COPY"):
            if inst.args.startswith("--from"):
                continue
            *sources, _dest = shlex.split(inst.args)
            for src in sources:
                src = src if stage.name != "web-deps" or "/" in src else f"web/{src}"
                assert (ROOT / src).exists(), f"COPY {src}: missing"
                for pattern in ignore:
                    if pattern.startswith("!"):
                        continue
                    hit = fnmatch.fnmatch(src, pattern) or src.startswith(pattern.rstrip("/") + "/")
                    assert not hit, f"COPY {src} is excluded by .dockerignore pattern {pattern}"


def _run_health(inst: Instruction, env: dict[str, str]) -> int:
    cmd = inst.exec_form()
    assert cmd[0] == "python"
    return subprocess.run(
        [sys.executable, *cmd[1:]], env={**os.environ, **env}, capture_output=True, timeout=30
    ).returncode


async def test_health_checks_pass_on_a_healthy_server_and_fail_otherwise() -> None:
    status = {"code": 200}

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=status["code"], text="OK")

    app = web.Application()
    app.router.add_get("/", health)
    app.router.add_get("/healthz", health)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        port = str(server.port)
        agent_check = BY_NAME["agent"].ops("HEALTHCHECK")[0]
        web_check = BY_NAME["web"].ops("HEALTHCHECK")[0]
        assert await asyncio.to_thread(_run_health, agent_check, {"AGENT_HTTP_PORT": port}) == 0
        assert await asyncio.to_thread(_run_health, web_check, {"WEB_PORT": port}) == 0
        status["code"] = 503  # e.g. the worker lost its LiveKit connection
        assert await asyncio.to_thread(_run_health, agent_check, {"AGENT_HTTP_PORT": port}) != 0
    finally:
        await server.close()
    # nothing listening
    assert await asyncio.to_thread(_run_health, agent_check, {"AGENT_HTTP_PORT": port}) != 0


def test_images_and_the_dev_venv_install_the_tested_versions() -> None:
    """constraints.txt pins every dependency pyproject.toml declares, within its range; the
    Dockerfile and `make` install with it, so images run what CI tested."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    root = Path(__file__).resolve().parents[1]
    pins = {}
    for line in (root / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    for line in declared:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt (make lock)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside {req.specifier}"
    dockerfile = (root / "Dockerfile").read_text()
    assert "constraints.txt" in dockerfile and "-c constraints.txt" in dockerfile
    assert '-c constraints.txt' in (root / "Makefile").read_text()
