"""Audio utilities: formats, PCM16 <-> float32, mono mixdown, resampling, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speech.audio import (
    AudioError,
    float32_to_pcm16,
    pcm16_to_float32,
    read_audio,
    resample,
    to_mono,
    write_audio,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("suffix, tolerance", [(".wav", 1 / 32768), (".flac", 1 / 32768), (".ogg", 0.05)])
def test_write_read_round_trip(tmp_path, suffix, tolerance):
    audio = tone(0.5, 16000)
    path = tmp_path / f"tone{suffix}"
    write_audio(path, audio, 16000)
    back, rate = read_audio(path)
    assert rate == 16000 and back.dtype == np.float32 and back.ndim == 1
    n = min(len(back), len(audio))
    assert np.abs(back[:n] - audio[:n]).max() <= tolerance


def test_stereo_is_mixed_down_and_resampled_on_read(tmp_path):
    left, right = tone(1.0, 48000, 300), tone(1.0, 48000, 500)
    path = tmp_path / "stereo.wav"
    write_audio(path, np.stack([left, right], axis=1), 48000, subtype="FLOAT")
    mono, rate = read_audio(path, sample_rate=16000)
    assert rate == 16000 and mono.shape == (16000,)
    np.testing.assert_allclose(mono, resample((left + right) / 2, 48000, 16000), atol=1e-6)
    both, _ = read_audio(path, sample_rate=16000, mono=False)
    assert both.shape == (16000, 2)


def test_pcm16_conversions():
    samples = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    as_float = pcm16_to_float32(samples.astype("<i2").tobytes())
    np.testing.assert_array_equal(as_float, samples / 32768.0)
    np.testing.assert_array_equal(float32_to_pcm16(as_float), samples)
    assert float32_to_pcm16(np.array([2.0, -2.0]))[0] == 32767, "out-of-range audio clips"
    with pytest.raises(AudioError, match="even number of bytes, got 3"):
        pcm16_to_float32(b"\x00\x01\x02")
    with pytest.raises(AudioError, match="expected int16 samples"):
        pcm16_to_float32(np.zeros(3, dtype=np.int32))


def test_mono_mixdown_and_shapes():
    assert to_mono(np.zeros(5, np.float32)).shape == (5,)
    np.testing.assert_array_equal(to_mono(np.array([[1.0, 3.0], [2.0, 4.0]], np.float32)), [2.0, 3.0])
    with pytest.raises(AudioError, match="got shape"):
        to_mono(np.zeros((2, 2, 2)))


def test_unreadable_audio_is_a_clear_error(tmp_path):
    junk = tmp_path / "notes.wav"
    junk.write_text("not audio")
    with pytest.raises(AudioError, match=r"cannot read audio from .*notes\.wav.*Readable formats: .*FLAC"):
        read_audio(junk)
    with pytest.raises(AudioError, match="cannot read audio"):
        read_audio(tmp_path / "missing.flac")
    with pytest.raises(AudioError, match="cannot write audio"):
        write_audio(tmp_path / "out.unknown-extension", np.zeros(10), 16000)


def test_reads_real_recorded_speech():
    manifest = SHARED / "jfk" / "manifest.tsv"
    if not manifest.exists():
        pytest.skip(f"no shared data at {SHARED} (a user's clone has none)")
    row = dict(zip(*(line.split("\t") for line in manifest.read_text().splitlines()[:2])))
    audio, rate = read_audio(manifest.parent / row["path"], sample_rate=8000)
    assert rate == 8000 and abs(len(audio) / rate - float(row["duration_s"])) < 0.05
    assert 0.01 < float(np.sqrt(np.mean(audio**2))) < 0.5
