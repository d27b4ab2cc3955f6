"""Cue grouping rules and WebVTT output (captioning.cues)."""

from __future__ import annotations

import io

import pytest
import webvtt

from captioning.cues import Cue, CueRules, Word, group_words, timestamp, to_webvtt, wrap


def words(text: str, step: float = 0.3, start: float = 0.0) -> list[Word]:
    return [Word(t, start + i * step, start + i * step + step * 0.8)
            for i, t in enumerate(text.split())]


def test_sentence_end_closes_a_cue() -> None:
    cues = group_words(words("Hello there. General Kenobi!"))
    assert [c.text for c in cues] == ["Hello there.", "General Kenobi!"]


def test_pause_closes_a_cue_without_punctuation() -> None:
    first = words("no punctuation here")
    second = words("after a pause", start=first[-1].end + 0.4)
    assert [c.text for c in group_words(first + second, CueRules(pause_s=0.2))] == [
        "no punctuation here", "after a pause"]
    assert len(group_words(first + second, CueRules(pause_s=0.5))) == 1


def test_cue_lasts_at_most_max_duration() -> None:
    cues = group_words(words(" ".join(["word"] * 40), step=0.5))
    assert len(cues) > 1
    assert all(c.end - c.start <= 7.0 for c in cues)


def test_cue_has_at_most_two_lines_of_42_characters() -> None:
    text = " ".join(["caption"] * 60)
    cues = group_words(words(text, step=0.05))
    assert all(len(c.lines) <= 2 and all(len(line) <= 42 for line in c.lines) for c in cues)
    assert " ".join(c.text for c in cues) == text


def test_full_cue_ends_at_its_last_comma_not_with_an_orphan_word() -> None:
    text = "The worker listens to the sound, writes down the words, and groups them into captions."
    cues = group_words(words(text))
    assert [c.text for c in cues] == [
        "The worker listens to the sound, writes down the words,",
        "and groups them into captions."]


def test_wrap_balances_two_lines() -> None:
    six = "one two three four five six"
    assert wrap(six.split(), 42, 2) == (six,)
    assert wrap(f"{six} seven eight nine ten".split(), 42, 2) == (
        "one two three four five", "six seven eight nine ten")
    lines = wrap(("alpha " * 10).split(), 42, 2)
    assert lines is not None and len(lines) == 2
    assert abs(len(lines[0]) - len(lines[1])) <= 6
    assert wrap(["x" * 50], 42, 2) is None


def test_overlong_single_word_is_kept() -> None:
    cues = group_words([Word("x" * 60, 0.0, 1.0)])
    assert cues == [Cue(0.0, 1.0, ("x" * 60,))]


def test_short_cues_get_a_minimum_duration_without_overlapping() -> None:
    cues = group_words([Word("Hi.", 1.0, 1.1), Word("Yo.", 1.3, 1.4)])
    assert cues[0].end == pytest.approx(1.3)
    assert cues[1].end == pytest.approx(1.8)


def test_blank_words_are_dropped() -> None:
    assert group_words([Word("  ", 0, 1), Word("", 1, 2)]) == []


def test_timestamp_format() -> None:
    assert timestamp(0) == "00:00:00.000"
    assert timestamp(3661.2345) == "01:01:01.234"
    assert timestamp(-1) == "00:00:00.000"


def test_webvtt_escapes_and_parses() -> None:
    cues = [Cue(0.13, 2.63, ("Tom & Jerry <3",)), Cue(3.0, 4.0, ("line one", "line two"))]
    vtt = to_webvtt(cues)
    assert vtt.startswith("WEBVTT\n\n1\n00:00:00.130 --> 00:00:02.630\nTom &amp; Jerry &lt;3\n")
    parsed = webvtt.from_buffer(io.StringIO(vtt))
    assert [c.start for c in parsed] == ["00:00:00.130", "00:00:03.000"]
    assert parsed[1].text == "line one\nline two"


def test_webvtt_with_no_cues_is_a_valid_empty_track() -> None:
    assert to_webvtt([]) == "WEBVTT\n"
