"""The C allocator's settings for a worker process.

Each Silero VAD stream allocates one buffer for the longest speech it keeps
(`TURN_VAD_MAX_BUFFERED_SPEECH` x the input rate: 9 MiB for 300 s at 16 kHz), two streams per
session with a non-streaming STT. glibc serves such blocks with mmap at first, but raises its
threshold (up to 32 MiB) once one is freed; later buffers then come from the heap, and the pages
a session wrote speech into stay resident after it ends. The soak measured +37 % RSS from session
100 to 1,000 that way (RELIABILITY.md). Pinning the threshold keeps big blocks on mmap, so each
is returned to the system when its stream closes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("agent.worker")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 1 << 20  # 1 MiB: audio frames stay on the heap, speech buffers do not

pinned = False


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve every allocation above `threshold` bytes with mmap. False where libc is not glibc."""
    global pinned
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no glibc mallopt here; the allocator keeps its defaults")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    pinned = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    return pinned
