"""`speech transcribe`, `speech bench asr-quality` and `speech train asr-fastconformer` end to end on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.fastconformer.config import EncoderConfig, FastConformerConfig, HeadsConfig
from asr.fastconformer.model import FastConformer
from asr.tokenizer import Tokenizer
from speech.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("model")
    (d / "t.txt").write_text("\n".join(["the quick brown fox jumps over the lazy dog"] * 50))
    spm.SentencePieceTrainer.train(input=str(d / "t.txt"), model_prefix=str(d / "sp"), vocab_size=40,
                                   model_type="unigram", minloglevel=2, hard_vocab_limit=False)
    tok = Tokenizer.from_file(d / "sp.model")
    torch.manual_seed(0)
    cfg = FastConformerConfig(EncoderConfig(n_layers=1, d_model=32, n_heads=2, subsampling_conv_channels=8,
                                            att_context_size=((70, 6), (70, 1))),
                              HeadsConfig(vocab_size=tok.vocab_size, pred_hidden=16, joint_hidden=16))
    model = FastConformer(cfg, tok)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save(d / "fc")
    return d / "fc"


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("wav")
    rng = np.random.default_rng(0)
    paths = []
    for i, (seconds, rate) in enumerate(((1.7, 16000), (2.3, 44100))):
        path = d / f"a{i}.wav"
        sf.write(path, (0.2 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)
        paths.append(path)
    return paths


def test_transcribe_events_text_json_and_offline(model_dir, wavs, capsys):
    files = [str(p) for p in wavs]
    assert main(["transcribe", "--model", str(model_dir), "--lookahead", "80ms", *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    finals = [ln for ln in lines if "\tfinal\t" in ln]
    assert {ln.split("\t")[0] for ln in finals} <= set(files) and finals
    assert main(["transcribe", "--model", str(model_dir), "--format", "text", "--no-endpoint", *files]) == 0
    text = capsys.readouterr().out.splitlines()
    assert len(text) == 2
    assert main(["transcribe", "--model", str(model_dir), "--format", "text", "--offline", "--lookahead",
                 "0.48s", *files]) == 0
    assert capsys.readouterr().out.splitlines() == text  # streaming == offline at 480 ms
    assert main(["transcribe", "--model", str(model_dir), "--format", "json", files[0]]) == 0
    for line in capsys.readouterr().out.splitlines():
        assert {"file", "final", "segment", "text", "words"} <= set(json.loads(line))


def test_transcribe_manifest(model_dir, wavs, tmp_path, capsys):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("utt_id\tpath\tspeaker\tduration_s\tsample_rate\ttext\n"
                        + "".join(f"u{i}\t{p}\ts\t1\t16000\tx\n" for i, p in enumerate(wavs)))
    out = tmp_path / "hyp.tsv"
    assert main(["transcribe", "--model", str(model_dir), "--manifest", str(manifest), "--out", str(out)]) == 0
    assert [ln.split("\t")[0] for ln in out.read_text().splitlines()] == ["u0", "u1"]


def test_transcribe_errors_are_one_clear_line(model_dir, wavs, tmp_path, capsys):
    assert main(["transcribe", "--model", str(model_dir), "--lookahead", "90ms", str(wavs[0])]) == 2
    assert "offers 480ms, 80ms" in capsys.readouterr().err
    assert main(["transcribe", "--model", str(tmp_path / "nothing"), str(wavs[0])]) == 2
    assert "not a .nemo file or a model directory" in capsys.readouterr().err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    assert main(["transcribe", "--model", str(model_dir), "--format", "text", str(bad), str(wavs[0])]) == 1
    captured = capsys.readouterr()
    assert "cannot read audio" in captured.err and len(captured.out.splitlines()) == 1


def test_asr_quality_bench(model_dir, tmp_path, capsys):
    data = ROOT.parent / "shared" / "data" / "jfk"
    if not (data / "manifest.tsv").is_file():
        pytest.skip(f"needs ../shared/data (jfk) at {data}")
    from speech.corpus.manifest import Utterance, write_manifest

    audio = next((data / "audio").iterdir())
    text = (data / "manifest.tsv").read_text().splitlines()[1].split("\t")[-1]
    (tmp_path / "real").mkdir()
    write_manifest(tmp_path / "real" / "jfk.jsonl", [Utterance(utt_id="jfk", path=str(audio), speaker="jfk", text=text,
                                                               duration_s=11.0, sample_rate=16000, voice="jfk")])
    out = tmp_path / "q.json"
    assert main(["bench", "asr-quality", "--model", str(model_dir), "--real", str(tmp_path / "real"),
                 "--synth", str(tmp_path / "none"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "jfk (1)" in printed and "skipped an4/test" in printed
    results = json.loads(out.read_text())["results"]["wer"]
    assert set(results) == {"480ms", "80ms"} and results["80ms"]["jfk"]["wer"] >= 0


def test_train_recipe_runs_and_resumes(tmp_path):
    """Two short CPU calls on a tiny pack: the second resumes from the first's checkpoint."""
    from speech.corpus.pack import pack

    data = ROOT.parent / "shared" / "data" / "jfk"
    if not (data / "manifest.tsv").is_file():
        pytest.skip(f"needs ../shared/data (jfk) at {data}")
    from speech.corpus.manifest import Utterance, write_manifest

    audio = next((data / "audio").iterdir())
    text = (data / "manifest.tsv").read_text().splitlines()[1].split("\t")[-1]
    utts = [Utterance(utt_id=f"jfk{i}", path=str(audio), speaker="jfk", text=text, duration_s=11.0,
                      sample_rate=16000, voice="jfk", split="train") for i in range(3)]
    write_manifest(tmp_path / "m.jsonl", utts)
    pack([tmp_path / "m.jsonl"], tmp_path / "pack", hours=1, max_mib=10, splits=("train",), seed=0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"packs: [{tmp_path / 'pack'}]\nval_pack: {tmp_path / 'pack'}\nout: {tmp_path / 'run'}\n"
        "encoder: {n_layers: 1, d_model: 32, n_heads: 2, subsampling_conv_channels: 8, "
        "att_context_size: [[70, 6], [70, 1]], global_cmvn: true}\nheads: {pred_hidden: 16, joint_hidden: 16}\n"
        "vocab_size: 40\nbatch_seconds: 40\nworkers: 0\nval_utterances: 2\n")
    run = [sys.executable, "-m", "speech.cli", "train", "asr-fastconformer", "--config", str(cfg)]
    first = subprocess.run([*run, "--total-steps", "2"], capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run([*run, "--total-steps", "4"], capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert second.returncode == 0 and "resumed at step 2" in second.stderr, second.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["step"] == 4 and set(report["validation_wer"]) == {"480ms", "80ms"}
    trained = FastConformer.load(tmp_path / "run" / "model")
    assert trained.cfg.encoder.n_layers == 1
    from speech.audio import read_audio

    mel, frames = trained.features(torch.from_numpy(read_audio(audio, sample_rate=16000)[0])[None])
    mean = mel[0, :, : int(frames[0])].mean(dim=1)  # the pack holds jfk alone (Opus-coded: close, not equal)
    assert float((trained.encoder.cmvn_mean - mean).abs().mean()) < 0.5 < float(mean.abs().mean())
    tuned = subprocess.run([*run, "--total-steps", "1", "--out", str(tmp_path / "tuned"), "--set",
                            f"init_from={tmp_path / 'run' / 'model'}"], capture_output=True, text=True, cwd=ROOT,
                           timeout=600, check=False)
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    fine = FastConformer.load(tmp_path / "tuned" / "model")
    assert fine.tokenizer.proto == trained.tokenizer.proto
    assert torch.equal(fine.encoder.cmvn_mean, trained.encoder.cmvn_mean)  # kept, not re-estimated


def test_shipped_default_model_transcribes_an4(tmp_path):
    """The default model end to end: `speech transcribe --manifest` with no --model on 24 an4/test utterances.

    The card measures 9.7% WER on 100 of them at 480 ms with CTC, the model's default decoder (RNNT: ~21%);
    a broken front end, CMVN or weights gives ~100%.
    """
    data = ROOT.parent / "shared" / "data" / "an4"
    if not (data / "test.tsv").is_file():
        pytest.skip(f"needs ../shared/data (an4) at {data}")
    rows = (data / "test.tsv").read_text().splitlines()
    manifest = tmp_path / "m.tsv"
    absolute = [rows[0]] + ["\t".join([c[0], str(data / c[1]), *c[2:]]) for c in (r.split("\t") for r in rows[1:25])]
    manifest.write_text("\n".join(absolute) + "\n")  # paths in a manifest are relative to its folder
    refs = {r.split("\t")[0]: r.split("\t")[-1] for r in rows[1:25]}
    out = tmp_path / "hyp.tsv"
    assert main(["transcribe", "--manifest", str(manifest), "--out", str(out), "--lookahead", "480ms"]) == 0
    hyps = dict(line.split("\t", 1) if "\t" in line else (line, "") for line in out.read_text().splitlines())
    from asr.text import wer

    assert wer([refs[k] for k in refs], [hyps.get(k, "") for k in refs]) < 0.25
