"""Offline TTS `local`: espeak-ng (bundled by `espeakng_loader`), 22,050 Hz mono.

Text is split into sentences with livekit's basic sentence tokenizer; each sentence is
synthesised on espeak's worker thread and its audio is emitted as soon as it is ready, so the
first sentence plays while the LLM is still producing the rest. Each sentence's first frame
carries a sentence-level `TimedString` (start/end in seconds) in its userdata.
"""

from __future__ import annotations

import asyncio

from livekit.agents import APIConnectionError, APIError, tokenize, tts, utils
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectOptions,
    TimedString,
)

from ._espeak import EspeakEngine, EspeakError, VoiceParams

SAMPLE_RATE = 22_050
NUM_CHANNELS = 1


class LocalTTS(tts.TTS):
    """espeak-ng speech synthesis, fully offline."""

    def __init__(
        self,
        *,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        sentence_tokenizer: tokenize.SentenceTokenizer | None = None,
        engine: EspeakEngine | None = None,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True),
            sample_rate=SAMPLE_RATE,
            num_channels=NUM_CHANNELS,
        )
        if not 80 <= rate <= 450:
            raise ValueError(f"espeak-ng rate must be 80..450 words per minute, got {rate}")
        if not 0 <= pitch <= 100:
            raise ValueError(f"espeak-ng pitch must be 0..100, got {pitch}")
        self._engine = engine or EspeakEngine.shared()
        if self._engine.sample_rate != SAMPLE_RATE:
            raise EspeakError(f"unexpected espeak-ng sample rate {self._engine.sample_rate}")
        if not self._engine.has_voice(voice):
            raise ValueError(
                f"espeak-ng voice not found: {voice!r} (try en-us, en-gb, de, fr, es, it)"
            )
        self._params = VoiceParams(voice=voice, rate=rate, pitch=pitch)
        self._tokenizer = sentence_tokenizer or tokenize.basic.SentenceTokenizer()

    @property
    def model(self) -> str:
        return "espeak-ng"

    @property
    def provider(self) -> str:
        return "local"

    @property
    def voice(self) -> VoiceParams:
        return self._params

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _LocalChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.SynthesizeStream:
        return _LocalSynthesizeStream(tts=self, conn_options=conn_options)

    async def _speak(self, sentence: str, emitter: tts.AudioEmitter, offset: float) -> float:
        """Synthesise one sentence into `emitter`; returns the new audio offset in seconds."""
        try:
            pcm = await self._engine.synthesize(sentence, self._params)
        except EspeakError as e:
            raise APIConnectionError(f"espeak-ng failed: {e}", retryable=False) from e
        except (asyncio.CancelledError, APIError):
            raise
        except Exception as e:  # anything else is a failure the session must hear about, not a log line
            raise APIConnectionError(f"espeak-ng failed: {type(e).__name__}: {e}", retryable=False) from e
        if not pcm:
            return offset
        end = offset + len(pcm) / 2 / SAMPLE_RATE
        emitter.push_timed_transcript(TimedString(sentence, start_time=offset, end_time=end))
        emitter.push(pcm)
        emitter.flush()  # release this sentence's audio now, do not wait for the next one
        return end


class _LocalChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: LocalTTS, input_text: str, conn_options: APIConnectOptions):
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._local = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=SAMPLE_RATE,
            num_channels=NUM_CHANNELS,
            mime_type="audio/pcm",
        )
        offset = 0.0
        for sentence in self._local._tokenizer.tokenize(self.input_text):
            if sentence.strip():
                offset = await self._local._speak(sentence, output_emitter, offset)


class _LocalSynthesizeStream(tts.SynthesizeStream):
    def __init__(self, *, tts: LocalTTS, conn_options: APIConnectOptions):
        super().__init__(tts=tts, conn_options=conn_options)
        self._local = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=SAMPLE_RATE,
            num_channels=NUM_CHANNELS,
            mime_type="audio/pcm",
            stream=True,
        )
        # one sentence stream per flush-delimited segment, consumed in order
        segments: utils.aio.Chan[tokenize.SentenceStream] = utils.aio.Chan()

        async def _split_input() -> None:
            current: tokenize.SentenceStream | None = None
            async for data in self._input_ch:
                if isinstance(data, str):
                    if current is None:
                        current = self._local._tokenizer.stream()
                        segments.send_nowait(current)
                    current.push_text(data)
                elif current is not None:  # flush: close the segment
                    current.end_input()
                    current = None
            if current is not None:
                current.end_input()
            segments.close()

        async def _speak_segments() -> None:
            async for sentences in segments:
                output_emitter.start_segment(segment_id=utils.shortuuid())
                offset = 0.0
                async for token in sentences:
                    if token.token.strip():
                        self._mark_started()
                        offset = await self._local._speak(token.token, output_emitter, offset)
                output_emitter.end_segment()

        tasks = [asyncio.create_task(_split_input()), asyncio.create_task(_speak_segments())]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
