"""`speech mic --vc` with fakes at the sounddevice boundary (no sound card here): a recording played as the
microphone comes out of the speakers as the offline conversion of that recording into the reference voice."""

from __future__ import annotations

import numpy as np
import pytest
import sounddevice
from fake_sound import DEVICES, FakeInputStream, FakeOutputStream

pytest.importorskip("transformers", reason="the whisper extra (transformers) holds the content encoder")
from speech.audio import resample, write_audio
from speech.cli import main
from speech.say import load_tts
from speech.vc_models import load_converter
from tts.flow_step import SolverSettings
from tts.synthesizer import StreamingSynthesizer, synthesize


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """The microphone's speech (16 kHz) and a reference WAV in another voice, made by the shipped TTS."""
    model, vocoder = load_tts()
    say = lambda text, voice: synthesize(StreamingSynthesizer(model, vocoder, SolverSettings(), voice), text)
    source = resample(say("Turn left at the second light, then park by the door.", "awb"), 22050, 16000)
    reference = tmp_path_factory.mktemp("mic-vc") / "reference.wav"
    write_audio(reference, say("We walked along the quiet river until the sun went down.", "slt"), 22050)
    return source.astype(np.float32), reference


@pytest.fixture
def microphone(monkeypatch, recordings):
    FakeInputStream.SIGNAL = recordings[0]
    FakeOutputStream.played, FakeOutputStream.rates = [], []
    monkeypatch.setattr(sounddevice, "InputStream", FakeInputStream)
    monkeypatch.setattr(sounddevice, "OutputStream", FakeOutputStream)
    monkeypatch.setattr(sounddevice, "query_devices",
                        lambda device=None, kind=None: DEVICES if device is None else DEVICES[device])
    monkeypatch.setattr(sounddevice.default, "device", [3, -1])


def test_the_microphone_is_played_in_the_reference_voice(microphone, recordings):
    source, reference = recordings
    assert main(["mic", "--vc", "--voice", str(reference)]) == 0
    played = np.concatenate(FakeOutputStream.played)
    converter = load_converter(steps=1)
    from speech.audio import read_audio

    _, expected = converter.convert_offline(source, converter.voice(read_audio(reference, sample_rate=22050)[0]))
    assert played.shape == expected.shape and np.abs(played - expected).max() < 1e-4
    assert FakeOutputStream.rates == [22050]


def test_the_microphone_is_converted_by_a_server(microphone, recordings):
    """``--server``: a VC session at the microphone's rate; the reference file goes first, then the microphone.
    What plays is the in-process live conversion, at the microphone's rate (batched on the server's lanes)."""
    from server_thread import served

    from speech.audio import read_audio
    from streaming.blocks import StreamingResampler

    source, reference = recordings
    rate = int(DEVICES[3]["default_samplerate"])
    with served([{"name": "vc", "family": "vc", "max_wait_ms": 5}]) as url:
        assert main(["mic", "--vc", "--voice", str(reference), "--server", url]) == 0
    played = np.concatenate(FakeOutputStream.played)
    converter = load_converter(steps=1)
    stream = converter.stream(converter.voice(resample(read_audio(reference, sample_rate=rate)[0], rate, 22050)))
    to_model = StreamingResampler(rate, 16000)
    heard = np.concatenate([stream.process(to_model.process(resample(source, 16000, rate), last=True)), stream.finish()])
    expected = StreamingResampler(22050, rate).process(heard, last=True)
    assert FakeOutputStream.rates == [rate] and abs(len(played) - len(expected)) <= 2 and len(played) > rate
    n = min(len(played), len(expected))
    assert np.abs(played[:n] - expected[:n]).max() < 1e-3


def test_vc_needs_a_voice_and_refuses_in_process_options_with_a_server(microphone, capsys):
    assert main(["mic", "--vc"]) == 2
    assert "--vc needs --voice REF.wav" in capsys.readouterr().err
    assert main(["mic", "--vc", "--voice", "x.wav", "--server", "ws://127.0.0.1:9", "--steps", "2"]) == 2
    assert "with --server the server's model converts" in capsys.readouterr().err
