"""`speech mic` with a fake at the sounddevice boundary (this machine has no sound card): a real recording
played as the microphone gives the captions of the in-process streaming run, in-process and via a server.
And the real sounddevice, with no input device here, gives a clear message."""

from __future__ import annotations

import json

import pytest
import sounddevice
from fake_sound import DEVICES, FakeInputStream
from real_audio import real_recordings
from server_thread import served

from asr.fastconformer.recognizer import Recognizer
from speech.asr_models import load_fastconformer
from speech.cli import main


@pytest.fixture
def fake_microphone(monkeypatch):
    _name, audio = real_recordings(1)[0]
    FakeInputStream.SIGNAL = audio
    monkeypatch.setattr(sounddevice, "InputStream", FakeInputStream)
    monkeypatch.setattr(sounddevice, "query_devices",
                        lambda device=None, kind=None: DEVICES if device is None else DEVICES[device])
    monkeypatch.setattr(sounddevice.default, "device", [3, -1])
    finals = [e.text for e in Recognizer(load_fastconformer(None), 80.0).transcribe(audio) if e.final]
    return finals


def _finals(output: str) -> list[str]:
    return [m["text"] for m in map(json.loads, output.splitlines()) if m["type"] == "final"]


def test_mic_in_process_captions_equal_the_streaming_run(fake_microphone, capsys):
    assert main(["mic", "--format", "json"]) == 0
    assert _finals(capsys.readouterr().out) == fake_microphone
    assert main(["mic", "--list-devices"]) == 0
    listed = capsys.readouterr().out
    assert "USB Microphone" in listed and "HDMI" not in listed


def test_mic_through_a_server(fake_microphone, capsys):
    with served([{"name": "fastconformer", "family": "fastconformer", "default_lookahead_ms": 80}]) as url:
        assert main(["mic", "--server", url, "--device", "usb", "--format", "json"]) == 0
    assert _finals(capsys.readouterr().out) == fake_microphone


def test_mic_without_an_input_device_says_so(capsys):
    if any(d["max_input_channels"] > 0 for d in sounddevice.query_devices()):
        pytest.skip("this machine has an input device")
    assert main(["mic"]) == 2
    assert "no input device" in capsys.readouterr().err
    assert main(["mic", "--list-devices"]) == 1
