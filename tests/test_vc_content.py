"""VC content features: the frame-causal Whisper encoder streams exactly as its offline form, at any length."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the whisper extra (transformers) holds the converted model")
from asr.whisper.features import causal_features
from asr.whisper.model import CausalWhisper
from speech.bench.nemo_reference import random_speechlike
from speech.whisper_models import whisper_directory
from streaming.inline import advance
from vc.content import ContentEncoder, ContentStep, content_frames_needed, content_index, mel_frames_readable

TOL = 1e-4


@pytest.fixture(scope="module")
def stack64(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEECH_CACHE", str(tmp_path_factory.mktemp("speech-cache")))
        return CausalWhisper.load(whisper_directory("tiny.en"), dtype=torch.float64).encoder


def _stream(step: ContentStep, features: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    state = step.initial_state(1)
    state = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in state.items()}
    outs, at = [], 0
    for frames in sizes:
        out, nxt = step.step({"mel": features[..., 2 * at : 2 * (at + frames)]}, state)
        advance(state, nxt)
        outs.append(out["content"])
        at += frames
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize(("layers", "window"), [(4, 1500), (2, 37)])
def test_content_stream_equals_offline_over_random_pieces(stack64, layers, window):
    features = causal_features(torch.from_numpy(random_speechlike(3.1, seed=5))[None]).double()
    total = features.shape[-1] // 2
    encoder = ContentEncoder(stack64, layers, window)
    rng = np.random.default_rng(0)
    sizes, left = [], total
    while left:
        sizes.append(min(left, int(rng.integers(1, 9))))
        left -= sizes[-1]
    step = ContentStep(encoder)  # any whole number of frames per call
    streamed = _stream(step, features, sizes)
    offline = encoder(features)
    assert streamed.shape == offline.shape == (1, total, stack64.d_model)
    assert (streamed - offline).abs().max() < TOL
    # frame-causal: a frame does not depend on anything after it
    changed = encoder(torch.cat([features[..., :40], -features[..., 40:]], dim=-1))
    assert (changed[:, :20] - offline[:, :20]).abs().max() < TOL
    assert (changed[:, 20:] - offline[:, 20:]).abs().max() > 1e-2


def test_past_thirty_seconds_positions_wrap_and_memory_stays_fixed(stack64):
    features = causal_features(torch.from_numpy(random_speechlike(31.0, seed=8))[None]).double()
    total = features.shape[-1] // 2
    assert total > stack64.capacity
    encoder = ContentEncoder(stack64, 1, window=64)
    step = ContentStep(encoder)
    streamed = _stream(step, features, [50] * (total // 50) + ([total % 50] if total % 50 else []))
    offline = encoder(features)
    assert (streamed - offline).abs().max() < TOL
    shapes = {s.name: s.shape for s in step.signature.states}
    assert shapes["keys"] == (1, 64, stack64.d_model)


def test_mel_frames_read_the_content_frame_under_their_centre():
    m = torch.arange(0, 1000)
    index = content_index(m)
    centre_s = (m * 256 + 128) / 22050
    assert torch.equal(index, torch.floor(centre_s / 0.02).long())
    assert content_frames_needed(6) == int(index[5]) + 1 and content_frames_needed(0) == 0
    for available in range(400):  # the inverse: exactly the mel frames whose content frame exists
        assert mel_frames_readable(available) == int((index < available).sum())
