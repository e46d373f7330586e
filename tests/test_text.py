"""The text generator: varied, deterministic, written vs spoken forms, train/test disjoint."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from speech.corpus.text import (
    HELDOUT_PATH,
    TextGenerator,
    heldout_sentences,
    normalise,
    split_of,
    training_transcripts,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CATEGORIES = {"numbers", "dates", "times", "money", "names", "places", "addresses", "commands", "questions",
              "compound", "spelled"}


def test_same_seed_same_sentences_other_seed_other_sentences():
    assert TextGenerator(3).sentences(200) == TextGenerator(3).sentences(200)
    assert TextGenerator(3).sentences(200) != TextGenerator(4).sentences(200)


def test_every_category_appears_and_spoken_forms_are_plain_words():
    sentences = TextGenerator(0).sentences(3000)
    counts = Counter(s.category for s in sentences)
    assert set(counts) == CATEGORIES and min(counts.values()) > 100
    for s in sentences:
        assert re.fullmatch(r"[a-z']+( [a-z']+)*", s.spoken), s
        assert normalise(s.spoken) == s.spoken
    assert len({s.spoken for s in sentences}) > 0.6 * len(sentences), "too repetitive"
    assert any(re.search(r"\d", s.written) for s in sentences), "written forms keep digits and symbols"


@pytest.mark.parametrize(
    "category, written, spoken",
    [
        ("money", r"\$(\d+)\.50\.", r"dollars and fifty cents$"),
        ("times", r"\d+:0[1-9]", r" oh (one|two|three|four|five|six|seven|eight|nine)\b"),
        ("spelled", r"([A-Z]-)+[A-Z]\.", r"( [a-z]){2,}$"),
        ("dates", r"\d+(st|nd|rd|th) of", (r"(first|second|third|th) of (january|february|march|april|may|june|"
                                           r"july|august|september|october|november|december)$")),
    ],
)
def test_written_and_spoken_forms_agree(category, written, spoken):
    found = [s for s in TextGenerator(1).sentences(6000) if s.category == category and re.search(written, s.written)]
    assert found, f"no {category} sentence matching {written}"
    for s in found:
        assert re.search(spoken, s.spoken), s


def test_train_and_test_text_are_disjoint_and_heldout_is_test_text():
    train = {s.spoken for s in TextGenerator(0, "train").sentences(5000)}
    test = {s.spoken for s in TextGenerator(0, "test").sentences(500)}
    assert not train & test
    assert all(split_of(t) == "train" for t in train) and all(split_of(t) == "test" for t in test)
    heldout = heldout_sentences()
    assert len(heldout) == len(set(heldout)) == 200
    assert all(split_of(h) == "test" for h in heldout) and not train & set(heldout)
    assert HELDOUT_PATH.read_text().endswith("\n")


def test_real_transcripts_join_the_mix_without_evaluation_sets():
    if not SHARED.exists():
        pytest.skip(f"no shared data at {SHARED} (a user's clone has none)")
    texts = training_transcripts(SHARED)
    assert len(texts) > 1000
    evaluation = (SHARED / "an4" / "test.tsv").read_text().lower()
    assert not any(f"\t{normalise(t)}\n" in evaluation for t in texts[:50] if len(t.split()) > 3)
    mixed = TextGenerator(0, "train", extra=texts).sentences(2000)
    from_transcripts = [s for s in mixed if s.category == "transcript"]
    assert len(from_transcripts) > 100
    assert all(split_of(s.spoken) == "train" for s in from_transcripts)


def test_bad_split_is_refused():
    with pytest.raises(ValueError, match="split is 'train' or 'test'"):
        TextGenerator(0, "dev")
