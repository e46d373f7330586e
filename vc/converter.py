"""Speech in, the same words in another voice out, for one stream: content step, VC step, streaming vocoder.

Source audio arrives at 16 kHz in pieces of any size and becomes causal Whisper features
(``asr.whisper.features``), two per 20 ms content frame. Output mel frame ``m`` waits only for the content
frame under its centre (``vc.content.content_index``); as soon as the features for the next ``chunk`` mel
frames exist, one content step turns every pending feature pair into content frames (one call per chunk, not
per piece: the step's cost is mostly reading Whisper's weights), then the VC step and the vocoder run.
``convert_offline`` is the whole-signal reference that a stream equals.

Lengths: a source of ``N`` samples gives ``floor(N / 16000 * 22050 / 256)`` mel frames, the same duration
at 22.05 kHz; the last frames read the last content frame (they may sit a few ms past it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from asr.whisper.features import StreamingFeatures, causal_features
from streaming.backend import Backend, TorchBackend
from streaming.contract import StepFunction, Tensors
from streaming.inline import InlineSteps, Requests, drive
from tts.flow_step import SolverSettings
from tts.hifigan import HifiGan, hifigan_mel
from tts.vocoder import VocoderFeed, VocoderStep, vocode_offline, vocoder_requests

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

    @cached_property
    def steps(self) -> dict[str, StepFunction]:
        """The step functions of a live conversion, by the names its host logic asks for them."""
        return {"content": ContentStep(self.content), "vc": VCStep(self.model, self.settings),
                "vocoder": VocoderStep(self.vocoder)}

    @torch.no_grad()
    def voice(self, reference: np.ndarray) -> dict[str, Tensor]:
        """The target voice from reference audio at 22.05 kHz (its first ``max_reference_frames`` frames, 10 s)."""
        if len(reference) < MIN_REFERENCE_S * MEL_RATE:
            raise ValueError(f"the reference is {len(reference) / MEL_RATE:.2f} s long; at least {MIN_REFERENCE_S:g} s "
                             "is needed (3-10 s of the target speaker's clean speech works best)")
        mel = self.reference_mel(reference)
        return self.model.voice(mel[None], torch.tensor([mel.shape[-1]]))

    def reference_mel(self, reference: np.ndarray) -> Tensor:
        """The part of a 22.05 kHz reference a voice reads, as natural-log mel ``[n_mels, R]``."""
        mel = hifigan_mel(torch.from_numpy(np.asarray(reference, np.float32))[None])[0]
        return mel[..., : self.model.cfg.max_reference_frames]

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


class ConversionFeed:
    """One stream's host side of a conversion, wherever its steps run (inline, or on scheduler lanes): features
    to content frames, content frames to VC chunks at mel rate, mel to vocoder chunks. ``requests`` is host
    logic (``streaming.inline``) asking for ``"content"``, ``"vc"`` and ``"vocoder"`` steps. ``fixed_end``: the
    last vocoder steps are whole chunks (a lane batches equal shapes) rather than just the frames left."""

    def __init__(self, converter: Converter, vocoder_chunk: int, fixed_end: bool) -> None:
        self.chunk, self.fixed_end = converter.settings.chunk, fixed_end
        self.features = StreamingFeatures()
        self.audio = VocoderFeed(converter.steps["vocoder"], vocoder_chunk)
        self.pending_features = torch.zeros(converter.content.stack.hf.conv1.in_channels, 0)
        self.content = torch.zeros(converter.content.dim, 0)
        self.content_offset = 0  # the absolute index of self.content's first column
        self.mel_done = 0
        self.samples = 0

    def requests(self, audio: np.ndarray | None) -> Requests[np.ndarray]:
        """16 kHz ``audio`` as it arrives, or None at the end -> the 22.05 kHz audio final now."""
        if audio is None:
            frames = self.features.flush()
        else:
            audio = np.asarray(audio, np.float32)
            self.samples += len(audio)
            frames = self.features.process(torch.from_numpy(audio))
        self.pending_features = torch.cat([self.pending_features, frames], dim=-1)
        could = self.content_offset + self.content.shape[-1] + self.pending_features.shape[-1] // 2
        if audio is None or mel_frames_readable(could) >= self.mel_done + self.chunk:
            yield from self._content()  # only when a VC step can run: one content step per chunk, not per piece
        pieces = yield from self._convert(final=audio is None)
        if audio is None:
            pieces += yield from vocoder_requests(self.audio, self.audio.chunks_at_end(fixed=self.fixed_end))
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def held_bytes(self) -> int:
        tensors = (self.audio.pending, self.pending_features, self.content)
        return sum(t.numel() * t.element_size() for t in tensors)

    def _content(self) -> Requests[None]:
        pairs = self.pending_features.shape[-1] // 2
        if not pairs:
            return
        out = yield "content", {"mel": self.pending_features[:, : 2 * pairs]}
        self.pending_features = self.pending_features[:, 2 * pairs :]
        self.content = torch.cat([self.content, out["content"].T], dim=-1)

    def _convert(self, final: bool) -> Requests[list[np.ndarray]]:
        c = self.chunk
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
            out = yield "vc", {"content": content, "valid": torch.tensor(frames)}
            self.mel_done += frames
            pieces += yield from vocoder_requests(self.audio, self.audio.chunks_for(out["mel"][:, :frames]))
            self._forget_content()
        return pieces

    def _forget_content(self) -> None:
        """Drop content frames no future mel frame reads (memory stays bounded in a long session)."""
        first = int(content_index(torch.tensor(self.mel_done)))
        drop = min(first - self.content_offset, self.content.shape[-1] - 1)
        if drop > 0:
            self.content = self.content[:, drop:]
            self.content_offset += drop


class ConversionStream:
    """One live conversion run inline: ``process`` 16 kHz pieces, ``finish`` at the end; each returns the
    22.05 kHz audio that is final now. The concatenation equals :meth:`Converter.convert_offline`."""

    def __init__(self, converter: Converter, voice: dict[str, Tensor], vocoder_chunk: int) -> None:
        self.feed = ConversionFeed(converter, vocoder_chunk, fixed_end=False)
        self.steps = InlineSteps(converter.steps, converter.backend or TorchBackend(),
                                 start_from={"vc": voice_rows(voice)})

    @torch.no_grad()
    def process(self, audio: np.ndarray) -> np.ndarray:
        return drive(self.feed.requests(audio), self.steps)

    @torch.no_grad()
    def finish(self) -> np.ndarray:
        return drive(self.feed.requests(None), self.steps)

    def held_bytes(self) -> int:
        """What the stream holds between calls: step states and pending frames (flat over any length)."""
        states = [t for lane in self.steps.states.values() for t in lane.values()]
        return sum(t.numel() * t.element_size() for t in states) + self.feed.held_bytes()


def voice_rows(voice: dict[str, Tensor]) -> Tensors:
    """A voice (:meth:`Converter.voice`, one row) as the VC step's starting states for one stream."""
    return {name: value[0] for name, value in VCStep.voice_state(voice).items()}
