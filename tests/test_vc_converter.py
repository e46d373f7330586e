"""A live conversion (content step -> VC step -> streaming vocoder) equals the offline conversion, for any
piece sizes, and its memory does not grow with the session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the whisper extra (transformers) holds the converted model")
from asr.whisper.model import CausalWhisper
from speech.bench.nemo_reference import random_speechlike
from speech.say import load_tts_vocoder
from speech.whisper_models import whisper_directory
from tts.flow_step import SolverSettings
from vc.content import ContentEncoder
from vc.converter import Converter, mel_frames_for
from vc.model import VCConfig, VCModel


@pytest.fixture(scope="module")
def converter(tmp_path_factory) -> Converter:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEECH_CACHE", str(tmp_path_factory.mktemp("speech-cache")))
        stack = CausalWhisper.load(whisper_directory("tiny.en")).encoder
    torch.manual_seed(0)
    cfg = VCConfig(content_dim=stack.d_model, content_layers=2, content_window=50, dim=48, cond_dim=16, blocks=2,
                   heads=2, ffn=96, left_context=20, ref_dim=32, ref_layers=1, prompt_tokens=40)
    model = VCModel(cfg).eval()
    return Converter(ContentEncoder(stack, cfg.content_layers, cfg.content_window), model, load_tts_vocoder(),
                     SolverSettings(steps=2, chunk=6))


@pytest.mark.parametrize("piece", [160, 997, 4000])
def test_live_conversion_equals_offline(converter, piece):
    source = random_speechlike(2.3, seed=4)
    voice = converter.voice(random_speechlike(3.0, seed=9))
    _, offline = converter.convert_offline(source, voice)
    stream = converter.stream(voice)
    out = [stream.process(source[i : i + piece]) for i in range(0, len(source), piece)]
    live = np.concatenate([*out, stream.finish()])
    assert len(offline) == mel_frames_for(len(source)) * 256
    assert live.shape == offline.shape
    assert np.abs(live - offline).max() < 1e-4
    assert stream.feed.content.shape[-1] <= 3  # content no later mel frame reads is dropped


def test_audio_comes_out_while_the_source_is_still_arriving(converter):
    source = random_speechlike(1.5, seed=5)
    stream = converter.stream(converter.voice(random_speechlike(3.0, seed=9)))
    heard = [len(stream.process(source[i : i + 1600])) for i in range(0, len(source), 1600)]  # 100 ms pieces
    assert sum(heard[:3]) > 0  # within the first 300 ms of input
    assert all(h > 0 for h in heard[3:])  # and then with every piece


def test_too_short_sources_and_references_are_refused(converter):
    voice = converter.voice(random_speechlike(3.0, seed=9))
    with pytest.raises(ValueError, match="shorter than one output frame"):
        converter.convert_offline(np.zeros(100, np.float32), voice)
    with pytest.raises(ValueError, match="at least 1 s is needed"):
        converter.voice(np.zeros(20000, np.float32))


def test_onnx_runtime_steps_equal_torch(converter, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) runs the exported steps")
    from dataclasses import replace

    from exports.onnx_export import export_step
    from streaming.onnx_backend import OnnxBackend

    onnx = replace(converter, backend=OnnxBackend(lambda step: export_step(step, tmp_path / f"{step.name}.onnx")))
    source = random_speechlike(1.7, seed=6)
    voice = converter.voice(random_speechlike(3.0, seed=9))
    outs = {}
    for name, conv in (("torch", converter), ("onnx", onnx)):
        stream = conv.stream(voice)
        sizes = [997, 160, 3000, 2345]  # content steps of 1 to 9 frames: the exported time axis is free
        pieces, at = [], 0
        while at < len(source):
            size = sizes[len(pieces) % len(sizes)]
            pieces.append(stream.process(source[at : at + size]))
            at += size
        outs[name] = np.concatenate([*pieces, stream.finish()])
    assert outs["onnx"].shape == outs["torch"].shape
    assert np.abs(outs["onnx"] - outs["torch"]).max() < 1e-4
