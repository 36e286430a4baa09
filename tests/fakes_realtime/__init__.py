"""Offline fakes for realtime mode: an OpenAI Realtime server and room-less audio I/O."""

from .audio_io import ClockedAudioSink, QueueAudioInput, frames_of, read_wav
from .openai_realtime_server import Calls, CallTool, Fail, FakeRealtimeServer, Say, tone

__all__ = [
    "CallTool", "Calls", "ClockedAudioSink", "Fail", "FakeRealtimeServer", "QueueAudioInput", "Say", "frames_of",
    "read_wav", "tone",
]
