"""`speech convert` end to end with the shipped models: one file, and a pairs file with a bad row."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the whisper extra (transformers) holds the content encoder")
pytest.importorskip("librosa", reason="the corpus extra holds the d-vector judge")
from speech.audio import read_audio, write_audio
from speech.cli import main
from speech.judges.speaker import dvector
from speech.say import load_tts
from tts.flow_step import SolverSettings
from tts.synthesizer import StreamingSynthesizer, synthesize

RATE = 22050


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory):
    """A source in one built-in TTS voice and a reference in another (no shared data needed)."""
    folder = tmp_path_factory.mktemp("vc-cli")
    model, vocoder = load_tts()
    settings = SolverSettings(steps=4)

    def say(text: str, voice: str) -> np.ndarray:
        return synthesize(StreamingSynthesizer(model, vocoder, settings, voice), text)

    files = {"source": say("Please send the package to the office before noon on Friday.", "joe"),
             "reference": say("The weather was bright and clear, and we walked along the river for an hour.", "lj")}
    for name, audio in files.items():
        write_audio(folder / f"{name}.wav", audio, RATE)
    return folder


def _d16(path) -> np.ndarray:
    return dvector(read_audio(path, sample_rate=16000)[0])


def test_convert_one_file_keeps_the_length_and_takes_the_reference_voice(speech_files, tmp_path):
    out = tmp_path / "out.wav"
    source, reference = speech_files / "source.wav", speech_files / "reference.wav"
    assert main(["convert", str(source), "--voice", str(reference), "-o", str(out)]) == 0
    audio, rate = read_audio(out)
    source_audio = read_audio(source, sample_rate=16000)[0]
    assert rate == RATE
    assert abs(len(audio) / RATE - len(source_audio) / 16000) < 0.02
    assert np.sqrt(np.mean(audio**2)) > 0.01
    converted = _d16(out)
    assert float(converted @ _d16(reference)) > float(converted @ _d16(source))


def test_convert_pairs_writes_every_good_row_and_names_the_bad_one(speech_files, tmp_path, capsys):
    pairs = speech_files / "pairs.tsv"
    pairs.write_text("id\tsource\treference\ngood\tsource.wav\treference.wav\nbad\tmissing.wav\treference.wav\n")
    out_dir = tmp_path / "out"
    assert main(["convert", "--pairs", str(pairs), "--out-dir", str(out_dir), "--steps", "1"]) == 1
    assert (out_dir / "good.wav").is_file() and not (out_dir / "bad.wav").exists()
    err = capsys.readouterr().err
    assert "bad: cannot read audio" in err and "wrote 1 files" in err and "1 failed" in err


@pytest.mark.parametrize(("args", "message"), [
    (["convert", "x.wav"], "SOURCE needs --voice REF.wav and -o OUT.wav"),
    (["convert"], "give exactly one of"),
    (["convert", "--pairs", "p.tsv"], "--pairs needs --out-dir DIR"),
])
def test_convert_refuses_incomplete_requests(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err
