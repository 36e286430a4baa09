"""docker-compose.yml, livekit.yaml and .env.example checked without a Docker engine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from agent.tokens import TokenSettings
from agent.web import WebSettings, _parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
LIVEKIT_CONF: dict[str, Any] = yaml.safe_load((ROOT / "livekit.yaml").read_text())

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+]([^}]*))?\}")
# Variables livekit-server itself reads inside its container, built from .env variables.
LIVEKIT_SERVER_ENV = {"LIVEKIT_KEYS", "NODE_IP"}


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2)
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose-style `${VAR}` / `${VAR:-default}` substitution."""

    def sub(m: re.Match[str]) -> str:
        return env.get(m.group(1)) or (m.group(2) or "")

    return INTERPOLATION.sub(sub, value)


def published(service: dict[str, Any]) -> list[tuple[str, int, int, str]]:
    """(host ip, host port, container port, protocol) for each published port."""
    out = []
    for spec in service.get("ports", []):
        spec = interpolate(str(spec), {})
        proto = "tcp"
        if "/" in spec:
            spec, proto = spec.rsplit("/", 1)
        parts = spec.split(":")
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        out.append((host_ip, int(parts[-2]), int(parts[-1]), proto))
    return out


def test_compose_parses_with_the_three_services() -> None:
    assert set(SERVICES) == {"livekit", "agent", "web"}
    assert "version" not in COMPOSE  # obsolete key; compose v2 warns about it


def test_every_interpolated_variable_is_in_env_example() -> None:
    documented = env_example()
    used = set(INTERPOLATION.findall(COMPOSE_TEXT))
    names = {name for name, _ in used}
    assert names, "compose file should take its settings from .env"
    missing = sorted(names - set(documented))
    assert not missing, f"add to .env.example: {missing}"
    # no bare $VAR (compose would interpolate it silently)
    assert not re.search(r"\$(?![{$])", COMPOSE_TEXT)


def test_every_service_variable_is_in_env_example() -> None:
    documented = set(env_example())
    for name in ("agent", "web"):
        env = SERVICES[name].get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form for environment"
        missing = sorted(set(env) - documented)
        assert not missing, f"{name} sets {missing}, not in .env.example"
    assert set(SERVICES["livekit"]["environment"]) == LIVEKIT_SERVER_ENV


def test_every_web_and_token_setting_is_in_env_example() -> None:
    documented = set(env_example())
    token_vars = {
        alias
        for field in TokenSettings.model_fields.values()
        for alias in getattr(field.validation_alias, "choices", [])
    }
    web_vars = {f"WEB_{name.upper()}" for name in WebSettings.model_fields}
    missing = sorted((token_vars | web_vars) - documented)
    assert not missing, f"add to .env.example: {missing}"


def test_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        if "image" in service:
            image = service["image"]
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", image), (
                f"{name}: pin an exact version, not {image!r}"
            )
        else:
            assert service["build"]["context"] == "."
            assert service["build"]["target"] in {"agent", "web"}
    assert SERVICES["livekit"]["image"].startswith("livekit/livekit-server:")


def test_agent_command_matches_the_cli() -> None:
    assert SERVICES["agent"]["command"] == ["python", "-m", "agent", "start"]
    web_cmd = SERVICES["web"]["command"]
    assert web_cmd[:4] == ["python", "-m", "agent", "web"]
    args = _parser().parse_args(web_cmd[4:])
    assert args.host == "0.0.0.0"
    assert [p[2] for p in published(SERVICES["web"])] == [args.port]


def test_cli_offers_the_compose_and_dockerfile_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for command in ("start", "web", "token", "download-files"):
        assert command in out.stdout, f"`python -m agent {command}` is used by the deployment"


def test_published_ports_do_not_collide() -> None:
    seen: dict[tuple[int, str], str] = {}
    for name, service in SERVICES.items():
        for _, host_port, _, proto in published(service):
            key = (host_port, proto)
            assert key not in seen, f"{name} and {seen[key]} both publish {host_port}/{proto}"
            seen[key] = name
    assert seen, "the stack publishes ports"


def test_published_ports_with_env_example_values_do_not_collide() -> None:
    env = env_example()
    ports = []
    for service in SERVICES.values():
        for spec in service.get("ports", []):
            spec = interpolate(str(spec), env)
            proto = spec.rsplit("/", 1)[1] if "/" in spec else "tcp"
            ports.append((int(spec.split("/")[0].split(":")[-2]), proto))
    assert len(ports) == len(set(ports)), ports


def test_livekit_ports_match_its_config() -> None:
    container_ports = {(c, proto) for _, _, c, proto in published(SERVICES["livekit"])}
    assert container_ports == {
        (LIVEKIT_CONF["port"], "tcp"),
        (LIVEKIT_CONF["rtc"]["tcp_port"], "tcp"),
        (LIVEKIT_CONF["rtc"]["udp_port"], "udp"),
    }
    # media ports are advertised in ICE candidates: host and container numbers must agree
    for _, host, container, _ in published(SERVICES["livekit"]):
        assert host == container
    assert "keys" not in LIVEKIT_CONF, "keys come from .env via LIVEKIT_KEYS, not a committed file"
    mount = SERVICES["livekit"]["volumes"][0]
    assert mount.startswith("./livekit.yaml:") and mount.endswith(":ro")
    assert SERVICES["livekit"]["command"] == ["--config", mount.split(":")[1]]


def test_one_key_pair_for_server_and_clients() -> None:
    env = env_example()
    keys = interpolate(SERVICES["livekit"]["environment"]["LIVEKIT_KEYS"], env)
    for name in ("agent", "web"):
        service_env = SERVICES[name]["environment"]
        pair = f"{interpolate(service_env['LIVEKIT_API_KEY'], env)}: {interpolate(service_env['LIVEKIT_API_SECRET'], env)}"
        assert pair == keys
        # also without a .env at all (the compose defaults)
        bare = f"{interpolate(service_env['LIVEKIT_API_KEY'], {})}: {interpolate(service_env['LIVEKIT_API_SECRET'], {})}"
        assert bare == interpolate(SERVICES["livekit"]["environment"]["LIVEKIT_KEYS"], {})
    secret = interpolate(SERVICES["agent"]["environment"]["LIVEKIT_API_SECRET"], {})
    assert len(secret) >= 32 and secret.isascii()  # livekit-server warns below 32
    assert yaml.safe_load(keys) == {env["LIVEKIT_API_KEY"]: env["LIVEKIT_API_SECRET"]}


def test_workers_scale_out() -> None:
    agent = SERVICES["agent"]
    # `--scale agent=3`: no fixed name, no published port, nothing per-instance
    assert "container_name" not in agent and "ports" not in agent and "volumes" not in agent
    assert agent["environment"]["LIVEKIT_URL"] == f"ws://livekit:{LIVEKIT_CONF['port']}"
    assert agent["environment"]["AGENT_NAME"] == SERVICES["web"]["environment"]["AGENT_NAME"]
    assert agent["depends_on"]["livekit"]["condition"] == "service_healthy"
    assert agent["env_file"] == [{"path": ".env", "required": False}]
    assert "healthcheck" in SERVICES["livekit"]


def test_browser_url_points_at_the_published_signalling_port() -> None:
    url = interpolate(SERVICES["web"]["environment"]["LIVEKIT_PUBLIC_URL"], {})
    host_port = next(h for _, h, c, _ in published(SERVICES["livekit"]) if c == LIVEKIT_CONF["port"])
    assert url == f"ws://localhost:{host_port}"
    assert env_example()["LIVEKIT_PUBLIC_URL"] == url


def test_ports_listen_on_this_machine_only_until_told_otherwise() -> None:
    """The compose defaults carry a committed dev secret: with no .env, nothing may be reachable
    from other machines (anyone could sign LiveKit tokens with it)."""
    for name, service in SERVICES.items():
        for host_ip, _, _, _ in published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip} by default"
    assert env_example()["BIND_ADDRESS"] == "127.0.0.1"
    exposed = {"BIND_ADDRESS": "0.0.0.0"}
    for service in SERVICES.values():
        for spec in service.get("ports", []):
            assert interpolate(str(spec), exposed).startswith("0.0.0.0:")


def test_the_web_endpoint_is_locked_down_by_default() -> None:
    web_env = SERVICES["web"]["environment"]
    assert interpolate(web_env["WEB_ROOM_PREFIX"], {}) == "web-" == env_example()["WEB_ROOM_PREFIX"]
    assert int(interpolate(web_env["WEB_TOKENS_PER_MINUTE"], {})) > 0
    assert int(interpolate(web_env["ROOM_MAX_PARTICIPANTS"], {})) > 0


def test_stopping_a_worker_leaves_running_calls_their_drain_time() -> None:
    from agent.config import AgentSettings

    grace = interpolate(SERVICES["agent"]["stop_grace_period"], {})
    assert grace.endswith("s")
    drain = AgentSettings.model_fields["drain_timeout"].default
    assert int(grace[:-1]) > drain == int(env_example()["AGENT_DRAIN_TIMEOUT"])
