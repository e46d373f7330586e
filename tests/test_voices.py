"""Every available voice renders 5 sentences: rate, duration, no clipping, not silent, monotonic words."""

from __future__ import annotations

import numpy as np
import pytest

from speech.corpus.align import whisper_align
from speech.corpus.text import heldout_sentences
from speech.corpus.voices import ENGINES, EngineUnavailable, speakable, words_of

SENTENCES = [speakable(s, s) for s in heldout_sentences()[:5]]


def _engine_voices():
    for engine in ENGINES:
        for voice in engine.voices():
            yield pytest.param(engine, voice, id=voice.name)


@pytest.mark.parametrize(("engine", "voice"), list(_engine_voices()))
def test_voice_renders_five_sentences(engine, voice):
    try:
        engine.check()
    except EngineUnavailable as e:
        pytest.skip(f"{voice.name} is not installed here: {e}")
    for text, r in zip(SENTENCES, engine.render_many(voice, SENTENCES)):
        n_words = len(words_of(text))
        duration = len(r.audio) / r.sample_rate
        assert r.sample_rate == voice.sample_rate
        assert r.audio.dtype == np.float32 and r.audio.ndim == 1
        assert 0.12 * n_words < duration < 1.2 * n_words + 2.0, (text, duration)
        assert np.sqrt(np.mean(r.audio**2)) > 0.005, "silence-only output"
        assert np.mean(np.abs(r.audio) >= 0.999) < 1e-3, "clipped"
        words = r.words if r.words is not None else whisper_align(text, r.audio, r.sample_rate)
        assert [w for w, _, _ in words] == words_of(text)
        starts = [s for _, s, _ in words]
        assert starts == sorted(starts), words
        assert all(0 <= s <= e <= duration + 1e-6 for _, s, e in words), words
        assert words[-1][2] - words[0][1] > 0.5 * (duration - 1.0), "words must cover the speech"
