"""The VC content-layer probes: DTW is exact, each probe separates what it should, the rule picks by evidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vc.content_probe import choose_layer, content_probe, dtw, speaker_probe


def _dtw_loop(cost: np.ndarray) -> float:
    a, b = cost.shape
    acc = np.full((a + 1, b + 1), np.inf)
    steps = np.zeros((a + 1, b + 1))
    acc[0, 0] = 0.0
    for i in range(1, a + 1):
        for j in range(1, b + 1):
            options = [(acc[i - 1, j - 1], steps[i - 1, j - 1]), (acc[i - 1, j], steps[i - 1, j]),
                       (acc[i, j - 1], steps[i, j - 1])]
            best = min(options, key=lambda o: o[0])
            acc[i, j], steps[i, j] = best[0] + cost[i - 1, j - 1], best[1] + 1
    return acc[a, b] / steps[a, b]


def test_batched_dtw_equals_the_textbook_recursion():
    rng = np.random.default_rng(0)
    cost = torch.from_numpy(rng.random((6, 9, 7)))
    len_a, len_b = torch.tensor([9, 3, 5, 1, 9, 6]), torch.tensor([7, 7, 2, 4, 1, 6])
    got = dtw(cost, len_a, len_b)
    for p in range(6):
        want = _dtw_loop(cost[p, : len_a[p], : len_b[p]].numpy())
        assert abs(float(got[p]) - want) < 1e-9


def test_speaker_probe_tells_separable_speakers_apart_and_not_noise():
    rng = np.random.default_rng(1)
    speakers = [f"s{i}" for i in range(5) for _ in range(6)]
    centres = rng.normal(size=(5, 16)) * 3
    separable = torch.tensor(np.stack([centres[int(s[1])] + rng.normal(size=16) for s in speakers]), dtype=torch.float32)
    noise = torch.tensor(rng.normal(size=(30, 16)), dtype=torch.float32)
    assert speaker_probe(separable, speakers) > 90
    assert speaker_probe(noise, speakers) < 60


def test_content_probe_matches_words_across_speakers():
    rng = np.random.default_rng(2)
    templates = {w: rng.normal(size=(12, 8)) for w in ("yes", "no", "stop")}
    frames, speakers, words = [], [], []
    for speaker in range(3):
        for word, template in templates.items():
            stretch = np.repeat(template, 1 + (speaker % 2), axis=0)  # a slower speaker: time-warped
            frames.append(torch.tensor(stretch + 0.1 * rng.normal(size=stretch.shape), dtype=torch.float32))
            speakers.append(f"s{speaker}")
            words.append(word)
    assert content_probe(frames, speakers, words) == pytest.approx(100.0)


def test_the_chosen_layer_keeps_most_content_less_speaker():
    rows = [{"layer": 0, "content_accuracy_standardised": 90, "speaker_accuracy": 0},  # log-mel: never chosen
            {"layer": 1, "content_accuracy_standardised": 65, "speaker_accuracy": 59},
            {"layer": 2, "content_accuracy_standardised": 56, "speaker_accuracy": 31},
            {"layer": 3, "content_accuracy_standardised": 42, "speaker_accuracy": 18}]
    assert choose_layer(rows) == 2
