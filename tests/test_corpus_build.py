"""`speech corpus build` end to end on two fast voices: gate, splits, manifest, byte-identical rerun, pack, loader."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from speech.cli import main
from speech.corpus.loader import PackedDataset, collate
from speech.corpus.manifest import audio_path, read_manifest
from speech.corpus.pack import pack
from speech.corpus.voices import words_of

pytest.importorskip("faster_whisper", reason="the intelligibility gate needs faster-whisper (pip install -e .[corpus])")
if not all(shutil.which(p) for p in ("espeak-ng", "flite", "festival")):
    pytest.skip("espeak-ng, flite and festival are needed (scripts/setup.sh installs them)", allow_module_level=True)

VOICES = ["espeak/en-us+m3", "flite/kal16", "festival/ked"]  # the last is a test voice


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "synth"
    assert main(["corpus", "build", "--hours", "0.02", "--seed", "3", "--out", str(out), "--no-install",
                 "--voices", *VOICES]) == 0
    return out


def test_build_writes_manifest_report_and_audio(built):
    utts = read_manifest(built / "manifest.jsonl")
    report = json.loads((built / "report.json").read_text())
    used = [v for v in report["voices"] if not v["excluded"]]
    assert report["hours"] >= 0.02 * 0.95 and len(used) >= 2
    assert {u.voice for u in utts} == {v["voice"] for v in used}
    assert report["test_voices"] == ["festival/ked"]
    for u in utts:
        assert u.split == ("test" if u.voice == "festival/ked" else "train")
        assert u.licence and u.engine in ("espeak", "flite", "festival") and u.speaker == u.voice
        audio, rate = sf.read(audio_path(built / "manifest.jsonl", u), dtype="float32")
        assert rate == u.sample_rate and abs(len(audio) / rate - u.duration_s) < 1e-3
        assert [w for w, _, _ in u.words] == words_of(u.text)
        assert all(0 <= s <= e <= u.duration_s + 1e-3 for _, s, e in u.words)
    # the first sentences of the training voices are the same text (parallel data for VC)
    train = sorted({u.voice for u in utts if u.split == "train"})
    first = [next(u.text for u in utts if u.voice == v) for v in train]
    assert len(set(first)) == 1


def test_rebuild_with_the_same_seed_is_byte_identical(built, tmp_path):
    again = tmp_path / "again"
    assert main(["corpus", "build", "--hours", "0.02", "--seed", "3", "--out", str(again), "--no-install",
                 "--voices", *VOICES]) == 0
    files = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file() and p.name != "timing.json")
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.name != "timing.json")
    for rel in files:
        assert (built / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_unintelligible_voice_is_excluded_and_reported(monkeypatch, tmp_path):
    from speech.corpus import build as build_module

    monkeypatch.setattr(build_module, "MAX_WER", -1.0)  # no voice can pass: every one must be reported
    with pytest.raises(SystemExit, match="no voice passed"):
        build_module.build(build_module.BuildConfig(out=str(tmp_path / "none"), hours=0.01, voices=("flite/kal16",),
                                                    install=False, workers=1))


def test_pack_and_loader_round_trip(built, tmp_path):
    report = pack([built / "manifest.jsonl"], tmp_path / "pack", hours=1.0, max_mib=0.05, splits=("train", "test"))
    utts = {u.utt_id: u for u in read_manifest(built / "manifest.jsonl")}
    assert report.utterances == len(utts) and len(report.shards) > 1
    for shard in report.shards:
        folder = tmp_path / "pack" / shard
        assert sum(f.stat().st_size for f in folder.iterdir()) <= 0.05 * 2**20 or len(
            (folder / "index.jsonl").read_text().splitlines()) == 1
    seen = list(PackedDataset(tmp_path / "pack", seed=1))
    assert sorted(u.utt_id for u in seen) == sorted(utts)
    for u in seen:
        ref = utts[u.utt_id]
        assert u.text == ref.text and [w for w, _, _ in u.words] == [w for w, _, _ in ref.words]
        assert abs(len(u.audio) / 16000 - ref.duration_s) < 0.01
        assert np.sqrt(np.mean(u.audio**2)) > 0.005
    batch = collate(seen[:4])
    assert batch["audio"].shape == (4, int(batch["lengths"].max()))
