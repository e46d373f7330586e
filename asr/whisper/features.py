"""Whisper's log-mel features, offline (as Whisper computes them) and causal (so they can stream).

Whisper: 25 ms Hann frames every 10 ms, 80 Slaney mels, ``log10`` floored at ``max - 8`` over the whole
30 s window, then ``(x + 4) / 4``; the STFT pads by reflection and the last frame is dropped.
The causal variant floors each frame at the running maximum so far minus 8 (the offline floor needs the
future) and pads with zeros (the start of a stream has no samples to reflect); it differs from Whisper's
only in near-silent frames and the first one, and its streaming output equals its offline output exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from streaming.blocks.mel import LogMelConfig, StreamingLogMel, mel_filterbank

SAMPLE_RATE = 16000
HOP = 160
WINDOW_SAMPLES = 30 * SAMPLE_RATE
DYNAMIC_RANGE = 8.0  # log10 units below the loudest frame
MEL = LogMelConfig(n_fft=400, win_length=400, hop_length=HOP, n_mels=80, preemphasis=None, periodic_window=True,
                   log_guard=1e-10, log_guard_type="clamp", center=True)


def _scale(log10_mel: Tensor, floor: Tensor) -> Tensor:
    return (torch.maximum(log10_mel, floor) + 4.0) / 4.0


def offline_features(audio: Tensor, n_mels: int = 80, pad_to_window: bool = True) -> Tensor:
    """Whisper's own features ``[B, n_mels, frames]`` of ``[B, N]`` audio (3000 frames when padded to 30 s)."""
    if pad_to_window and audio.shape[-1] < WINDOW_SAMPLES:
        audio = torch.nn.functional.pad(audio, (0, WINDOW_SAMPLES - audio.shape[-1]))
    cfg = MEL if n_mels == MEL.n_mels else LogMelConfig(**{**MEL.__dict__, "n_mels": n_mels})
    spec = torch.stft(audio, cfg.n_fft, cfg.hop_length, window=torch.hann_window(cfg.n_fft).to(audio),
                      center=True, pad_mode="reflect", return_complex=True)[..., :-1]
    mel = torch.matmul(torch.from_numpy(mel_filterbank(cfg)).to(audio), spec.abs().pow(2))
    log10 = torch.log10(mel.clamp(min=cfg.log_guard))
    return _scale(log10, log10.amax(dim=(-2, -1), keepdim=True) - DYNAMIC_RANGE)


def _causal_scale(log_mel: Tensor, running_max: Tensor) -> tuple[Tensor, Tensor]:
    """Natural-log mel ``[B, n_mels, T]`` -> causal Whisper features and the running max after them."""
    log10 = log_mel / math.log(10.0)
    peaks = torch.cummax(log10.amax(dim=1), dim=-1).values
    peaks = torch.maximum(peaks, running_max[:, None])
    return _scale(log10, peaks[:, None, :] - DYNAMIC_RANGE), peaks[:, -1]


def causal_features(audio: Tensor) -> Tensor:
    """Causal features ``[B, 80, N // 160]`` of a whole signal: the reference for :class:`StreamingFeatures`."""
    from streaming.blocks.mel import log_mel_offline

    mel = log_mel_offline(audio, MEL)[..., : audio.shape[-1] // HOP]
    return _causal_scale(mel, torch.full((audio.shape[0],), -math.inf, device=audio.device))[0]


class StreamingFeatures:
    """Causal features of one live stream: audio pieces of any length in, finished frames out.

    Frame ``k`` is finished once samples up to ``k * 160 + 200`` have arrived (half a window of lookahead).
    """

    def __init__(self) -> None:
        self.mel = StreamingLogMel(MEL)
        self.running_max = torch.tensor([-math.inf])
        self.frames_out = 0
        self.samples_in = 0

    def _emit(self, mel: Tensor) -> Tensor:
        keep = min(mel.shape[-1], self.samples_in // HOP - self.frames_out)  # Whisper drops the last frame
        features, self.running_max = _causal_scale(mel[None, :, :keep], self.running_max) if keep else (
            mel.new_zeros(1, mel.shape[0], 0), self.running_max)
        self.frames_out += keep
        return features[0]

    def floor(self) -> float:
        """The value of a silent frame now (the running floor), to pad a stream's last partial chunk."""
        peak = float(self.running_max[0])
        return (peak - DYNAMIC_RANGE + 4.0) / 4.0 if math.isfinite(peak) else 0.0

    def process(self, audio: Tensor) -> Tensor:
        self.samples_in += audio.shape[-1]
        return self._emit(self.mel.process(audio))

    def flush(self) -> Tensor:
        return self._emit(self.mel.flush())
