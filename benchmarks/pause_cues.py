"""What each pause in the shared recordings looks like to an end-of-turn rule.

For every pause of at least `--min-pause` seconds between the reference speech segments of
`../shared/audio/turns.json`, whether it is a turn end or a pause inside a turn, and the cues an
early end-of-turn decision could use:

* the audio end-of-turn model shipped in `livekit-local-inference` (P(turn ended) on the last
  1.2 s of audio after 0.2 / 0.3 / 0.4 / 0.5 / 0.6 s of the pause),
* Pipecat's Smart Turn v3 (`pip install pipecat-ai`; skipped without it): the ONNX audio
  end-of-turn model bundled in the `pipecat-ai` wheel (a Whisper-encoder classifier trained on
  far more speech than livekit's), P(turn complete) on the last 8 s of audio at the same moments,
* prosody, with Praat's pitch and intensity trackers (`pip install praat-parselmouth`; skipped
  without it): the pitch slope over the last 0.6 s of speech (semitones / s), the last voiced
  pitch against the speaker's median (semitones), the intensity of the last 0.3 s against the
  segment's median (dB),
* the length of the speech segment before the pause.

Then, per cue, whether some threshold puts every turn end on one side and every mid-turn pause
on the other (what an early decision with no premature reply needs).

    .venv/bin/python benchmarks/pause_cues.py [--min-pause 0.3]
"""

from __future__ import annotations

import argparse
import json
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
FILES = ("multi_utterance_16k_mono.wav", "jfk_16k_mono.wav")
LOOKS = (0.2, 0.3, 0.4, 0.5, 0.6)
RATE = 16000
WINDOW = 19200  # the end-of-turn model's input: 1.2 s at 16 kHz


@dataclass
class Pause:
    file: str
    at: float
    length: float | None  # None: the recording ends
    turn_end: bool
    segment: float
    eot: list[float | None] = field(default_factory=list)
    smart: list[float | None] = field(default_factory=list)
    prosody: dict[str, float] = field(default_factory=dict)


def _pcm(name: str) -> np.ndarray:
    """The recording followed by 1 s of digital silence (the looks past its end hear silence)."""
    with wave.open(str(AUDIO / name)) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return np.concatenate([pcm, np.zeros(RATE, dtype=np.int16)])


def _ending_at(pcm: np.ndarray, seconds: float, size: int) -> np.ndarray:
    """The `size` samples of `pcm` that end `seconds` in (zeros before the recording starts)."""
    stop = int(seconds * RATE)
    out = np.zeros(size, dtype=pcm.dtype)
    chunk = pcm[max(0, stop - size) : stop]
    out[size - len(chunk) :] = chunk
    return out


def pauses(min_pause: float) -> list[Pause]:
    ref = json.loads((AUDIO / "turns.json").read_text())
    out: list[Pause] = []
    for name in FILES:
        speech, ends = ref[name]["speech"], ref[name]["turn_ends"]
        for i, (start, end) in enumerate(speech):
            nxt = speech[i + 1][0] if i + 1 < len(speech) else None
            length = None if nxt is None else nxt - end
            turn_end = any(abs(end - t) < 0.02 for t in ends)
            if (length is not None and length < min_pause) or (length is None and not turn_end):
                continue
            out.append(Pause(name, end, length, turn_end, end - start))
    return out


def add_eot(items: list[Pause]) -> None:
    from livekit.local_inference import EOT

    eot = EOT()
    try:
        for p in items:
            pcm = _pcm(p.file)
            for look in LOOKS:
                if p.length is not None and look >= p.length:
                    p.eot.append(None)
                    continue
                p.eot.append(float(eot.predict(_ending_at(pcm, p.at + look, WINDOW))))
    finally:
        eot.close()


def add_smart_turn(items: list[Pause]) -> bool:
    """Smart Turn v3 scores, through pipecat's local analyzer (tested with pipecat-ai 1.14.0).

    `_predict_endpoint` is the analyzer's one-shot scoring of a float32 16 kHz clip; its public
    API wants live audio with VAD flags, which would mix its own silence rule into the score.
    """
    try:
        from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import (  # type: ignore[import-not-found]
            LocalSmartTurnAnalyzerV3,
        )
    except ImportError:
        return False
    model = LocalSmartTurnAnalyzerV3()
    clip = 8 * RATE
    for p in items:
        pcm = _pcm(p.file).astype(np.float32) / 32768.0
        for look in LOOKS:
            if p.length is not None and look >= p.length:
                p.smart.append(None)
                continue
            p.smart.append(float(model._predict_endpoint(_ending_at(pcm, p.at + look, clip))["probability"]))
    return True


def add_prosody(items: list[Pause]) -> bool:
    try:
        import parselmouth  # type: ignore[import-not-found]
    except ImportError:
        return False
    for name in FILES:
        snd = parselmouth.Sound(str(AUDIO / name))
        pitch = snd.to_pitch(time_step=0.01, pitch_floor=60, pitch_ceiling=400)
        f0, ft = pitch.selected_array["frequency"], pitch.xs()
        median = float(np.median(f0[f0 > 0]))
        intensity = snd.to_intensity(time_step=0.01)
        it, iv = intensity.xs(), intensity.values[0]
        for p in (q for q in items if q.file == name):
            voiced = (ft > p.at - 0.6) & (ft <= p.at) & (f0 > 0)
            if voiced.sum() >= 3:
                st = 12 * np.log2(f0[voiced] / median)
                p.prosody["slope"] = float(np.polyfit(ft[voiced], st, 1)[0])
                p.prosody["final"] = float(st[-3:].mean())
            tail = (it > p.at - 0.3) & (it <= p.at)
            seg = (it > p.at - p.segment) & (it <= p.at)
            p.prosody["drop"] = float(iv[tail].mean() - np.median(iv[seg]))
    return True


def separable(items: list[Pause], value: str) -> str:
    """Whether a threshold on `value` splits turn ends from mid-turn pauses (either direction)."""
    ends = [v for p in items if p.turn_end and (v := _value(p, value)) is not None]
    mids = [v for p in items if not p.turn_end and (v := _value(p, value)) is not None]
    if not ends or not mids:
        return "n/a"
    if min(ends) > max(mids) or max(ends) < min(mids):
        return "yes"
    overlap = sum(min(ends) <= m <= max(ends) for m in mids)
    return f"no: turn ends {min(ends):.2f}..{max(ends):.2f}, {overlap} of {len(mids)} mid-turn pauses inside"


def _value(p: Pause, name: str) -> float | None:
    if name.startswith("eot@"):
        i = LOOKS.index(float(name[4:]))
        return p.eot[i] if i < len(p.eot) else None
    if name.startswith("smart@"):
        i = LOOKS.index(float(name[6:]))
        return p.smart[i] if i < len(p.smart) else None
    if name == "segment":
        return p.segment
    return p.prosody.get(name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--min-pause", type=float, default=0.3)
    args = parser.parse_args()
    items = pauses(args.min_pause)
    add_eot(items)
    smart = add_smart_turn(items)
    prosody = add_prosody(items)
    looks = " / ".join(f"{x:g}" for x in LOOKS)
    print(
        f"| file | pause at s | kind | pause s | segment s | P(end) at {looks} s | Smart Turn at {looks} s"
        " | pitch slope st/s | final pitch st | end intensity dB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in items:
        eot = " / ".join("–" if v is None else f"{v:.2f}" for v in p.eot)
        st = " / ".join("–" if v is None else f"{v:.2f}" for v in p.smart) or "–"
        pro = [f"{p.prosody[k]:.1f}" if k in p.prosody else "–" for k in ("slope", "final", "drop")]
        length = "–" if p.length is None else f"{p.length:.2f}"
        kind = "turn end" if p.turn_end else "mid-turn"
        print(
            f"| {p.file.split('_')[0]} | {p.at:.2f} | {kind} | {length} | {p.segment:.2f} | {eot} | {st} | "
            + " | ".join(pro)
            + " |"
        )
    print()
    cues = (
        [f"eot@{x:g}" for x in LOOKS]
        + ([f"smart@{x:g}" for x in LOOKS] if smart else [])
        + ["segment"]
        + (["slope", "final", "drop"] if prosody else [])
    )
    for cue in cues:
        print(f"{cue}: separates turn ends from mid-turn pauses? {separable(items, cue)}")
    if not smart:
        print("(Smart Turn skipped: pip install pipecat-ai)")
    if not prosody:
        print("(prosody skipped: pip install praat-parselmouth)")


if __name__ == "__main__":
    main()
