"""Local fake provider servers (127.0.0.1, random port) for offline tests and benchmarks."""

from .gemini_server import FakeGeminiServer
from .openai_server import FakeOpenAIServer
from .scripted import (
    Chunk,
    Close,
    Hold,
    HttpError,
    Raw,
    RecordedRequest,
    ScriptedServer,
    Sleep,
    Stream,
)

__all__ = [
    "Chunk", "Close", "FakeGeminiServer", "FakeOpenAIServer", "Hold", "HttpError", "Raw",
    "RecordedRequest", "ScriptedServer", "Sleep", "Stream",
]
