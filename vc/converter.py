"""Speech in, the same words in another voice out, for one stream: content step, VC step, streaming vocoder.

Source audio arrives at 16 kHz in pieces of any size. Causal Whisper features (``asr.whisper.features``)
become content frames (20 ms) as soon as each frame's two feature frames exist; output mel frame ``m`` waits
only for the content frame under its centre (``vc.content.content_index``), and every ``chunk`` mel frames
run the VC step, then the vocoder. ``convert_offline`` is the whole-signal reference that a stream equals.

Lengths: a source of ``N`` samples gives ``floor(N / 16000 * 22050 / 256)`` mel frames, the same duration
at 22.05 kHz; the last frames read the last content frame (they may sit a few ms past it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from asr.whisper.features import StreamingFeatures, causal_features
from streaming.backend import Backend
from streaming.contract import StepFunction
from streaming.inline import advance
from tts.flow_step import SolverSettings
from tts.hifigan import HifiGan, hifigan_mel
from tts.vocoder import StreamingVocoder, VocoderStep, vocode_offline

from .content import MEL_HOP, MEL_RATE, ContentEncoder, ContentStep, content_index, mel_frames_readable
from .flow_step import VCStep, convert_offline
from .model import VCModel

SOURCE_RATE = 16000
MIN_REFERENCE_S = 1.0


def mel_frames_for(samples: int) -> int:
    """Output mel frames for a source of ``samples`` at 16 kHz: the same duration."""
    return samples * MEL_RATE // (SOURCE_RATE * MEL_HOP)


@dataclass
class Converter:
    """The three models of a conversion and the solver settings (``settings.chunk``: mel frames per VC step);
    ``backend`` runs the live steps (None: torch as is; e.g. ONNX Runtime on the exported steps)."""

    content: ContentEncoder
    model: VCModel
    vocoder: HifiGan
    settings: SolverSettings
    backend: Backend | None = None

    def runner(self, step: StepFunction) -> StepFunction:
        return self.backend.prepare(step) if self.backend is not None else step

    @torch.no_grad()
    def voice(self, reference: np.ndarray) -> dict[str, Tensor]:
        """The target voice from reference audio at 22.05 kHz (its first ``max_reference_frames`` frames, 10 s)."""
        if len(reference) < MIN_REFERENCE_S * MEL_RATE:
            raise ValueError(f"the reference is {len(reference) / MEL_RATE:.2f} s long; at least {MIN_REFERENCE_S:g} s "
                             "is needed (3-10 s of the target speaker's clean speech works best)")
        mel = hifigan_mel(torch.from_numpy(np.asarray(reference, np.float32))[None])
        mel = mel[..., : self.model.cfg.max_reference_frames]
        return self.model.voice(mel, torch.tensor([mel.shape[-1]]))

    @torch.no_grad()
    def content_at_mel_rate(self, source: np.ndarray) -> Tensor:
        """The offline content of a 16 kHz source, read at mel rate: ``[1, content_dim, frames]``."""
        feats = causal_features(torch.from_numpy(np.asarray(source, np.float32))[None])
        feats = feats[..., : feats.shape[-1] // 2 * 2]
        content = self.content(feats)[0]  # [T, D]
        which = content_index(torch.arange(mel_frames_for(len(source)))).clamp(max=content.shape[0] - 1)
        return content[which].T[None]

    @torch.no_grad()
    def convert_offline(self, source: np.ndarray, voice: dict[str, Tensor]) -> tuple[Tensor, np.ndarray]:
        """The parity reference: ``(mel [n_mels, frames], audio at 22.05 kHz)`` of a whole 16 kHz source."""
        if mel_frames_for(len(source)) < 1 or len(source) < 2 * 160:
            raise ValueError("the source is shorter than one output frame (20 ms at least)")
        mel = convert_offline(self.model, self.content_at_mel_rate(source), voice, self.settings)[0]
        return mel, vocode_offline(self.vocoder, mel)

    def stream(self, voice: dict[str, Tensor], vocoder_chunk: int | None = None) -> ConversionStream:
        """A live conversion; the vocoder runs on each VC step's frames unless ``vocoder_chunk`` says otherwise."""
        return ConversionStream(self, voice, vocoder_chunk or self.settings.chunk)


class ConversionStream:
    """One live conversion: ``process`` 16 kHz pieces, ``finish`` at the end; each returns the 22.05 kHz audio
    that is final now. The concatenation equals :meth:`Converter.convert_offline`."""

    def __init__(self, converter: Converter, voice: dict[str, Tensor], vocoder_chunk: int) -> None:
        self.converter = converter
        self.features = StreamingFeatures()
        self.content_step = converter.runner(ContentStep(converter.content))
        self.vc_step = converter.runner(VCStep(converter.model, converter.settings))
        self.content_state = self.content_step.initial_state(1)
        self.vc_state = self.vc_step.initial_state(1)
        self.vc_state.update(VCStep.voice_state(voice))
        vocoder_step = VocoderStep(converter.vocoder)
        self.vocoder = StreamingVocoder(vocoder_step, chunk=vocoder_chunk, runner=converter.runner(vocoder_step))
        self.pending_features = torch.zeros(converter.content.stack.hf.conv1.in_channels, 0)
        self.content = torch.zeros(converter.content.dim, 0)
        self.content_offset = 0  # the absolute index of self.content's first column
        self.mel_done = 0
        self.samples = 0

    @torch.no_grad()
    def process(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        self.samples += len(audio)
        self._add_features(self.features.process(torch.from_numpy(audio)))
        return self._convert(final=False)

    @torch.no_grad()
    def finish(self) -> np.ndarray:
        self._add_features(self.features.flush())
        out = self._convert(final=True)
        return np.concatenate([out, self.vocoder.finish()])

    def held_bytes(self) -> int:
        """What the stream holds between calls: step states and pending frames (flat over any length)."""
        tensors = [*self.content_state.values(), *self.vc_state.values(), *self.vocoder.state.values(),
                   self.vocoder.feed.pending, self.pending_features, self.content]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _add_features(self, frames: Tensor) -> None:
        self.pending_features = torch.cat([self.pending_features, frames], dim=-1)
        pairs = self.pending_features.shape[-1] // 2
        if not pairs:
            return
        out, nxt = self.content_step.step({"mel": self.pending_features[None, :, : 2 * pairs]}, self.content_state)
        advance(self.content_state, nxt)
        self.pending_features = self.pending_features[:, 2 * pairs :]
        self.content = torch.cat([self.content, out["content"][0].T], dim=-1)

    def _convert(self, final: bool) -> np.ndarray:
        c = self.converter.settings.chunk
        available = self.content_offset + self.content.shape[-1]
        if final:
            end = mel_frames_for(self.samples)
        else:  # the mel frames whose content frame exists
            end = max(self.mel_done, mel_frames_readable(available))
        pieces = []
        while self.mel_done + (1 if final else c) <= end:
            frames = min(c, end - self.mel_done)
            which = content_index(torch.arange(self.mel_done, self.mel_done + frames)).clamp(max=available - 1)
            content = F.pad(self.content[:, which - self.content_offset], (0, c - frames))
            out, nxt = self.vc_step.step({"content": content[None], "valid": torch.tensor([frames])}, self.vc_state)
            advance(self.vc_state, nxt)
            self.mel_done += frames
            pieces.append(self.vocoder.push(out["mel"][0, :, :frames]))
            self._forget_content()
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def _forget_content(self) -> None:
        """Drop content frames no future mel frame reads (memory stays bounded in a long session)."""
        first = int(content_index(torch.tensor(self.mel_done)))
        drop = min(first - self.content_offset, self.content.shape[-1] - 1)
        if drop > 0:
            self.content = self.content[:, drop:]
            self.content_offset += drop
