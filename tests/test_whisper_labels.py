"""`speech corpus whisper-labels`: written-form synthetic labels with mapped word times, teacher labels for
real speech, and a relabelled pack that the training loader reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from speech.corpus.whisper_labels import written_word_times

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def test_written_words_take_the_times_of_the_spoken_words_they_were_read_as():
    spoken = [["send", 0.0, 0.3], ["it", 0.3, 0.4], ["to", 0.4, 0.5], ["forty", 0.5, 0.9], ["three", 0.9, 1.2],
              ["forty", 1.2, 1.5], ["two", 1.5, 1.8], ["highland", 1.8, 2.2], ["drive", 2.2, 2.5]]
    timed = written_word_times("Send it to 4342 Highland Drive.", spoken)
    assert [w for w, _, _ in timed] == ["Send", "it", "to", "4342", "Highland", "Drive."]
    assert timed[3][1:] == [0.5, 1.8]  # the number spans the four words it was read as
    assert timed[5][1:] == [2.2, 2.5]  # punctuation aside, the word keeps its time
    two = written_word_times("It costs $5 and 20 cents", [["it", 0, 1], ["costs", 1, 2], ["five", 2, 3],
                                                          ["dollars", 3, 4], ["and", 4, 5], ["twenty", 5, 6],
                                                          ["cents", 6, 7]])
    assert [w for w, _, _ in two] == ["It", "costs", "$5", "and", "20", "cents"]
    assert two[2][1:] == [2, 4] and two[4][1:] == [5, 6]
    extra = written_word_times("Hello — world", [["hello", 0.0, 0.5], ["world", 0.6, 1.0]])
    assert extra[1] == ["—", 0.5, 0.5]  # said by nobody: zero length, at the previous word's end
    assert written_word_times("", spoken) == [] and written_word_times("Hi", []) == []
    for words in (timed, two, extra):
        assert all(s <= e for _, s, e in words) and [s for _, s, _ in words] == sorted(s for _, s, _ in words)


def test_relabelled_pack_keeps_the_audio_and_feeds_the_loader(tmp_path):
    pytest.importorskip("faster_whisper", reason="the teacher is faster-whisper (pip install -e .[corpus])")
    pytest.importorskip("whisper_normalizer", reason="agreement uses Whisper's normaliser (pip install -e .[whisper])")
    jfk = DATA / "jfk" / "audio" / "jfk.flac"
    if not jfk.is_file():
        pytest.skip(f"needs ../shared/data (jfk) at {jfk}")
    from speech.corpus.loader import PackedDataset, read_index, shards_of
    from speech.corpus.manifest import Utterance, write_manifest
    from speech.corpus.pack import pack
    from speech.corpus.whisper_labels import relabel_pack

    spoken = [(w.lower().strip(",."), 0.5 * i, 0.5 * i + 0.4) for i, w in enumerate(JFK_TEXT.split())]
    rows = [Utterance("synthetic/0", str(jfk), "voice", " ".join(w for w, _, _ in spoken), 11.0, 16000, words=spoken,
                      extra={"written": JFK_TEXT.replace("And so", "And so,")}),
            Utterance("real/0", str(jfk), "jfk", JFK_TEXT.upper(), 11.0, 16000),  # agrees after normalising
            Utterance("real/1", str(jfk), "jfk", "something else entirely", 11.0, 16000),  # the teacher disagrees
            Utterance("real/2", str(jfk), "jfk", "", 11.0, 16000, split="train")]  # untranscribed
    write_manifest(tmp_path / "m.jsonl", rows)
    pack([tmp_path / "m.jsonl"], tmp_path / "pack", hours=1.0)
    counts = relabel_pack(tmp_path / "pack", tmp_path / "relabelled", tmp_path / "m.jsonl")
    assert counts == {"written": 1, "teacher": 1, "reference kept": 1, "teacher (untranscribed)": 1}
    shard, new = shards_of(tmp_path / "pack")[0], shards_of(tmp_path / "relabelled")[0]
    assert (new / "audio.bin").read_bytes() == (shard / "audio.bin").read_bytes()
    labels = {r["utt_id"]: r for r in read_index(new)}
    assert labels["synthetic/0"]["text"].startswith("And so, my") and len(labels["synthetic/0"]["words"]) == 22
    assert labels["real/1"]["text"] == "something else entirely" and labels["real/1"]["words"] is None
    for utt in ("real/0", "real/2"):
        words = labels[utt]["words"]
        assert labels[utt]["text"].startswith("And so") and words[-1][0].startswith("country")
        assert all(0 <= s <= e <= 11.1 for _, s, e in words) and [s for _, s, _ in words] == sorted(s for _, s, _ in words)
    loaded = {u.utt_id: u for u in PackedDataset(tmp_path / "relabelled", shuffle=False)}
    assert set(loaded) == set(labels) and loaded["real/2"].words == labels["real/2"]["words"]
