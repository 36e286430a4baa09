"""Errors raised while reading speech-provider configuration."""

from __future__ import annotations


class ProviderConfigError(ValueError):
    """The speech-provider configuration cannot work: unknown name, missing key or extra.

    Raised at start-up (settings load / `create_stt` / `create_tts`), before any network use.
    Messages name the environment variable or the `pip install` command that fixes it; they
    never contain secret values.
    """
