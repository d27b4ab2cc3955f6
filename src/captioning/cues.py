"""Words -> readable cues -> WebVTT text. Pure functions over frozen values; no I/O.

Rules (after the BBC and Netflix subtitle guidelines, cut down): a cue lasts at most
`max_duration_s`, holds at most `max_lines` lines of at most `max_line_chars` characters, and
ends at a sentence end or at a pause between words. Engines without punctuation (pocketsphinx)
rely on pauses alone, so they pass a shorter pause.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SENTENCE_ENDS = (".", "?", "!", "…")


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word with its time span in seconds."""

    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Cue:
    """One caption on screen: its time span and its (already wrapped) lines."""

    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


@dataclass(frozen=True, slots=True)
class CueRules:
    max_duration_s: float = 7.0
    max_line_chars: int = 42
    max_lines: int = 2
    pause_s: float = 0.5
    min_duration_s: float = 0.5


def group_words(words: Iterable[Word], rules: CueRules = CueRules()) -> list[Cue]:
    """Group words into cues: a new cue starts at a pause, after a sentence end, or when the
    current cue would grow past the duration or the line limits."""
    cues: list[Cue] = []
    current: list[Word] = []
    for word in _clean(words):
        if current and _ends_phrase(current, word, rules):
            cues.append(_make_cue(current, rules))
            current = []
        elif current and _too_long(current, word, rules):
            # Full: end the cue at its last clause break (a comma) when there is one, so the
            # words after it start the next cue instead of leaving a one-word orphan.
            cut = _last_clause_end(current)
            cues.append(_make_cue(current[:cut], rules))
            current = current[cut:]
        current.append(word)
    if current:
        cues.append(_make_cue(current, rules))
    return _no_overlap(cues)


def _clean(words: Iterable[Word]) -> Iterable[Word]:
    for word in words:
        text = " ".join(word.text.split())
        if text:
            yield Word(text, max(0.0, word.start), max(word.start, word.end, 0.0))


def _ends_phrase(current: Sequence[Word], word: Word, rules: CueRules) -> bool:
    """A sentence end or a pause before `word`."""
    last = current[-1]
    return last.text.endswith(SENTENCE_ENDS) or word.start - last.end >= rules.pause_s


def _too_long(current: Sequence[Word], word: Word, rules: CueRules) -> bool:
    """Adding `word` would pass the duration or the line limits."""
    if word.end - current[0].start > rules.max_duration_s:
        return True
    texts = [w.text for w in current] + [word.text]
    return wrap(texts, rules.max_line_chars, rules.max_lines) is None


def _last_clause_end(current: Sequence[Word]) -> int:
    """How many words to keep: up to the last comma (not the cue's last word), else all."""
    for i in range(len(current) - 2, 0, -1):
        if current[i].text.endswith((",", ";", ":")):
            return i + 1
    return len(current)


def _make_cue(words: Sequence[Word], rules: CueRules) -> Cue:
    texts = [w.text for w in words]
    lines = wrap(texts, rules.max_line_chars, rules.max_lines)
    if lines is None:  # a single word longer than the limits: show it anyway, unwrapped
        lines = (" ".join(texts),)
    start = words[0].start
    end = max(words[-1].end, start + rules.min_duration_s)
    return Cue(start, end, lines)


def _no_overlap(cues: list[Cue]) -> list[Cue]:
    """Stretching short cues to the minimum duration must not make them overlap the next."""
    out: list[Cue] = []
    for i, cue in enumerate(cues):
        if i + 1 < len(cues) and cue.end > cues[i + 1].start:
            out.append(Cue(cue.start, max(cues[i + 1].start, cue.start + 0.001), cue.lines))
        else:
            out.append(cue)
    return out


def wrap(words: Sequence[str], width: int, max_lines: int) -> tuple[str, ...] | None:
    """Balanced wrap of words into at most max_lines lines of at most width characters.

    Returns None when they do not fit. For two lines the split point is the one that makes
    the longer line shortest (a "bottom-heavy pyramid" is not enforced).
    """
    text = " ".join(words)
    if len(text) <= width and max_lines >= 1:
        return (text,)
    if max_lines < 2:
        return None
    best: tuple[str, ...] | None = None
    for cut in range(1, len(words)):
        head = " ".join(words[:cut])
        if len(head) > width:
            break
        rest = wrap(words[cut:], width, max_lines - 1)
        if rest is None:
            continue
        candidate = (head, *rest)
        if best is None or max(map(len, candidate)) < max(map(len, best)):
            best = candidate
    return best


def timestamp(seconds: float) -> str:
    """WebVTT timestamp HH:MM:SS.mmm."""
    millis = round(max(0.0, seconds) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def escape(text: str) -> str:
    """Cue text may not contain raw '&', '<' or '>' (they start entities and tags)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_webvtt(cues: Iterable[Cue]) -> str:
    """A complete WebVTT file; with no cues it is just the header (a valid, empty track)."""
    blocks = ["WEBVTT"]
    for number, cue in enumerate(cues, start=1):
        lines = "\n".join(escape(line) for line in cue.lines)
        blocks.append(f"{number}\n{timestamp(cue.start)} --> {timestamp(cue.end)}\n{lines}")
    return "\n\n".join(blocks) + "\n"
