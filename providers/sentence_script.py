"""Reply text as it streams in from the brain, cut into sentences as soon as each one ends.

A TTS chain hands each sentence to its provider separately (`providers.tts_chains`), so it
knows which sentences were said whole when a provider fails. A sentence ends at closing
punctuation once whitespace follows: "3.5" and a "." still waiting for its next token are not
cut, and a run of punctuation with no word ("...") stays with the next sentence.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]»”’]*(?=\s)|[。！？]+[」』）”’\"')\]]*(?=[^」』）”’\"')\]])")
"""Where a sentence ends in streamed text: its closing punctuation, once whitespace follows
(so "3.5" and a "." still waiting for its next token are not cut); a full-width "。", "！" or
"？" (Chinese, Japanese: no space between sentences) once any next character follows."""


_NOT_AN_END = re.compile(
    r"(?:(?<![\w.])(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|Mt|vs)"  # a title or "vs." before a name
    r"|(?<![\w.])(?:[^\W\d_]\.)*[^\W\d_]"  # an initial or initialism: "J.", "e.g.", "U.S."
    r"|(?:^|\n)[ \t]*\d+)\.$"  # a numbered list's "1." at the start of a line
)
"""A "." that ends an abbreviation, not the sentence: cut there, the provider would say "Dr."
or "e.g." on its own, as a sentence."""


def _has_words(text: str) -> bool:
    return any(c.isalnum() for c in text)


@dataclasses.dataclass
class Sentence:
    text: str = ""
    closed: bool = False


class SentenceScript:
    """The reply text as it streams in, cut into sentences; waiters wake on every change."""

    def __init__(self) -> None:
        self.sentences: list[Sentence] = []
        self.ended = False
        self.version = 0
        self._scan = 0  # where to look for the open sentence's end (past cuts that were refused)
        self._waiters: list[asyncio.Future[None]] = []

    def add(self, text: str) -> None:
        if not self.sentences or self.sentences[-1].closed:
            self.sentences.append(Sentence())
            self._scan = 0
        open_ = self.sentences[-1]
        open_.text += text
        while m := _SENTENCE_END.search(open_.text, self._scan):
            head, tail = open_.text[: m.end()], open_.text[m.end() :]
            if not _has_words(head) or (m.group() == "." and _NOT_AN_END.search(head)):
                # "..." on its own is not a sentence, "Dr." does not end one: each stays with the next
                self._scan = m.end()
                continue
            open_.text, open_.closed = head, True
            open_ = Sentence(tail)
            self.sentences.append(open_)
            self._scan = 0
        self.changed()

    def close_open(self) -> None:
        """The caller flushed, or the text ended: the open sentence is complete (if it says anything)."""
        if self.sentences and not self.sentences[-1].closed:
            if _has_words(self.sentences[-1].text):
                self.sentences[-1].closed = True
            else:
                self.sentences.pop()
        self.changed()

    def end(self) -> None:
        self.close_open()
        self.ended = True
        self.changed()

    def changed(self) -> None:
        self.version += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_change(self, seen: int) -> int:
        while self.version == seen:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        return self.version

    def startable(self, index: int) -> bool:
        """Whether sentence `index` may go to a provider: it exists and says something."""
        return index < len(self.sentences) and (self.sentences[index].closed or _has_words(self.sentences[index].text))


