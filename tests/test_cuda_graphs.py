"""CUDA-graph replay of the TTS steps (streaming.cuda_graphs) on a GPU: the same audio as eager PyTorch on the
same device, graphs captured once and shared by every stream of one model. Skips without CUDA (run it on
the lent GPU: scripts/device_tts_ttfa.py's folder carries what the image lacks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("CUDA graphs need a CUDA device", allow_module_level=True)

from speech.say import DEFAULT_TTS, DEFAULT_VOCODER
from streaming.cuda_graphs import CudaGraphBackend, GraphedStep
from tts.acoustic import load_acoustic
from tts.flow_step import SolverSettings
from tts.hifigan import load_vocoder
from tts.synthesizer import StreamingSynthesizer

IDS = [12, 40, 7, 33, 21, 5, 18, 44, 9, 27, 30, 14, 3, 38, 25, 11, 36, 16, 8, 29] * 3


@pytest.fixture(scope="module")
def models():
    device = torch.device("cuda")
    return load_acoustic(DEFAULT_TTS).to(device), load_vocoder(DEFAULT_VOCODER).to(device)


def speak(models, backend, ids=IDS, split=17) -> np.ndarray:
    model, vocoder = models
    synthesizer = StreamingSynthesizer(model, vocoder, SolverSettings(steps=4, chunk=16), model.cfg.speaking_voice,
                                       backend=backend)
    pieces = [*synthesizer.push_ids(ids[:split]), *synthesizer.push_ids(ids[split:]), *synthesizer.finish_ids([])]
    return np.concatenate(pieces)


def test_graph_replays_give_the_eager_audio(models):
    eager = speak(models, None)
    graphed = speak(models, CudaGraphBackend())
    assert len(graphed) == len(eager) > 22050
    assert np.abs(graphed - eager).max() <= 1e-4


def test_streams_of_one_model_share_their_graphs_and_keep_their_own_state(models):
    backend = CudaGraphBackend()
    first = speak(models, backend)
    steps = [graphed for _, graphed in backend._prepared.values()]
    assert len(steps) == 2 and all(isinstance(s, GraphedStep) for s in steps)  # the flow step, the vocoder step
    assert [len(s._graphs) for s in steps] == [1, 1]  # the 16-frame chunk of each; a last short one runs eagerly
    other = speak(models, backend, IDS[::-1], split=5)  # another text, cut elsewhere
    again = speak(models, backend)
    assert len(backend._prepared) == 2 and len(steps[0]._graphs) == 1
    assert np.array_equal(first, again) and len(other) and not np.array_equal(other[: len(first)], first[: len(other)])
