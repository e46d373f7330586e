"""int8 encoder weights (`speech transcribe --int8`): what is quantized, how close it stays, and its benchmark row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from asr.fastconformer.quantize import quantize_int8
from asr.fastconformer.recognizer import EndpointConfig, Recognizer
from asr.text import wer
from speech.asr_models import load_fastconformer
from speech.audio import read_audio

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _an4(n: int) -> list[tuple[np.ndarray, str]]:
    manifest = DATA / "an4" / "test.tsv"
    if not manifest.is_file():
        pytest.skip(f"needs ../shared/data (an4) at {manifest}")
    rows = [r.split("\t") for r in manifest.read_text().splitlines()[1 : n + 1]]
    return [(read_audio(manifest.parent / r[1], sample_rate=16000)[0], r[-1]) for r in rows]


def test_linear_layers_become_int8_except_the_cached_position_projection():
    model = load_fastconformer(None)
    quantize_int8(model.encoder)
    quantized = torch.ao.nn.quantized.dynamic.Linear
    modules = dict(model.encoder.named_modules())
    assert isinstance(modules["layers.0.self_attn.linear_q"], quantized)
    assert isinstance(modules["layers.0.feed_forward1.linear1"], quantized)
    assert type(modules["layers.0.self_attn.linear_pos"]) is nn.Linear
    assert not any(type(m) is nn.Linear for n, m in modules.items() if not n.endswith("linear_pos"))


def test_int8_refuses_a_gpu_model():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to hold the model")
    with pytest.raises(ValueError, match="CPU only"):
        quantize_int8(nn.Linear(4, 4).cuda())


def test_int8_streaming_tracks_fp32_on_real_speech():
    """The shipped model on 24 an4/test utterances at 480 ms: int8 encoder outputs stay close, WER barely moves."""
    items = _an4(24)
    fp32 = load_fastconformer(None)
    int8 = load_fastconformer(None)
    quantize_int8(int8.encoder)
    context = fp32.cfg.encoder.context_for_lookahead_ms(480)
    x = torch.from_numpy(items[0][0])[None]
    with torch.inference_mode():
        ref, _ = fp32.encode(x, context=context)
        got, _ = int8.encode(x, context=context)
    relative = float((got - ref).norm() / ref.norm())
    assert relative < 0.1, f"int8 encoder output is {relative:.3f} of the fp32 norm away"
    refs = [text for _, text in items]
    wers = []
    for model in (fp32, int8):
        recognizer = Recognizer(model, 480, None, EndpointConfig(enabled=False))
        hyps = [" ".join(h.text for h in recognizer.transcribe(audio) if h.final) for audio, _ in items]
        wers.append(wer(refs, hyps))
    assert wers[1] <= wers[0] + 0.03, f"WER fp32 {wers[0]:.3f}, int8 {wers[1]:.3f}"


def test_bench_reports_int8_against_nemo(tmp_path):
    pytest.importorskip("nemo.collections.asr", reason="nemo_toolkit[asr] is the reference (the `nemo` extra)")
    from speech.bench import asr_fastconformer as bench

    cfg = bench.AsrFastConformerBenchConfig(batches=(1, 2), dtypes=("fp32", "int8"), chunks=2, warmup=2,
                                            n_layers=2, d_model=64, n_heads=2)
    results = bench.main(cfg, str(tmp_path / "b.json"))
    for key in ("fp32/batch1", "int8/batch1", "int8/batch2"):
        assert results[key]["ours"]["p50_ms"] > 0 and results[key]["nemo"]["p50_ms"] > 0
        assert results[key]["state_bytes_per_stream"]["ours"] > 0
    assert (tmp_path / "b.json").is_file()
