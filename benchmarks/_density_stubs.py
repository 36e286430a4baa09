"""Zero-latency speech stand-ins shared by the density benchmark and the soak.

`FixedSTT` is a batch STT that "recognises" every VAD segment at once as the same words (not
streaming, so livekit-agents drives it with the VAD: two Silero streams per session, as with
any non-streaming STT). `InstantTTS` answers every synthesis at once with silence whose length
follows the text (`seconds_per_word`), so playback takes as long as speech would.
"""

from __future__ import annotations

from livekit.agents import APIConnectOptions, NotGivenOr, stt, tts, utils
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN
from livekit.agents.utils import AudioBuffer

TTS_RATE = 16_000


class FixedSTT(stt.STT):
    def __init__(self, text: str = "so tell me more about that") -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._text = text
        self.calls = 0

    @property
    def model(self) -> str:
        return "fixed"

    @property
    def provider(self) -> str:
        return "stub"

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        self.calls += 1
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=self._text, confidence=1.0)],
        )


class InstantTTS(tts.TTS):
    def __init__(self, *, seconds_per_word: float = 0.3, sample_rate: int = TTS_RATE) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=sample_rate, num_channels=1
        )
        self.seconds_per_word = seconds_per_word
        self.calls = 0

    @property
    def model(self) -> str:
        return "instant"

    @property
    def provider(self) -> str:
        return "stub"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        self.calls += 1
        return _InstantStream(tts=self, input_text=text, conn_options=conn_options)


class _InstantStream(tts.ChunkedStream):
    def __init__(self, *, tts: InstantTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._instant = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        t = self._instant
        output_emitter.initialize(
            request_id=utils.shortuuid(), sample_rate=t.sample_rate, num_channels=1, mime_type="audio/pcm"
        )
        words = max(1, len(self.input_text.split()))
        samples = int(words * t.seconds_per_word * t.sample_rate)
        output_emitter.push(bytes(2 * samples))
        output_emitter.flush()
