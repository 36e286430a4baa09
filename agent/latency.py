"""Per-turn latency, from the metrics livekit-agents attaches to each chat message.

One row per user turn: end of user speech -> first reply audio (`e2e`), and its parts:

- `end_of_turn`: end of speech -> the decision that the turn is over (VAD silence + endpointing);
- `transcription`: end of speech -> final transcript (overlaps `end_of_turn`);
- `first_text`: the brain's first text delta, from the start of `llm_node` (with preemptive
  generation that start is before the end of the turn; a tool run, and its approval wait,
  before the brain's first words count here);
- `first_audio`: the TTS's first audio, from its first text.

The parts overlap: they need not add up to `e2e`.

Times are in seconds. A turn whose reply was cut off before any audio has no reply columns.
Once its brain turn has ended with no reply recorded (`LatencyCollector.no_reply`: merged into
the next turn, stopped on request, its audio failed ...), a user turn takes no later assistant
message as its reply: the inactivity goodbye, say, is not an answer to it (its "e2e" would be the
inactivity timeout).
A typed turn (`user.text`, or livekit's own text input) has no speech: no `e2e`, `end_of_turn`
or `transcription`.

livekit-agents leaves the end of user speech (and so `e2e`) out of a turn's metrics when its
VAD and transcript anchors disagree, e.g. when a transcript arrives after the user spoke again
(seen on a loaded machine). The collector then falls back to its own reading, as livekit takes
it: the time of the VAD's `user_state_changed` to listening, which livekit already dates back
by the silence the VAD waited for (and its inference time). That reading belongs to one spoken
turn: a typed message (livekit adds it with no metrics) never takes it, nor does a later turn
once it has been used. The event may also come after the turn it ends was committed (seen once
in a parallel test run, with the JFK recording's applause: a turn with no `e2e`): an end of
speech dated before the commit of the latest spoken turn measured this way is that turn's, when
it is later than the reading the turn took. A turn livekit measured itself leaves the reading
unused: when livekit commits a turn at a mid-sentence pause and the rest of the sentence's
transcript then arrives as a turn of its own (anchors dropped, no new speech seen; seen on the
JFK recording), that turn's speech ended where the reading says.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

COLUMNS = ("e2e", "end_of_turn", "transcription", "first_text", "first_audio")

NoReply = Literal["merged", "stopped", "tts_failed", "cut_off", "empty"]
NO_REPLY_LABELS: dict[str, str] = {
    "merged": "(no reply audio: merged into the next turn)",
    "stopped": "(no reply: stopped on request)",
    "tts_failed": "(no reply: its audio failed)",
    "cut_off": "(no reply: cut off)",
    "empty": "(no reply: nothing to say)",
}


@dataclass
class TurnLatency:
    index: int
    user_text: str
    reply_text: str | None = None
    interrupted: bool = False
    e2e: float | None = None
    end_of_turn: float | None = None
    transcription: float | None = None
    first_text: float | None = None
    first_audio: float | None = None
    user_stopped_at: float | None = None
    reply_started_at: float | None = None
    turn_id: str | None = None
    """The brain turn that produced the reply."""
    no_reply: NoReply | None = None
    """Why the turn has no reply, once its brain turn has ended with none recorded."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics_ms(self) -> dict[str, Any]:
        """The latency parts in milliseconds (None when unknown), for the bridge's `metrics`."""
        out: dict[str, Any] = {f"{c}_ms": None if getattr(self, c) is None else round(getattr(self, c) * 1000) for c in COLUMNS}
        out["interrupted"] = self.interrupted
        return out


class LatencyCollector:
    """Listens to `conversation_item_added` and pairs each reply with the user turn before it."""

    def __init__(self) -> None:
        self.rows: list[TurnLatency] = []
        self._last_stopped_at: float | None = None
        """The VAD's end of the user's latest speech, until a spoken user turn takes it."""
        self._unstopped: tuple[TurnLatency, float] | None = None
        """The latest spoken turn with no end of speech yet, and when it was committed."""

    def attach(self, session: Any) -> None:
        session.on("conversation_item_added", self._on_item)
        session.on("user_state_changed", self._on_user_state)

    def _on_user_state(self, event: Any) -> None:
        if event.old_state == "speaking" and event.new_state != "speaking":
            # livekit dates the event at the end of speech (the VAD's silence already deducted)
            stopped_at = event.created_at
            pending, self._unstopped = self._unstopped, None
            if pending is not None and stopped_at <= pending[1]:
                # the turn was committed before this event came: speech that ended before the
                # commit is that turn's (a later utterance ends after it), and the latest such
                # end is its end (an older reading it took at its commit was stale)
                row = pending[0]
                if row.user_stopped_at is None or stopped_at > row.user_stopped_at:
                    row.e2e = None
                    self._stopped(row, stopped_at)
                return
            self._last_stopped_at = stopped_at

    @staticmethod
    def _stopped(row: TurnLatency, at: float) -> None:
        row.user_stopped_at = at
        if row.e2e is None and row.reply_started_at and row.user_stopped_at:
            gap = row.reply_started_at - row.user_stopped_at
            row.e2e = gap if gap > 0 else None

    def _on_item(self, event: Any) -> None:
        item = event.item
        if getattr(item, "type", None) != "message":
            return
        m = dict(item.metrics or {})
        if item.role == "user":
            # livekit's end-of-turn path always attaches metrics; a typed message has none
            anchored = m.get("stopped_speaking_at")
            fallback = None
            if m and not anchored:
                # only a turn that uses the reading consumes it: a turn livekit measured itself
                # leaves it to a transcript that arrives after it (the rest of the same speech)
                fallback, self._last_stopped_at = self._last_stopped_at, None
            row = TurnLatency(
                index=len(self.rows) + 1,
                user_text=item.text_content or "",
                end_of_turn=m.get("end_of_turn_delay"),
                transcription=m.get("transcription_delay"),
                user_stopped_at=anchored or fallback,
            )
            self.rows.append(row)
            committed_at = getattr(item, "created_at", None)
            self._unstopped = (row, committed_at) if m and not anchored and committed_at else None
        elif item.role == "assistant" and self.rows and self._awaits_reply(self.rows[-1]):
            row = self.rows[-1]
            row.reply_text = item.text_content or ""
            row.interrupted = bool(item.interrupted)
            row.first_text = m.get("llm_node_ttft")
            row.first_audio = m.get("tts_node_ttfb")
            row.reply_started_at = m.get("started_speaking_at")
            row.e2e = m.get("e2e_latency")
            if row.user_stopped_at is not None:
                self._stopped(row, row.user_stopped_at)

    @staticmethod
    def _awaits_reply(row: TurnLatency) -> bool:
        return row.reply_text is None and row.no_reply is None

    def no_reply(self, why: NoReply) -> None:
        """The brain turn answering the latest user turn has ended (`why` says how it would have
        no reply): if no reply was recorded, that user turn is over, unanswered, and a later
        assistant message (the inactivity goodbye) is not its reply."""
        if self.rows and self._awaits_reply(self.rows[-1]):
            self.rows[-1].no_reply = why

    def claim(self, turn_id: str) -> TurnLatency | None:
        """Tie the latest reply to a brain turn (called when that turn's speech ends)."""
        for row in reversed(self.rows):
            if row.reply_text is not None and row.turn_id is None:
                row.turn_id = turn_id
                return row
            if row.turn_id is not None:
                break
        return None

    def answered(self) -> list[TurnLatency]:
        return [r for r in self.rows if r.e2e is not None]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(rows: list[TurnLatency], *, text_width: int = 34, speed: float = 1.0) -> str:
    """A fixed-width table in milliseconds (`speed`: the simulation's, said under the table
    when it is not 1, as the figures then mix wall-clock and audio time)."""
    head = ("#", "user said", "e2e ms", "eot ms", "stt ms", "text ms", "audio ms", "reply")
    lines = [
        f"{head[0]:>2}  {head[1]:<{text_width}}  {head[2]:>7} {head[3]:>7} {head[4]:>7} "
        f"{head[5]:>7} {head[6]:>8}  {head[7]}"
    ]
    for r in rows:
        if r.reply_text is None:
            reply = NO_REPLY_LABELS.get(r.no_reply or "", "(no reply)")
        else:
            reply = ("interrupted: " if r.interrupted else "") + _clip(r.reply_text, 40)
        lines.append(
            f"{r.index:>2}  {_clip(r.user_text, text_width):<{text_width}}  {_fmt(r.e2e):>7} "
            f"{_fmt(r.end_of_turn):>7} {_fmt(r.transcription):>7} {_fmt(r.first_text):>7} "
            f"{_fmt(r.first_audio):>8}  {reply}"
        )
    answered = [r.e2e for r in rows if r.e2e is not None]
    if answered:
        mean = sum(answered) / len(answered)
        lines.append(f"    e2e over {len(answered)} answered turn(s): mean {mean * 1000:.0f} ms, "
                     f"max {max(answered) * 1000:.0f} ms")
    lines.append("    e2e = end of user speech -> first reply audio; eot = end-of-turn delay; "
                 "stt = transcription delay; text = brain's first text; audio = TTS first audio")
    if speed != 1.0:
        lines.append(f"    at --speed {speed:g} these figures mix wall-clock and audio time (livekit-agents "
                     "times them on the wall clock, the VAD in audio): measure latency at --speed 1")
    return "\n".join(lines)


def to_json(rows: list[TurnLatency]) -> str:
    return json.dumps([r.as_dict() for r in rows])
