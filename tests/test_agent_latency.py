"""The per-turn latency rows, from livekit's chat-item metrics and, where livekit leaves the end
of user speech out, from the VAD's end-of-speech event."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agent.latency import LatencyCollector, format_table


class _Session:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def on(self, name: str, fn: Any) -> None:
        self.handlers[name] = fn

    def item(self, role: str, text: str, metrics: dict[str, float], interrupted: bool = False,
             created_at: float | None = None) -> None:
        item = SimpleNamespace(type="message", role=role, text_content=text, metrics=metrics,
                               interrupted=interrupted, created_at=created_at)
        self.handlers["conversation_item_added"](SimpleNamespace(item=item))

    def user_state(self, old: str, new: str, at: float) -> None:
        self.handlers["user_state_changed"](SimpleNamespace(old_state=old, new_state=new, created_at=at))


def _collector() -> tuple[LatencyCollector, _Session]:
    collector, session = LatencyCollector(), _Session()
    collector.attach(session)
    return collector, session


def test_livekits_numbers_are_taken_as_they_are() -> None:
    collector, session = _collector()
    session.user_state("speaking", "listening", at=100.0)
    session.item("user", "hello", {"stopped_speaking_at": 99.6, "end_of_turn_delay": 0.9, "transcription_delay": 0.3})
    session.item("assistant", "hi", {"e2e_latency": 1.1, "llm_node_ttft": 0.01, "tts_node_ttfb": 0.05, "started_speaking_at": 100.7})
    [row] = collector.rows
    assert (row.user_stopped_at, row.e2e, row.end_of_turn, row.first_audio) == (99.6, 1.1, 0.9, 0.05)


def test_missing_end_of_speech_falls_back_to_the_vad_event() -> None:
    collector, session = _collector()
    session.user_state("listening", "speaking", at=98.0)
    # livekit dates the event at the end of speech (the VAD's silence taken off already)
    session.user_state("speaking", "listening", at=100.0)
    session.item("user", "hello", {"on_user_turn_completed_delay": 0.001})  # livekit dropped its anchors
    session.item("assistant", "hi", {"started_speaking_at": 101.2})
    [row] = collector.rows
    assert row.user_stopped_at == pytest.approx(100.0)
    assert row.e2e == pytest.approx(1.2)
    assert collector.answered() == [row]


def test_no_reply_audio_no_e2e() -> None:
    collector, session = _collector()
    session.user_state("speaking", "listening", at=100.0)
    session.item("user", "hello", {})
    session.item("assistant", "", {}, interrupted=True)  # cut off before any audio
    [row] = collector.rows
    assert row.e2e is None and row.interrupted
    assert collector.answered() == []


def test_a_typed_turn_has_no_end_of_speech() -> None:
    """A typed message (livekit adds it with no metrics) after a spoken turn: its reply is not
    measured from the spoken turn's end of speech, nor is a later spoken turn whose anchors
    livekit dropped measured from speech already used."""
    collector, session = _collector()
    session.user_state("speaking", "listening", at=100.0)
    session.item("user", "hello", {"on_user_turn_completed_delay": 0.001})  # anchors dropped
    session.item("assistant", "hi", {"started_speaking_at": 101.0})
    session.item("user", "and tomorrow?", {})  # typed
    session.item("assistant", "sunny", {"started_speaking_at": 110.0})
    session.item("user", "thanks", {"on_user_turn_completed_delay": 0.001})  # no new speech seen
    session.item("assistant", "bye", {"started_speaking_at": 120.0})
    assert [r.e2e for r in collector.rows] == [pytest.approx(1.0), None, None]
    assert collector.answered() == collector.rows[:1]


def test_a_turn_left_without_reply_does_not_take_a_later_message_as_its_reply() -> None:
    """A spoken turn whose brain turn ended with no reply recorded (stopped, its audio failed):
    the inactivity goodbye said later is no reply to it (its e2e would be the inactivity
    timeout); a turn whose reply was recorded keeps it."""
    collector, session = _collector()
    session.item("user", "hello", {"stopped_speaking_at": 100.0})
    session.item("assistant", "hi", {"e2e_latency": 0.8, "started_speaking_at": 100.8})
    collector.no_reply("empty")  # its brain turn ended: a no-op, the reply was recorded
    assert collector.claim("t1") is collector.rows[0]
    session.item("user", "book a table", {"stopped_speaking_at": 110.0})
    collector.no_reply("stopped")
    session.item("assistant", "Talk to you later.", {"started_speaking_at": 170.5})  # the goodbye
    first, second = collector.rows
    assert (first.reply_text, first.e2e, first.no_reply) == ("hi", 0.8, None)
    assert (second.reply_text, second.e2e, second.no_reply) == (None, None, "stopped")
    assert collector.answered() == [first]
    assert format_table(collector.rows).splitlines()[2].endswith("(no reply: stopped on request)")


def test_an_end_of_speech_reported_after_its_turn_was_committed_is_that_turns() -> None:
    """livekit may add the user's turn before its VAD reports the end of that speech: the end
    of speech, dated before the commit, still measures the turn; a later utterance's end (dated
    after the commit) does not."""
    collector, session = _collector()
    session.user_state("listening", "speaking", at=95.0)
    session.item("user", "hello", {"on_user_turn_completed_delay": 0.001}, created_at=101.0)
    session.item("assistant", "hi", {"started_speaking_at": 101.4})
    session.user_state("speaking", "listening", at=100.0)  # reported late, dated at the speech's end
    # a second turn whose end comes late too, but from speech after its commit: not its own
    session.user_state("listening", "speaking", at=104.0)
    session.item("user", "and then", {"on_user_turn_completed_delay": 0.001}, created_at=104.5)
    session.item("assistant", "then this", {"started_speaking_at": 105.0})
    session.user_state("speaking", "listening", at=106.0)
    first, second = collector.rows
    assert first.user_stopped_at == pytest.approx(100.0) and first.e2e == pytest.approx(1.4)
    assert second.user_stopped_at is None and second.e2e is None
    assert collector.answered() == [first]


def test_the_rest_of_a_sentence_committed_as_a_turn_of_its_own_is_measured_from_its_speech() -> None:
    """Seen on the JFK recording: livekit commits the sentence at a mid-sentence pause (its own
    anchors, read when the item is added, give the sentence's end), the reply is cut off, and the
    rest of the sentence's transcript arrives as a second turn with no anchors and no new speech:
    the VAD's end of speech measures that second, answered turn."""
    collector, session = _collector()
    session.user_state("listening", "speaking", at=845.8)
    session.user_state("speaking", "listening", at=849.2)  # the mid-sentence pause
    session.user_state("listening", "speaking", at=849.7)
    session.user_state("speaking", "listening", at=850.9)  # the sentence's end
    session.item("user", "and so my fellow americans", {"stopped_speaking_at": 850.9, "end_of_turn_delay": 1.0},
                 created_at=850.1)
    collector.no_reply("cut_off")
    session.item("user", "ask not", {"on_user_turn_completed_delay": 0.001}, created_at=852.2)
    session.item("assistant", "You said: ask not", {"started_speaking_at": 852.3})
    first, second = collector.rows
    assert (first.e2e, first.no_reply) == (None, "cut_off")
    assert second.user_stopped_at == pytest.approx(850.9) and second.e2e == pytest.approx(1.4)
    assert collector.answered() == [second]


def test_a_late_end_of_speech_replaces_an_older_reading_its_turn_took() -> None:
    """A turn with no anchors that took an older end of speech at its commit (its own speech's end
    not reported yet) is measured from its own speech once that is reported (dated before the
    commit)."""
    collector, session = _collector()
    session.user_state("speaking", "listening", at=100.0)
    session.item("user", "hello", {"stopped_speaking_at": 100.0}, created_at=101.0)
    session.item("assistant", "hi", {"e2e_latency": 1.2, "started_speaking_at": 101.2})
    session.user_state("listening", "speaking", at=103.0)
    session.item("user", "and then", {"on_user_turn_completed_delay": 0.001}, created_at=106.0)
    session.item("assistant", "then this", {"started_speaking_at": 106.5})
    session.user_state("speaking", "listening", at=105.0)  # reported late
    first, second = collector.rows
    assert first.e2e == pytest.approx(1.2)
    assert second.user_stopped_at == pytest.approx(105.0) and second.e2e == pytest.approx(1.5)
