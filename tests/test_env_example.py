"""`.env.example` is complete and usable as it is: copied to `.env`, every settings object loads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from agent.config import AgentSettings
from agent.tokens import TokenSettings
from agent.turns import TurnSettings
from agent.web import WebSettings
from brain import BrainConfig
from bridge.config import BridgeConfig
from providers import SpeechSettings
from providers.realtime import RealtimeSettings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = (ROOT / ".env.example").read_text()
DOCUMENTED = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", EXAMPLE, re.M))


def _env_names(cls: type[BaseSettings]) -> list[str]:
    prefix = cls.model_config.get("env_prefix", "")
    names: list[str] = []
    for name, field in cls.model_fields.items():
        ann = field.annotation
        if ann is Any or (isinstance(ann, type) and issubclass(ann, BaseSettings)):
            continue  # nested settings object, documented by its own class
        if cls is SpeechSettings and name == "provider_env":
            continue  # the providers' own variables (test_providers_config checks those)
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.append(str(alias.choices[0]).upper())
        elif isinstance(alias, str):
            names.append(alias.upper())
        else:
            names.append((prefix + name).upper())
    return names


@pytest.mark.parametrize(
    "cls",
    [BrainConfig, BridgeConfig, TurnSettings, AgentSettings, SpeechSettings, RealtimeSettings, TokenSettings, WebSettings],
)
def test_every_variable_is_documented(cls: type[BaseSettings]) -> None:
    missing = [n for n in _env_names(cls) if n not in DOCUMENTED]
    assert missing == [], f"{cls.__name__} reads variables .env.example does not document: {missing}"


def test_every_documented_variable_is_read() -> None:
    """The other direction: a variable left in `.env.example` after its setting went (or
    misspelt there) is one a user sets for nothing."""
    from agent.config import known_variables

    compose = (ROOT / "docker-compose.yml").read_text()
    readers = known_variables() | {"VOICE_CONFIG_FILE"} | set(re.findall(r"\$\{([A-Z0-9_]+)", compose))
    assert sorted(DOCUMENTED - readers) == []


def test_the_example_copied_to_dotenv_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    monkeypatch.chdir(tmp_path)
    settings = AgentSettings()
    assert BrainConfig().backend == "offline"
    assert BrainConfig().temperature is None  # `BRAIN_TEMPERATURE=` means "provider default"
    SpeechSettings()
    RealtimeSettings()
    TurnSettings()
    BridgeConfig()
    assert "sk-" not in repr(settings)
