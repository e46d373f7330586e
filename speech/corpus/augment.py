"""On-the-fly augmentation for training audio: noise, reverberation, speed, gain, telephone band, codecs.

Every transform is a pure function of the audio, its parameters and a numpy ``Generator``, so an
utterance augmented with the same seed is the same to the byte. :class:`Augmenter` draws the parameters
from a seed and reports what it applied (the speed factor rescales word alignments).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import soxr

# codec name -> (PyAV codec, the rate it runs at, its delay in samples at that rate, measured)
CODECS = {"mulaw": ("pcm_mulaw", 8000, 0), "g722": ("g722", 16000, 22)}


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Mix ``noise`` (tiled or cut to length) so that speech power / noise power is ``snr_db``."""
    if len(noise) == 0:
        raise ValueError("noise is empty")
    noise = np.resize(noise, audio.shape).astype(np.float64)
    speech_power = float(np.mean(audio.astype(np.float64) ** 2))
    noise_power = float(np.mean(noise**2))
    if speech_power == 0.0 or noise_power == 0.0:
        return audio.copy()
    scale = np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (audio + scale * noise).astype(np.float32)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) noise, unit variance, shaped in the frequency domain."""
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[color]
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs**exponent, n)
    return (noise / (noise.std() + 1e-12)).astype(np.float32)


def synthetic_rir(rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A room impulse response: a direct path, then Gaussian reflections decaying by 60 dB over ``rt60``."""
    n = max(2, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000): amplitude down 60 dB at rt60
    predelay = int(0.003 * sample_rate)  # the first reflection arrives a few ms after the direct sound
    tail[:predelay] = 0.0
    rir = 0.3 * tail / (np.abs(tail).max() + 1e-12)
    rir[0] = 1.0
    return (rir / np.sqrt(np.sum(rir**2))).astype(np.float32)


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with ``rir`` (FFT), keep the original length and loudness (the direct path stays at t=0)."""
    size = len(audio) + len(rir) - 1
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(rir, size), size)[: len(audio)]
    rms_in, rms_out = np.sqrt(np.mean(audio**2)), np.sqrt(np.mean(wet**2))
    return (wet * (rms_in / rms_out if rms_out > 0 else 1.0)).astype(np.float32)


def change_speed(audio: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Kaldi-style speed perturbation: play ``factor`` times faster (tempo and pitch), length / factor."""
    return soxr.resample(audio, sample_rate * factor, sample_rate, quality="HQ").astype(np.float32)


def apply_gain(audio: np.ndarray, gain_db: float, peak: float = 0.99) -> np.ndarray:
    """Scale by ``gain_db``, then back off if that would clip."""
    out = audio * 10.0 ** (gain_db / 20.0)
    top = float(np.abs(out).max()) if out.size else 0.0
    return (out * (peak / top) if top > peak else out).astype(np.float32)


def telephone_band(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Through an 8 kHz telephone channel: 300-3400 Hz, then back to ``sample_rate``."""
    narrow = soxr.resample(audio, sample_rate, 8000, quality="HQ")
    spectrum = np.fft.rfft(narrow)
    freqs = np.fft.rfftfreq(len(narrow), 1 / 8000)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    band = np.fft.irfft(spectrum, len(narrow))
    out = soxr.resample(band, 8000, sample_rate, quality="HQ")
    return _fit(out, len(audio)).astype(np.float32)


def codec_round_trip(audio: np.ndarray, sample_rate: int, codec: str) -> np.ndarray:
    """Encode and decode with a telephony codec (G.711 mu-law at 8 kHz, G.722 at 16 kHz) via PyAV."""
    import av  # imported here: the GPU image has no PyAV and the other transforms do not need it

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    name, rate, delay = CODECS[codec]
    pcm = np.clip(np.rint(soxr.resample(audio, sample_rate, rate, quality="HQ") * 32767), -32768, 32767)
    encoder = av.CodecContext.create(name, "w")
    encoder.sample_rate, encoder.layout, encoder.format = rate, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(pcm.astype(np.int16)[None], format="s16", layout="mono")
    frame.sample_rate = rate
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    decoder = av.CodecContext.create(name, "r")
    decoder.sample_rate, decoder.layout = rate, "mono"
    decoded = [f.to_ndarray().reshape(-1) for p in packets for f in decoder.decode(p)]
    decoded += [f.to_ndarray().reshape(-1) for f in decoder.decode(None)]
    out = np.concatenate(decoded)[delay:].astype(np.float32) / 32768.0 if decoded else np.zeros(0, np.float32)
    return _fit(soxr.resample(out, rate, sample_rate, quality="HQ"), len(audio)).astype(np.float32)


def _fit(audio: np.ndarray, n: int) -> np.ndarray:
    return audio[:n] if len(audio) >= n else np.pad(audio, (0, n - len(audio)))


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each transform (applied in this order)."""

    speed_prob: float = 0.5
    speed: tuple[float, float] = (0.9, 1.1)
    reverb_prob: float = 0.3
    rt60: tuple[float, float] = (0.15, 0.8)
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    noise_colors: tuple[str, ...] = ("white", "pink", "brown")
    channel_prob: float = 0.15
    channels: tuple[str, ...] = ("telephone", "mulaw", "g722")
    gain_db: tuple[float, float] = (-6.0, 6.0)


@dataclass
class Augmented:
    audio: np.ndarray
    speed: float = 1.0
    applied: list[str] = field(default_factory=list)


class Augmenter:
    """Draws transforms from a seed; ``noises`` (real recordings) are mixed in as well as coloured noise."""

    def __init__(self, cfg: AugmentConfig = AugmentConfig(), sample_rate: int = 16000, noises=()) -> None:
        self.cfg, self.sample_rate, self.noises = cfg, sample_rate, [np.asarray(n, np.float32) for n in noises]

    def __call__(self, audio: np.ndarray, seed: int) -> Augmented:
        cfg, sr = self.cfg, self.sample_rate
        rng = np.random.default_rng(seed)
        out = Augmented(np.asarray(audio, np.float32))
        if rng.random() < cfg.speed_prob:
            out.speed = float(rng.uniform(*cfg.speed))
            out.audio = change_speed(out.audio, out.speed, sr)
            out.applied.append(f"speed {out.speed:.3f}")
        if rng.random() < cfg.reverb_prob:
            rt60 = float(rng.uniform(*cfg.rt60))
            out.audio = reverberate(out.audio, synthetic_rir(rt60, sr, rng))
            out.applied.append(f"reverb rt60 {rt60:.2f}s")
        if rng.random() < cfg.noise_prob:
            snr = float(rng.uniform(*cfg.snr_db))
            choices = [*cfg.noise_colors, *(f"recording {i}" for i in range(len(self.noises)))]
            kind = choices[int(rng.integers(len(choices)))]
            noise = (
                self.noises[int(kind.split()[1])] if kind.startswith("recording")
                else colored_noise(len(out.audio), kind, rng)
            )
            out.audio = add_noise(out.audio, noise, snr)
            out.applied.append(f"{kind} noise {snr:.1f} dB")
        if rng.random() < cfg.channel_prob:
            channel = cfg.channels[int(rng.integers(len(cfg.channels)))]
            out.audio = telephone_band(out.audio, sr) if channel == "telephone" else codec_round_trip(out.audio, sr, channel)
            out.applied.append(channel)
        gain = float(rng.uniform(*cfg.gain_db))
        out.audio = apply_gain(out.audio, gain)
        out.applied.append(f"gain {gain:+.1f} dB")
        return out
