"""Streaming log-mel front end whose output on a chunked signal equals the offline front end.

The offline reference is ``torch.stft`` with centre zero padding (NeMo's ``FilterbankFeatures`` with
``normalize: NA`` and no dither, the setting of its cache-aware streaming models). The streaming step
keeps a buffer of past samples that starts as zeros; those zeros are exactly the centre padding, so
the step emits ``k`` frames for every ``k * hop`` new samples, the first ``output_delay`` of which lie
before the signal and are dropped by :class:`StreamingLogMel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..contract import ChunkGeometry, StateSpec, StepFunction, StepSignature, Tensors, TensorSpec


@dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    preemphasis: float | None = 0.97
    periodic_window: bool = False
    power: float = 2.0
    log_guard: float = 2.0**-24
    log_guard_type: str = "add"  # "add": log(x + guard); "clamp": log(max(x, guard))
    center: bool = True

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft or self.hop_length > self.n_fft // 2:
            raise ValueError("need win_length <= n_fft and hop_length <= n_fft / 2")
        if self.log_guard_type not in ("add", "clamp"):
            raise ValueError(f"log_guard_type is 'add' or 'clamp', got {self.log_guard_type!r}")


def mel_filterbank(cfg: LogMelConfig) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters ``[n_mels, n_fft // 2 + 1]`` (librosa's default)."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    f_max = cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2
    mel_f = mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(f_max), cfg.n_mels + 2))
    fft_f = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


def _window(cfg: LogMelConfig) -> Tensor:
    """The analysis window centred in ``n_fft`` samples, as ``torch.stft`` pads it."""
    win = torch.hann_window(cfg.win_length, periodic=cfg.periodic_window)
    left = (cfg.n_fft - cfg.win_length) // 2
    return torch.nn.functional.pad(win, (left, cfg.n_fft - cfg.win_length - left))


def _log(mel: Tensor, cfg: LogMelConfig) -> Tensor:
    return torch.log(mel + cfg.log_guard) if cfg.log_guard_type == "add" else torch.log(mel.clamp(min=cfg.log_guard))


def _preemphasis(audio: Tensor, previous: Tensor, coeff: float) -> Tensor:
    """``y[t] = x[t] - a * x[t-1]`` with ``x[-1] = previous`` (zero at a stream's start, as offline)."""
    shifted = torch.cat([previous[:, None], audio[:, :-1]], dim=1)
    return audio - coeff * shifted


def log_mel_offline(audio: Tensor, cfg: LogMelConfig = LogMelConfig()) -> Tensor:
    """``[B, N] -> [B, n_mels, 1 + N // hop]`` over the whole signal (the reference for parity)."""
    if cfg.preemphasis:
        audio = _preemphasis(audio, audio.new_zeros(audio.shape[0]), cfg.preemphasis)
    spec = torch.stft(
        audio,
        cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.n_fft,
        window=_window(cfg).to(audio),
        center=cfg.center,
        pad_mode="constant",
        return_complex=True,
    )
    fb = torch.from_numpy(mel_filterbank(cfg)).to(audio)
    return _log(torch.matmul(fb, spec.abs().pow(cfg.power)), cfg)


class LogMelStep(StepFunction):
    """Pure streaming step: ``audio [k * hop]`` -> ``mel [n_mels, k]``; state = past samples + last raw sample."""

    name = "log_mel"

    def __init__(self, cfg: LogMelConfig = LogMelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        pad = cfg.n_fft // 2 if cfg.center else 0
        self.shift = (pad - cfg.n_fft) % cfg.hop_length  # frames end this many samples before a chunk's end
        self.buffer = cfg.n_fft - cfg.hop_length + self.shift
        self.output_delay = (cfg.n_fft + self.shift - pad - cfg.hop_length) // cfg.hop_length
        self.register_buffer("window", _window(cfg), persistent=False)
        self.register_buffer("filterbank", torch.from_numpy(mel_filterbank(cfg)), persistent=False)

    @property
    def signature(self) -> StepSignature:
        cfg = self.cfg
        return StepSignature(
            inputs=(TensorSpec("audio", (None,), time_axis=0),),
            outputs=(TensorSpec("mel", (cfg.n_mels, None), time_axis=1),),
            states=(StateSpec("samples", (self.buffer,)), StateSpec("last_sample", ())),
            geometry=ChunkGeometry(
                hop=cfg.hop_length, frames_out=1, left_context=self.buffer, output_delay=self.output_delay
            ),
        )

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        audio = inputs["audio"]
        emphasised = _preemphasis(audio, state["last_sample"], self.cfg.preemphasis) if self.cfg.preemphasis else audio
        signal = torch.cat([state["samples"], emphasised], dim=1)
        frames = signal.unfold(1, self.cfg.n_fft, self.cfg.hop_length)[:, : audio.shape[1] // self.cfg.hop_length]
        power = torch.fft.rfft(frames * self.window, dim=-1).abs().pow(self.cfg.power)
        mel = _log(torch.matmul(power, self.filterbank.T), self.cfg).transpose(1, 2)
        next_state = {"samples": signal[:, signal.shape[1] - self.buffer :], "last_sample": audio[:, -1]}
        return {"mel": mel}, next_state


class StreamingLogMel:
    """Host-side driver for one stream: takes audio chunks of any length, returns the finished frames.

    It frames arbitrary chunks into hop multiples, drops the ``output_delay`` frames that precede the
    signal, and on ``flush`` feeds the right-hand centre padding so the total equals the offline output.
    """

    def __init__(self, cfg: LogMelConfig = LogMelConfig(), step: LogMelStep | None = None) -> None:
        self.step = step or LogMelStep(cfg)
        self.cfg = self.step.cfg
        self.state = self.step.initial_state(1)
        self._pending = torch.zeros(0)
        self._samples_in = 0
        self._frames_out = 0
        self._to_drop = self.step.output_delay

    def _run(self, audio: Tensor) -> Tensor:
        with torch.inference_mode():
            out, self.state = self.step.step({"audio": audio[None]}, self.state)
        mel = out["mel"][0]
        dropped = min(self._to_drop, mel.shape[1])
        self._to_drop -= dropped
        return mel[:, dropped:]

    def process(self, chunk: Tensor) -> Tensor:
        """Append samples ``[n]``; returns the frames that are now complete, ``[n_mels, frames]``."""
        self._samples_in += chunk.shape[0]
        audio = torch.cat([self._pending, chunk.to(torch.float32)])
        usable = audio.shape[0] - audio.shape[0] % self.cfg.hop_length
        self._pending = audio[usable:]
        mel = self._run(audio[:usable]) if usable else torch.zeros(self.cfg.n_mels, 0)
        self._frames_out += mel.shape[1]
        return mel

    def _silence(self, n: int) -> Tensor:
        """Samples that are zero after pre-emphasis (the offline STFT pads the pre-emphasised signal)."""
        a = self.cfg.preemphasis
        last = self._pending[-1] if self._pending.numel() else self.state["last_sample"][0]
        if not a or n == 0:
            return torch.zeros(n)
        return last * torch.cumprod(torch.full((n,), a), dim=0)

    def flush(self) -> Tensor:
        """The remaining frames once the signal has ended (``1 + N // hop`` frames in all when centred)."""
        hop = self.cfg.hop_length
        total = (self._samples_in // hop + 1) if self.cfg.center else max(0, (self._samples_in - self.cfg.n_fft) // hop + 1)
        missing = total - self._frames_out
        if missing <= 0:
            return torch.zeros(self.cfg.n_mels, 0)
        hops = missing + self._to_drop
        padded = torch.cat([self._pending, self._silence(hops * hop - self._pending.shape[0])])
        mel = self._run(padded)[:, :missing]
        self._pending = torch.zeros(0)
        self._frames_out += mel.shape[1]
        return mel
