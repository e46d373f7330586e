"""Text -> audio for one stream, chunk by chunk: front end, text window, flow step, streaming vocoder.

``StreamingSynthesizer.push(text)`` returns the audio that is final now; ``finish()`` the rest. Text
flows through the incremental front end (``tts.frontend``), then ``TextWindow`` encodes each phoneme once
the ``text_reach`` phonemes after it are known and expands it to its predicted frames, the flow step turns
every full chunk of frames into mel, and the vocoder step into samples. ``synthesize_offline`` is the
same model over the whole text at once: the parity reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .acoustic import AcousticModel, durations_from_log
from .flow_step import FlowStep, SolverSettings, synthesize_offline
from .frontend import IncrementalFrontEnd
from .hifigan import HifiGan
from .vocoder import StreamingVocoder, VocoderStep, vocode_offline


def voice_index(model: AcousticModel, voice: str) -> int:
    if voice not in model.cfg.voices:
        raise ValueError(f"unknown voice {voice!r}; the model has {', '.join(model.cfg.voices)}")
    return model.cfg.voices.index(voice)


def expand(mu: Tensor, durations: Tensor) -> Tensor:
    """Phoneme-level ``mu [n_mels, N]`` -> frame-level ``[n_mels, sum(durations)]``."""
    return mu.repeat_interleave(durations, dim=-1)


@torch.no_grad()
def encode_text(model: AcousticModel, ids: list[int], speaker: int, length_scale: float = 1.0) -> Tensor:
    """Offline: all phoneme ids -> ``mu_frames [n_mels, T]``."""
    ids_t = torch.tensor([ids])
    mu, log_d = model.encoder(ids_t, torch.tensor([speaker]), torch.tensor([[0, len(ids)]]))
    return expand(mu[0], durations_from_log(log_d[0], length_scale))


class TextWindow:
    """Phoneme ids as they arrive -> frame-level ``mu`` of the phonemes whose ``text_reach`` future is known.

    Each commit re-encodes a window of ``reach`` phonemes before the first new one (their convolutions'
    left context) up to ``reach`` after the last; positions that far from the window's edges equal the
    whole-sequence encoding, so the frames it gives equal ``encode_text`` of the whole text."""

    def __init__(self, model: AcousticModel, speaker: int, length_scale: float = 1.0) -> None:
        self.model, self.speaker, self.length_scale = model, speaker, length_scale
        self.reach = model.cfg.text_reach
        self.ids: list[int] = []  # from absolute position `base`
        self.base = 0
        self.committed = 0
        self.device = next(model.parameters()).device

    def push(self, ids: list[int]) -> Tensor:
        self.ids += ids
        return self._commit(self.base + len(self.ids) - self.reach, final=False)

    def finish(self) -> Tensor:
        return self._commit(self.base + len(self.ids), final=True)

    @torch.no_grad()
    def _commit(self, end: int, final: bool) -> Tensor:
        n_mels = self.model.cfg.n_mels
        if end <= self.committed:
            return torch.zeros(n_mels, 0, device=self.device)
        start = max(0, self.committed - self.reach)
        stop = self.base + len(self.ids) if final else end + self.reach
        window = self.ids[start - self.base : stop - self.base]
        mu, log_d = self.model.encoder(torch.tensor([window], device=self.device),
                                       torch.tensor([self.speaker], device=self.device),
                                       torch.tensor([[0, len(window)]], device=self.device))
        take = slice(self.committed - start, end - start)
        frames = expand(mu[0][:, take], durations_from_log(log_d[0][take], self.length_scale))
        self.committed = end
        keep_from = max(0, end - self.reach)  # the next window's left context
        self.ids = self.ids[keep_from - self.base :]
        self.base = keep_from
        return frames


class StreamingSynthesizer:
    """One stream of text in, audio out (22.05 kHz float32)."""

    def __init__(self, model: AcousticModel, vocoder: HifiGan, settings: SolverSettings, voice: str,
                 length_scale: float = 1.0, vocoder_chunk: int = 32,
                 on_mel: Callable[[Tensor], None] | None = None) -> None:
        self.on_mel = on_mel  # sees every mel chunk ``[n_mels, frames]`` on its way to the vocoder
        self.speaker = voice_index(model, voice)
        self.frontend = IncrementalFrontEnd()
        self.text = TextWindow(model, self.speaker, length_scale)
        self.device = next(model.parameters()).device  # the model's: CPU, or a GPU
        self.flow = FlowStep(model, settings).to(self.device)
        self.flow_state = self.flow.initial_state(1, self.device)
        self.vocoder = StreamingVocoder(VocoderStep(vocoder), chunk=vocoder_chunk)
        self.chunk = settings.chunk
        self.pending = torch.zeros(model.cfg.n_mels, 0, device=self.device)

    def push(self, text: str) -> Iterator[np.ndarray]:
        """Text as it arrives (any split: characters, tokens, words); yields the audio final now, a chunk
        at a time (so the first chunk plays while later ones are computed)."""
        return self.push_ids(self.frontend.push(text))

    def push_ids(self, ids: list[int]) -> Iterator[np.ndarray]:
        self.pending = torch.cat([self.pending, self.text.push(ids)], dim=-1)
        return self._run(final=False)

    def finish(self) -> Iterator[np.ndarray]:
        """The end of the text: everything still held back."""
        return self.finish_ids(self.frontend.finish())

    def finish_ids(self, ids: list[int]) -> Iterator[np.ndarray]:
        self.pending = torch.cat([self.pending, self.text.push(ids), self.text.finish()], dim=-1)
        yield from self._run(final=True)
        yield self.vocoder.finish()

    @torch.no_grad()
    def _run(self, final: bool) -> Iterator[np.ndarray]:
        while self.pending.shape[-1] >= self.chunk or (final and self.pending.shape[-1] > 0):
            valid = min(self.chunk, self.pending.shape[-1])
            mu = torch.zeros(self.pending.shape[0], self.chunk, device=self.device)
            mu[:, :valid] = self.pending[:, :valid]
            self.pending = self.pending[:, valid:]
            out, self.flow_state = self.flow.step(
                {"mu": mu[None], "valid": torch.tensor([valid], device=self.device),
                 "speaker": torch.tensor([self.speaker], device=self.device)}, self.flow_state)
            mel = out["mel"][0, :, :valid]
            if self.on_mel is not None:
                self.on_mel(mel)
            audio = self.vocoder.push(mel)
            if audio.size:
                yield audio


def synthesize(synthesizer: StreamingSynthesizer, text: str) -> np.ndarray:
    """All of ``text`` through one streaming synthesizer: the audio, concatenated."""
    pieces = [*synthesizer.push(text), *synthesizer.finish()]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


@torch.no_grad()
def synthesize_offline_ids(model: AcousticModel, vocoder: HifiGan, ids: list[int], voice: str,
                           settings: SolverSettings, length_scale: float = 1.0) -> tuple[Tensor, np.ndarray]:
    """``(mel [n_mels, T], audio)`` of the whole phoneme sequence at once (the parity reference)."""
    speaker = voice_index(model, voice)
    mu_frames = encode_text(model, ids, speaker, length_scale)
    mel = synthesize_offline(model, mu_frames[None], torch.tensor([speaker]), settings)[0]
    return mel, vocode_offline(vocoder, mel)
