"""The pocketsphinx decoder in its own process: `python -m providers._sphinx_worker OPTIONS_JSON`.

pocketsphinx holds the GIL for the whole of `process_raw`; in a thread it would freeze the event
loop (and Silero VAD with it) for as long as an utterance takes to decode. The worker imports
nothing but pocketsphinx, and speaks a tiny framed protocol on stdin / stdout:
request = 4-byte big-endian length + 16 kHz mono PCM16; reply = 4-byte length + UTF-8 text.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import IO, Any

HEADER = struct.Struct(">I")


def read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: IO[bytes], body: bytes) -> None:
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def decode(decoder: Any, pcm: bytes) -> str:
    if not pcm:
        return ""
    decoder.reinit_feat()  # reset CMN / noise estimates so results do not drift per call
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr.strip() if hyp is not None else ""


def main() -> int:
    import pocketsphinx

    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    decoder = pocketsphinx.Decoder(**options)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    write_frame(stdout, b"ready")
    while (pcm := read_frame(stdin)) is not None:
        write_frame(stdout, decode(decoder, pcm).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
