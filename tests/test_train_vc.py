"""`speech train vc` end to end on the CPU: a tiny Opus pack of two speakers, Whisper tiny.en's encoder as the
content encoder (exported as the GPU gets it), a few steps, the written model loading, and a resumed call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the whisper extra (transformers) holds the content encoder")
pytest.importorskip("av", reason="the corpus extra (PyAV) encodes the pack's Opus")
from asr.whisper.model import CausalWhisper
from speech.audio import write_audio
from speech.bench.nemo_reference import random_speechlike
from speech.cli import main
from speech.corpus.manifest import Utterance, write_manifest
from speech.corpus.pack import pack
from speech.whisper_models import whisper_directory
from vc.model import load_vc

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "vc.yaml"
TINY = "{content_dim: 384, content_layers: 2, content_window: 100, blocks: 1, dim: 32, cond_dim: 16, heads: 2, " \
       "ffn: 64, ref_dim: 32, ref_layers: 1, prompt_tokens: 40, left_context: 12}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-vc")
    utts = []
    for i in range(6):
        path = root / f"u{i}.wav"
        write_audio(path, random_speechlike(2.0 + 0.3 * i, seed=i), 16000)
        utts.append(Utterance(f"u{i}", path.name, f"speaker{i % 2}", "", 2.0 + 0.3 * i, 16000))
    write_manifest(root / "manifest.jsonl", utts)
    pack([root / "manifest.jsonl"], root / "pack", hours=1.0, max_mib=10.0)
    from safetensors.torch import save_file

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEECH_CACHE", str(root / "cache"))
        directory = whisper_directory("tiny.en")
        stack = CausalWhisper.load(directory).encoder
    encoder = root / "encoder"
    encoder.mkdir()
    save_file({k: v.half().contiguous() for k, v in stack.hf.state_dict().items()}, str(encoder / "encoder.safetensors"))
    (encoder / "config.json").write_text((directory / "config.json").read_text())
    return root / "pack", encoder


def test_train_vc_writes_a_loadable_model_and_resumes(inputs, tmp_path, capsys):
    pack_dir, encoder = inputs
    out = tmp_path / "run"
    settings = [f"pack={pack_dir}", f"out={out}", f"encoder={encoder}", "batch=3", "warmup_steps=1",
                "segment_frames=48", "val_fraction=0.34", f"model={TINY}"]
    assert main(["train", "vc", "--config", str(RECIPE), "--set", *settings, "total_steps=3"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["step"] == 3 and report["data"]["speakers"] == 2 and report["data"]["renderings"] == 3
    assert all(0 < v < 10 for v in report["validation"].values())
    model = load_vc(out)
    assert model.cfg.content_layers == 2 and next(model.parameters()).dtype == torch.float32
    assert (out / "features.pt").is_file()  # the next call skips the content encoder
    assert main(["train", "vc", "--config", str(RECIPE), "--set", *settings, "total_steps=5"]) == 0
    assert json.loads((out / "report.json").read_text())["step"] == 5
    assert "resumed at step 3" in capsys.readouterr().err
