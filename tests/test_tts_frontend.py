"""TTS front end: normalisation rules, agreement with the corpus generator's spoken forms, G2P, incremental text."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from asr.text import normalise
from tts.frontend import IncrementalFrontEnd, phonemize, text_to_ids, to_ids
from tts.normalize import normalize
from tts.phonemes import PHONEME_IDS, SPACE


@pytest.mark.parametrize("written, spoken", [
    ("It costs $12.50.", "It costs twelve dollars and fifty cents."),
    ("Revenue hit $3.5 million", "Revenue hit three point five million dollars"),
    ("Meet me at 7:30 p.m. on Jan. 5, 2024.", "Meet me at seven thirty p m on january fifth, twenty twenty-four."),
    ("Call at 7pm or 10:05 am.", "Call at seven p m or ten oh five a m."),
    ("Dr. Smith lives at 221 Baker St. in London.",
     "Doctor Smith lives at two hundred and twenty-one Baker Street in London."),
    ("St. Louis is 5 km away.", "Saint Louis is five kilometers away."),
    ("20% of 1,234 people", "twenty percent of one thousand, two hundred and thirty-four people"),
    ("The 1990s & the 3rd round", "The nineteen nineties and the third round"),
    ("It was -5°C on 12/25/2023.", "It was minus five degrees celsius on december twenty-fifth, twenty twenty-three."),
    ("on 2024-03-01, 1 ft away", "on march first, twenty twenty-four, one foot away"),
    ("My code is 0482, e.g. four digits.", "My code is zero four eight two, for example four digits."),
    ("Apples, pears, etc.", "Apples, pears, et cetera."),
    ("I said no. Then left.", "I said no. Then left."),
    ("Wait... what?", "Wait, what?"),
])
def test_normalisation_rules(written: str, spoken: str) -> None:
    assert normalize(written) == spoken


def test_normalisation_agrees_with_the_corpus_spoken_forms() -> None:
    """The corpus generator writes each sentence twice (as typed, as said); our normaliser must say the typed
    form the same way in nearly every case (the rest are legitimate readings: codes as pairs, not digits)."""
    from speech.corpus.text import TextGenerator

    sentences = TextGenerator(11, "test").sentences(300)
    agree = sum(normalise(normalize(s.written)) == normalise(s.spoken) for s in sentences)
    assert agree / len(sentences) >= 0.98, agree


def test_g2p_runs_on_the_bundled_espeak_and_maps_every_symbol() -> None:
    symbols = phonemize(normalize("The quick brown fox, 3 days later, jumped!"))
    assert "ð" in symbols and symbols[-1] == "!"
    assert all(s in PHONEME_IDS for s in symbols)
    assert to_ids(["ð", "(", "x"]) == [PHONEME_IDS["ð"], PHONEME_IDS["("], PHONEME_IDS["x"]]
    assert text_to_ids("") == []


def _incremental(text: str, pieces: list[str]) -> tuple[list[int], list[int]]:
    """All ids, and how many were out after each piece."""
    front = IncrementalFrontEnd()
    ids, counts = [], []
    for piece in pieces:
        ids += front.push(piece)
        counts.append(len(ids))
    ids += front.finish()
    return ids, counts


def test_incremental_text_is_emitted_with_a_bounded_lookahead_and_never_taken_back() -> None:
    text = "Meet me at 7:30 p.m. on Jan. 5, 2024, said Dr. Smith. It costs $12.50 today and we will pay."
    words = re.findall(r"\S+\s*", text)
    by_word, counts = _incremental(text, words)
    by_char, _ = _incremental(text, list(text))
    rng = random.Random(0)
    cuts = sorted(rng.sample(range(1, len(text)), 15))
    by_random, _ = _incremental(text, [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])])
    assert by_word == by_char == by_random  # the split of the text does not matter
    assert counts[len(words) // 2] > 0  # speech starts before the text ends
    assert all(b >= a for a, b in itertools.pairwise(counts))
    assert by_word.count(SPACE) >= len(words) - 3
    # the words a multi-word rule reads together are committed together ("Jan. 5, 2024," is one date)
    inverse = {v: k for k, v in PHONEME_IDS.items()}
    spoken = "".join(inverse[i] for i in by_word)
    assert "twˈɛnti twˈɛntifˈɔːɹ" in spoken and "dˈɑːlɚz" in spoken


def test_incremental_front_end_refuses_a_lookahead_shorter_than_its_rules() -> None:
    with pytest.raises(ValueError, match="lookahead_words"):
        IncrementalFrontEnd(lookahead_words=1)
