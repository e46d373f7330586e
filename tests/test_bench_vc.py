"""`speech bench vc` end to end on two held-out pairs (needs ../shared/data): the tables, the JSON, and that
no pair crosses the held-out line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the whisper extra (transformers) holds the content encoder")
from speech.bench.vc import choose_pairs
from speech.cli import main
from speech.corpus.vc_split import heldout_libri_speakers

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "vctk13").is_dir(), reason=f"needs ../shared/data at {DATA}")


@needs_data
def test_pairs_use_held_out_speakers_only():
    pairs = choose_pairs(DATA, 40, 10)
    libri = [line.split("\t")[2] for line in (DATA / "librispeech_speakers200" / "manifest.tsv").read_text().splitlines()[1:]]
    held = heldout_libri_speakers(libri)
    assert len(held) == 20 and len(pairs) == 40  # VCTK fills in the Allison share without `speech corpus real`
    assert len({p["source"]["utt_id"] for p in pairs}) == 40
    for pair in pairs:
        reference = pair["reference"]
        assert reference["speaker"] in held or reference["speaker"] in ("p227", "p228")
        assert reference["speaker"] != pair["source"]["speaker"]


@needs_data
def test_bench_vc_prints_and_writes_every_measure(tmp_path, capsys):
    out = tmp_path / "vc.json"
    assert main(["bench", "vc", "--pairs", "2", "--allison", "0", "--latency-seconds", "2", "--long-minutes", "0.05",
                 "--steps", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for heading in ("dvector", "WER %", "MeanVC (published)", "p50 / chunk", "held state (MB)"):
        assert heading in printed
    results = json.loads(out.read_text())["results"]
    assert results["summary"]["pairs"] == 2
    assert 0 < results["latency"]["max_ms"] < 1000
    long = results["long_session"]  # fixed states; only a few pending frames come and go
    assert abs(long["held_bytes_last"] - long["held_bytes_first"]) < 0.01 * long["held_bytes_first"]
