"""Text -> audio for one stream, chunk by chunk: front end, text window, flow step, streaming vocoder.

``StreamingSynthesizer.push(text)`` returns the audio that is final now; ``finish()`` the rest. Text
flows through the incremental front end (``tts.frontend``), then ``TextWindow`` encodes each phoneme once
the ``text_reach`` phonemes after it are known and expands it to its predicted frames, the flow step turns
every full chunk of frames into mel, and the vocoder step into samples. ``synthesize_offline`` is the
same model over the whole text at once: the parity reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from streaming.backend import Backend

from .acoustic import AcousticModel, durations_from_log, frame_condition
from .flow_step import FlowStep, SolverSettings, synthesize_offline
from .frontend import IncrementalFrontEnd
from .hifigan import HifiGan
from .vocoder import StreamingVocoder, VocoderStep, vocode_offline


def voice_index(model: AcousticModel, voice: str) -> int:
    if voice not in model.cfg.voices:
        raise ValueError(f"unknown voice {voice!r}; the model has {', '.join(model.cfg.voices)}")
    return model.cfg.voices.index(voice)


@torch.no_grad()
def encode_text(model: AcousticModel, ids: list[int], speaker: int, length_scale: float = 1.0) -> Tensor:
    """Offline: all phoneme ids -> the frame condition ``[cond_channels, T]``."""
    ids_t = torch.tensor([ids])
    phonemes, log_d = model.encoder(ids_t, torch.tensor([speaker]), torch.tensor([[0, len(ids)]]))
    return frame_condition(phonemes[0], durations_from_log(log_d[0], length_scale))


class TextWindow:
    """Phoneme ids as they arrive -> the frame condition of the phonemes whose ``text_reach`` future is known.

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
        if end <= self.committed:
            return torch.zeros(self.model.cfg.cond_channels, 0, device=self.device)
        start = max(0, self.committed - self.reach)
        stop = self.base + len(self.ids) if final else end + self.reach
        window = self.ids[start - self.base : stop - self.base]
        phonemes, log_d = self.model.encoder(torch.tensor([window], device=self.device),
                                       torch.tensor([self.speaker], device=self.device),
                                       torch.tensor([[0, len(window)]], device=self.device))
        take = slice(self.committed - start, end - start)
        frames = frame_condition(phonemes[0][:, take], durations_from_log(log_d[0][take], self.length_scale))
        self.committed = end
        keep_from = max(0, end - self.reach)  # the next window's left context
        self.ids = self.ids[keep_from - self.base :]
        self.base = keep_from
        return frames


@lru_cache(maxsize=8)
def step_functions(model: AcousticModel, vocoder: HifiGan, settings: SolverSettings) -> tuple[FlowStep, VocoderStep]:
    """The flow and vocoder steps of a model pair, made once (a vocoder step traces its caches on creation,
    which would otherwise add ~20 ms to every stream's first audio)."""
    return FlowStep(model, settings).to(next(model.parameters()).device), VocoderStep(vocoder)


class TextFeed:
    """One stream's text side, wherever the steps run: text -> front end -> text window -> the flow step's
    ``(cond [cond_channels, chunk], valid)`` inputs, as soon as a full chunk of frames is known (the last one at the
    end, padded)."""

    def __init__(self, model: AcousticModel, voice: str, chunk: int, length_scale: float = 1.0) -> None:
        self.speaker = voice_index(model, voice)
        self.frontend = IncrementalFrontEnd()
        self.text = TextWindow(model, self.speaker, length_scale)
        self.chunk = chunk
        self.pending = torch.zeros(model.cfg.cond_channels, 0, device=self.text.device)

    def chunks_for(self, text: str) -> list[tuple[Tensor, int]]:
        """Text as it arrives (any split: characters, tokens, words)."""
        return self.chunks_for_ids(self.frontend.push(text))

    def chunks_for_ids(self, ids: list[int]) -> list[tuple[Tensor, int]]:
        self.pending = torch.cat([self.pending, self.text.push(ids)], dim=-1)
        return self._cut(final=False)

    def chunks_at_end(self, ids: list[int] | None = None) -> list[tuple[Tensor, int]]:
        """The end of the text (``ids``: the last phonemes, for callers that feed ids)."""
        ids = self.frontend.finish() if ids is None else ids
        self.pending = torch.cat([self.pending, self.text.push(ids), self.text.finish()], dim=-1)
        return self._cut(final=True)

    def held_bytes(self) -> int:
        return (self.pending.numel() * self.pending.element_size() + len(self.frontend.buffer.encode())
                + 8 * len(self.text.ids))

    def _cut(self, final: bool) -> list[tuple[Tensor, int]]:
        chunks = []
        while self.pending.shape[-1] >= self.chunk or (final and self.pending.shape[-1] > 0):
            valid = min(self.chunk, self.pending.shape[-1])
            cond = self.pending.new_zeros(self.pending.shape[0], self.chunk)
            cond[:, :valid] = self.pending[:, :valid]
            self.pending = self.pending[:, valid:]
            chunks.append((cond, valid))
        return chunks


class StreamingSynthesizer:
    """One stream of text in, audio out (22.05 kHz float32), its steps run inline."""

    def __init__(self, model: AcousticModel, vocoder: HifiGan, settings: SolverSettings, voice: str,
                 length_scale: float = 1.0, vocoder_chunk: int = 16,
                 on_mel: Callable[[Tensor], None] | None = None, backend: Backend | None = None) -> None:
        """``backend``: where the steps run (``streaming.onnx_backend.OnnxBackend``: ONNX Runtime, from the
        exported files); None: torch, on the model's device."""
        self.on_mel = on_mel  # sees every mel chunk ``[n_mels, frames]`` on its way to the vocoder
        self.feed = TextFeed(model, voice, settings.chunk, length_scale)
        self.device = next(model.parameters()).device  # the model's: CPU, or a GPU
        flow, vocoder_step = step_functions(model, vocoder, settings)
        self.flow = backend.prepare(flow) if backend else flow
        self.flow_state = self.flow.initial_state(1, self.device)
        self.vocoder = StreamingVocoder(vocoder_step, chunk=vocoder_chunk,
                                        runner=backend.prepare(vocoder_step) if backend else None)

    def push(self, text: str) -> Iterator[np.ndarray]:
        """Text as it arrives (any split: characters, tokens, words); yields the audio final now, a chunk
        at a time (so the first chunk plays while later ones are computed)."""
        return self._run(self.feed.chunks_for(text))  # the text is taken now, the audio made as it is read

    def push_ids(self, ids: list[int]) -> Iterator[np.ndarray]:
        return self._run(self.feed.chunks_for_ids(ids))

    def finish(self) -> Iterator[np.ndarray]:
        """The end of the text: everything still held back."""
        return self._run(self.feed.chunks_at_end(), last=True)

    def finish_ids(self, ids: list[int]) -> Iterator[np.ndarray]:
        return self._run(self.feed.chunks_at_end(ids), last=True)

    def held_bytes(self) -> int:
        """What the stream holds between calls: step states, pending frames and text (flat over any length)."""
        tensors = [*self.flow_state.values(), *self.vocoder.state.values(), self.vocoder.feed.pending]
        return sum(t.numel() * t.element_size() for t in tensors) + self.feed.held_bytes()

    @torch.no_grad()
    def _run(self, chunks: list[tuple[Tensor, int]], last: bool = False) -> Iterator[np.ndarray]:
        speaker = torch.tensor([self.feed.speaker], device=self.device)
        for cond, valid in chunks:
            out, self.flow_state = self.flow.step(
                {"cond": cond[None], "valid": torch.tensor([valid], device=self.device), "speaker": speaker},
                self.flow_state)
            mel = out["mel"][0, :, :valid]
            if self.on_mel is not None:
                self.on_mel(mel)
            audio = self.vocoder.push(mel)
            if audio.size:
                yield audio
        if last:
            yield self.vocoder.finish()


def synthesize(synthesizer: StreamingSynthesizer, text: str) -> np.ndarray:
    """All of ``text`` through one streaming synthesizer: the audio, concatenated."""
    pieces = [*synthesizer.push(text), *synthesizer.finish()]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


@torch.no_grad()
def synthesize_offline_ids(model: AcousticModel, vocoder: HifiGan, ids: list[int], voice: str,
                           settings: SolverSettings, length_scale: float = 1.0) -> tuple[Tensor, np.ndarray]:
    """``(mel [n_mels, T], audio)`` of the whole phoneme sequence at once (the parity reference)."""
    speaker = voice_index(model, voice)
    cond = encode_text(model, ids, speaker, length_scale)
    mel = synthesize_offline(model, cond[None], torch.tensor([speaker]), settings)[0]
    return mel, vocode_offline(vocoder, mel)
