"""Audio I/O and conversions for the product surface: files, PCM16 <-> float32, mono mixdown, resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr


class AudioError(ValueError):
    """Audio that cannot be read or converted; the message says what was wrong and what is accepted."""


def readable_formats() -> list[str]:
    return sorted(soundfile.available_formats())


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of ``[samples, channels]`` audio; 1-D audio is returned as it is."""
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise AudioError(f"audio must be [samples] or [samples, channels], got shape {audio.shape}")
    return audio.mean(axis=1, dtype=np.float32)


def resample(audio: np.ndarray, in_rate: int, out_rate: int, *, quality: str = "HQ") -> np.ndarray:
    """One-shot resampling with soxr (the streaming twin is ``streaming.blocks.StreamingResampler``)."""
    if in_rate <= 0 or out_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
    audio = np.asarray(audio, dtype=np.float32)
    return audio.copy() if in_rate == out_rate else soxr.resample(audio, in_rate, out_rate, quality=quality)


def read_audio(path: str | Path, *, sample_rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read any format libsndfile knows as float32 in [-1, 1]; optionally mix to mono and resample."""
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(
            f"cannot read audio from {str(path)!r}: {error}. Readable formats: {', '.join(readable_formats())}"
        ) from None
    audio = to_mono(audio) if mono else audio
    if sample_rate is not None and sample_rate != rate:
        audio = resample(audio, rate, sample_rate) if mono else np.stack(
            [resample(channel, rate, sample_rate) for channel in audio.T], axis=1
        )
        rate = sample_rate
    return audio, rate


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, *, subtype: str | None = None) -> None:
    """Write float32 audio; the format follows the file extension (``.wav`` is 16-bit PCM by default)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim not in (1, 2):
        raise AudioError(f"audio must be [samples] or [samples, channels], got shape {audio.shape}")
    try:
        soundfile.write(str(path), audio, sample_rate, subtype=subtype)
    except (soundfile.LibsndfileError, ValueError, TypeError) as error:
        raise AudioError(
            f"cannot write audio to {str(path)!r}: {error}. Writable formats: {', '.join(readable_formats())}"
        ) from None


def pcm16_to_float32(data: bytes | np.ndarray) -> np.ndarray:
    """Little-endian signed 16-bit PCM to float32 in [-1, 1)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) % 2:
            raise AudioError(f"pcm_s16le data must have an even number of bytes, got {len(data)}")
        data = np.frombuffer(data, dtype="<i2")
    data = np.asarray(data)
    if data.dtype != np.int16:
        raise AudioError(f"expected int16 samples, got {data.dtype}")
    return data.astype(np.float32) / 32768.0


def float32_to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] to int16, clipped and rounded to nearest."""
    audio = np.asarray(audio, dtype=np.float32)
    return np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)
