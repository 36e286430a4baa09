"""ctypes binding to the libespeak-ng shipped by `espeakng_loader`.

espeak-ng keeps its state (voice, rate, output buffer, callback) in process globals and is not
thread-safe, so every call goes through one dedicated worker thread owned by `EspeakEngine`.
That single thread is the serialisation; the lock only guards creating it.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import espeakng_loader

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth blocks and hands samples to the synth callback
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # keep the sentence-final pause, so per-sentence audio joins naturally
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_BUFFER_MS = 100  # size of the chunks the callback receives

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Voice(ctypes.Structure):
    """espeak_VOICE, used to select a voice by language code (e.g. "en-gb", "pt-br")."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class EspeakError(RuntimeError):
    """libespeak-ng could not be loaded or refused a request."""


@dataclass(frozen=True)
class VoiceParams:
    voice: str = "en-us"
    rate: int = 175  # words per minute, espeak accepts 80..450
    pitch: int = 50  # 0..100


_UNSPEAKABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def speakable(text: str) -> str:
    """`text` as espeak-ng can take it: control characters (a NUL would end the text there) become
    spaces, and what is not valid Unicode (a lone surrogate, half an emoji) becomes '?'."""
    text = _UNSPEAKABLE.sub(" ", text)
    return text.encode("utf-8", "replace").decode("utf-8")


def _variant_exists(voice: str) -> bool:
    """Whether espeak-ng has the `+variant` of `voice` (True without one). espeak-ng itself
    ignores a variant it has no file for and speaks the plain voice, so a misspelt one (or one
    in the wrong case: the files are `Annie`, `f3`, ...) would pass unnoticed. As in espeak-ng,
    a number is a numbered variant: `+3` is `m3`, `+13` is `f3`."""
    _, plus, variant = voice.partition("+")
    if not plus:
        return True
    number = re.match(r"\d+", variant)
    if number:
        n = int(number.group())
        if n == 0:
            return True  # no variant
        variant = f"m{n}" if n < 10 else f"f{n - 10}"
    if not variant or "/" in variant or variant.startswith("."):
        return False
    return os.path.isfile(os.path.join(espeakng_loader.get_data_path(), "voices", "!v", variant))


class EspeakEngine:
    """Process-wide espeak-ng instance. Use `EspeakEngine.shared()`."""

    _shared: EspeakEngine | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak-ng")
        self._lib: ctypes.CDLL | None = None
        self._sample_rate = 0
        self._current: VoiceParams | None = None
        self._chunks: list[bytes] = []
        self._stop: threading.Event | None = None
        # keep a reference: the C library holds a raw pointer to this trampoline
        self._callback = _SynthCallback(self._on_samples)

    @classmethod
    def shared(cls) -> EspeakEngine:
        with cls._shared_lock:
            # a forked child inherits the object but not the worker thread: start afresh
            if cls._shared is None or cls._shared._pid != os.getpid():
                cls._shared = cls()
            return cls._shared

    # --- public API (any thread / event loop) ---

    @property
    def sample_rate(self) -> int:
        """Output rate reported by espeak_Initialize (22,050 Hz for the bundled data)."""
        return self._call(self._ensure_initialized).result()

    def has_voice(self, voice: str) -> bool:
        return self._call(self._try_voice, voice).result()

    def synthesize_blocking(self, text: str, params: VoiceParams) -> bytes:
        return self._call(self._synthesize, text, params, threading.Event()).result()

    async def synthesize(self, text: str, params: VoiceParams) -> bytes:
        """16-bit little-endian mono PCM at `sample_rate`. Cancelling stops espeak at its next
        audio block, so a dropped long sentence does not hold up the next synthesis."""
        stop = threading.Event()
        try:
            return await asyncio.wrap_future(self._call(self._synthesize, text, params, stop))
        except asyncio.CancelledError:
            stop.set()
            raise

    # --- worker thread only ---

    def _call(self, fn: Any, *args: Any) -> Future[Any]:
        return self._executor.submit(fn, *args)

    def _ensure_initialized(self) -> int:
        if self._lib is not None:
            return self._sample_rate
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as e:
            raise EspeakError(f"cannot load libespeak-ng: {e}") from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate})")
        lib.espeak_SetSynthCallback(self._callback)
        self._lib, self._sample_rate = lib, rate
        return rate

    def _on_samples(self, wav: Any, num_samples: int, _events: Any) -> int:
        if self._stop is not None and self._stop.is_set():
            return 1  # 1 = abort this synthesis (its caller is gone)
        if wav and num_samples > 0:
            self._chunks.append(ctypes.string_at(wav, num_samples * 2))
        return 0  # 0 = continue

    def _select_voice(self, voice: str) -> bool:
        """By voice name / file (e.g. "en-us", "gmw/en"), else by language code ("en-gb")."""
        assert self._lib is not None
        self._current = None  # the active voice may change: re-apply parameters next time
        if not _variant_exists(voice):
            return False
        if self._lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK:
            return True
        spec = _Voice(languages=voice.lower().encode())
        return bool(self._lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) == _EE_OK)

    def _try_voice(self, voice: str) -> bool:
        self._ensure_initialized()
        return self._select_voice(voice)

    def _apply(self, params: VoiceParams) -> None:
        assert self._lib is not None
        if self._current == params:
            return
        if not self._select_voice(params.voice):
            raise EspeakError(f"espeak-ng voice not found: {params.voice!r}")
        self._lib.espeak_SetParameter(_PARAM_RATE, params.rate, 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, params.pitch, 0)
        self._current = params

    def _synthesize(self, text: str, params: VoiceParams, stop: threading.Event) -> bytes:
        self._ensure_initialized()
        assert self._lib is not None
        self._apply(params)
        data = speakable(text).encode("utf-8") + b"\0"
        self._chunks, self._stop = [], stop
        try:
            err = self._lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
        finally:
            self._stop = None
        if stop.is_set():
            self._chunks = []
            return b""
        if err != _EE_OK:
            raise EspeakError(f"espeak_Synth failed ({err})")
        pcm, self._chunks = b"".join(self._chunks), []
        return pcm
