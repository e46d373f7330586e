"""Augmentation: each transform does what it says, and the whole chain is deterministic given a seed."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from speech.corpus.augment import (
    CODECS,
    AugmentConfig,
    Augmenter,
    add_noise,
    apply_gain,
    change_speed,
    codec_round_trip,
    colored_noise,
    reverberate,
    synthetic_rir,
    telephone_band,
)

SR = 16000


def speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Harmonics of a wandering pitch under a syllable-rate envelope: broadband like speech, not noise."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * voiced * envelope).astype(np.float32)


def band_energy(audio: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / SR)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_is_mixed_at_the_requested_snr(snr):
    clean = speechlike()
    noise = colored_noise(8000, "pink", np.random.default_rng(1))  # shorter than the speech: tiled
    noisy = add_noise(clean, noise, snr)
    measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))
    assert abs(measured - snr) < 0.05


def test_colored_noise_slopes():
    rng = np.random.default_rng(0)
    low_high = {c: band_energy(colored_noise(SR * 4, c, rng), 50, 500) / band_energy(colored_noise(SR * 4, c, rng), 4000, 7950)
                for c in ("white", "pink", "brown")}
    assert low_high["white"] < low_high["pink"] < low_high["brown"]


def test_reverb_keeps_length_and_loudness_and_spreads_energy_in_time():
    clean = np.zeros(SR, np.float32)
    clean[1000] = 1.0
    wet = reverberate(clean, synthetic_rir(0.5, SR, np.random.default_rng(0)))
    assert wet.shape == clean.shape
    assert np.isclose(np.sqrt(np.mean(wet**2)), np.sqrt(np.mean(clean**2)), rtol=1e-4)
    assert np.argmax(np.abs(wet)) == 1000, "the direct path stays where it was"
    tail = wet[1000 + int(0.05 * SR) : 1000 + int(0.3 * SR)]
    assert np.sum(tail**2) > 0.01 * np.sum(wet**2), "a 0.5 s room leaves a tail"


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_changes_length_by_the_factor(factor):
    audio = speechlike(2.0)
    assert abs(len(change_speed(audio, factor, SR)) - len(audio) / factor) <= 2


def test_gain_never_clips():
    audio = speechlike()
    assert np.isclose(np.abs(apply_gain(audio, -6.0)).max(), np.abs(audio).max() / 10 ** (6 / 20), rtol=1e-5)
    assert np.abs(apply_gain(audio, 40.0)).max() <= 0.99 + 1e-6


def test_telephone_band_removes_what_a_phone_line_cannot_carry():
    audio = speechlike() + 0.05 * colored_noise(SR, "white", np.random.default_rng(2))
    phone = telephone_band(audio, SR)
    assert phone.shape == audio.shape
    assert band_energy(phone, 4100, 8000) < 1e-4 * band_energy(audio, 4100, 8000)
    assert band_energy(phone, 20, 250) < 0.05 * band_energy(audio, 20, 250)
    assert band_energy(phone, 500, 3000) > 0.8 * band_energy(audio, 500, 3000)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_codecs_round_trip_keeps_the_signal_aligned(codec):
    audio = speechlike()
    coded = codec_round_trip(audio, SR, codec)
    assert coded.shape == audio.shape
    rate = CODECS[codec][1]
    reference = soxr.resample(soxr.resample(audio, SR, rate), rate, SR)[: len(audio)]  # what the codec rate keeps
    assert np.corrcoef(reference[800:-800], coded[800:-800])[0, 1] > 0.95
    assert not np.array_equal(coded, audio)
    with pytest.raises(ValueError, match="codec must be one of"):
        codec_round_trip(audio, SR, "mp3")


def test_augmenter_is_deterministic_per_seed_and_reports_what_it_did():
    augment = Augmenter(AugmentConfig(speed_prob=1, reverb_prob=1, noise_prob=1, channel_prob=1),
                        noises=[colored_noise(4000, "white", np.random.default_rng(9))])
    audio = speechlike(1.5)
    first, again, other = augment(audio, 7), augment(audio, 7), augment(audio, 8)
    assert first.audio.tobytes() == again.audio.tobytes() and first.applied == again.applied
    assert first.audio.tobytes() != other.audio.tobytes()
    assert len(first.applied) == 5 and first.applied[0].startswith("speed")
    assert abs(len(first.audio) - len(audio) / first.speed) <= 2
    assert np.abs(first.audio).max() <= 0.99 + 1e-6 and np.isfinite(first.audio).all()


def test_augmenter_with_nothing_enabled_only_applies_gain():
    plain = Augmenter(AugmentConfig(speed_prob=0, reverb_prob=0, noise_prob=0, channel_prob=0, gain_db=(0.0, 0.0)))
    audio = speechlike()
    out = plain(audio, 0)
    assert out.applied == ["gain +0.0 dB"] and np.array_equal(out.audio, audio) and out.speed == 1.0
