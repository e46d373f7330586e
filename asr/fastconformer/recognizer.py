"""Host side of streaming recognition: feature framing, encoder steps, greedy decoding, endpointing.

A :class:`Session` takes audio in pieces of any length and returns partial and final hypotheses with word
times. It keeps only small per-stream state beside the step states: the feature frames not yet consumed,
the tokens of the open segment and the endpoint counters. Finalising a segment resets the decoder state
(not the encoder's, whose left context stays useful across segments).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from streaming.backend import DTYPES, Backend, TorchBackend
from streaming.blocks import StreamingLogMel
from streaming.inline import initial_states

from ..hypothesis import Hypothesis, Word
from .config import Context
from .decoding import RNNTState, ctc_greedy, rnnt_greedy
from .model import FastConformer
from .steps import EncoderStep, HeadSteps


@dataclass(frozen=True)
class EndpointConfig:
    """When a segment ends (sherpa-onnx's three rules); trailing silence counts frames without a new token."""

    enabled: bool = True
    silence_after_speech_s: float = 1.2
    silence_without_speech_s: float = 2.4
    max_segment_s: float = 20.0


@dataclass
class _Segment:
    tokens: list[tuple[int, int]] = field(default_factory=list)  # (token, absolute encoder frame)
    start_frame: int = 0
    last_token_frame: int | None = None


class Recognizer:
    """One model at one lookahead with one decoder; makes sessions and transcribes whole signals.

    Sessions run the encoder and head steps on ``backend`` (torch on the CPU by default; ONNX Runtime with
    ``streaming.onnx_backend``); the offline forward is always torch (the parity reference)."""

    def __init__(self, model: FastConformer, lookahead_ms: float | None = None, decoder: str | None = None,
                 endpoint: EndpointConfig = EndpointConfig(), backend: Backend | None = None) -> None:
        self.model = model.eval()
        enc = model.cfg.encoder
        self.context: Context = enc.att_context_size[0] if lookahead_ms is None else enc.context_for_lookahead_ms(
            lookahead_ms, 1000 * model.cfg.features.hop_length / model.cfg.features.sample_rate)
        decoder = decoder or model.decoders[0]
        if decoder not in model.decoders:
            raise ValueError(f"decoder {decoder!r} is not in this model; it has {', '.join(model.decoders)}")
        self.decoder, self.endpoint = decoder, endpoint
        weight = next(model.parameters())
        self.backend = backend or TorchBackend(weight.device, {v: k for k, v in DTYPES.items()}[weight.dtype])
        self.encoder_step = EncoderStep(model.encoder, self.context)
        self.prepared_encoder = self.backend.prepare(self.encoder_step)
        self.heads = HeadSteps(model, self.backend, decoder)
        self._offline_heads: HeadSteps | None = None

    @property
    def lookahead_ms(self) -> float:
        return self.model.cfg.encoder.lookahead_ms(self.context)

    def session(self) -> Session:
        return Session(self)

    # ---- decoding shared by streaming and offline ----------------------------------------------------
    def initial_decoder_state(self, batch: int, device: torch.device | str = "cpu") -> RNNTState | Tensor:
        if self.decoder == "rnnt":
            return RNNTState(*self.model.transducer.initial_state(batch, device))
        return torch.full((batch,), self.model.cfg.heads.blank, dtype=torch.int64, device=device)

    def decode(self, encoded: Tensor, lengths: Tensor, state: RNNTState | Tensor, heads: HeadSteps | None = None):
        """Greedy tokens of one chunk of encoder frames per stream, on ``heads`` (the session backend's by default)."""
        heads, blank = heads or self.heads, self.model.cfg.heads.blank
        if self.decoder == "rnnt":
            return rnnt_greedy(heads, encoded, lengths, state, self.model.cfg.heads.max_symbols, blank)
        return ctc_greedy(heads.ctc(encoded), lengths, state, blank)

    def hypothesis(self, tokens: list[tuple[int, int]], final: bool, segment: int) -> Hypothesis:
        frame_s = self.model.frame_seconds
        words = self.model.tokenizer.words([(t, f * frame_s) for t, f in tokens], frame_s)
        ids = tuple(t for t, _ in tokens)
        # greedy tokens are never revised, but the last word can still grow by a continuation piece
        return Hypothesis(self.model.tokenizer.decode(list(ids)).strip(), tuple(Word(*w) for w in words), final,
                          segment, ids, len(words) if final else max(0, len(words) - 1))

    @torch.inference_mode()
    def transcribe_offline(self, audios: list[np.ndarray]) -> list[Hypothesis]:
        """Full-signal forward under the same attention masks (no endpointing): the parity reference."""
        device = next(self.model.parameters()).device
        lengths = torch.tensor([len(a) for a in audios], device=device)
        batch = torch.zeros(len(audios), int(lengths.max()), device=device)
        for i, a in enumerate(audios):
            batch[i, : len(a)] = torch.as_tensor(a, dtype=torch.float32)
        mel, frames = self.model.features(batch, lengths)
        encoded, enc_lengths = self.model.encoder(mel, frames, self.context)
        if self._offline_heads is None:
            self._offline_heads = HeadSteps(self.model, TorchBackend(device), self.decoder)
        emitted, _ = self.decode(encoded, enc_lengths, self.initial_decoder_state(len(audios), device),
                                 self._offline_heads)
        return [self.hypothesis(tokens, True, 0) for tokens in emitted]

    def transcribe(self, audio: np.ndarray) -> list[Hypothesis]:
        """Streams one whole signal through a session; returns every partial and final hypothesis."""
        session = self.session()
        return session.accept(audio) + session.finish()


class Session:
    """One live stream: ``accept`` audio pieces, ``finish`` at the end; both return new hypotheses."""

    def __init__(self, recognizer: Recognizer) -> None:
        self.r = recognizer
        model = recognizer.model
        self.hop = model.encoder.hop(recognizer.context)
        self.mel = StreamingLogMel(model.cfg.features)
        self.samples = 0
        self.frames_emitted = 0
        self.pending = torch.zeros(model.cfg.encoder.feat_in, model.encoder.leading_pad)
        self.encoder_state = initial_states(recognizer.backend, recognizer.prepared_encoder, 1)
        self.decoder_state = recognizer.initial_decoder_state(1)
        self.segment = _Segment()
        self.segment_index = 0
        self.frames_decoded = 0
        self.finished = False

    def accept(self, audio: np.ndarray | Tensor) -> list[Hypothesis]:
        return self._run(self.chunks_for(audio))

    def finish(self) -> list[Hypothesis]:
        """Flushes the signal's last frames (NeMo counts ``N // hop`` of them) and finalises the segment."""
        if self.finished:
            return []
        return self._run(self.chunks_at_end()) + self.end()

    # ---- the two halves, for drivers that run the encoder step elsewhere (the chunk scheduler) ---------
    def chunks_for(self, audio: np.ndarray | Tensor) -> list[tuple[Tensor, int]]:
        """Takes audio; returns the encoder chunks now complete: ``(features [feat, hop], valid frames)``."""
        if self.finished:
            raise RuntimeError("this session has finished; open a new one")
        audio = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono samples [n], got shape {list(audio.shape)}")
        self.samples += audio.shape[0]
        self._add_frames(self.mel.process(audio))
        return self._take(final=False)

    def chunks_at_end(self) -> list[tuple[Tensor, int]]:
        """The signal has ended: its remaining chunks (the last one padded); call :meth:`end` after them."""
        self.finished = True
        self._add_frames(self.mel.flush())
        return self._take(final=True)

    @torch.inference_mode()
    def consume(self, encoded: Tensor, length: int) -> list[Hypothesis]:
        """Decodes one chunk's encoder output ``[frames, d_model]``; a partial if it added tokens, a final at an endpoint."""
        emitted, self.decoder_state = self.r.decode(encoded[None], torch.tensor([length], device=encoded.device),
                                                    self.decoder_state)
        for token, frame in emitted[0]:
            self.segment.tokens.append((token, self.frames_decoded + frame))
            self.segment.last_token_frame = self.frames_decoded + frame
        self.frames_decoded += length
        if self._endpoint():
            return self._finalise()
        return [self.r.hypothesis(self.segment.tokens, False, self.segment_index)] if emitted[0] else []

    def end(self) -> list[Hypothesis]:
        """Finalises the open segment (after the last chunk was consumed)."""
        return self._finalise()

    def _add_frames(self, frames: Tensor) -> None:
        limit = self.samples // self.r.model.cfg.features.hop_length  # NeMo drops the half-padded last frame
        frames = frames[:, : max(0, limit - self.frames_emitted)]
        self.frames_emitted += frames.shape[1]
        self.pending = torch.cat([self.pending, frames], dim=1)

    def _take(self, final: bool) -> list[tuple[Tensor, int]]:
        chunks = []
        while self.pending.shape[1] >= self.hop or (final and self.pending.shape[1] > 0):
            chunk, self.pending = self.pending[:, : self.hop], self.pending[:, self.hop :]
            chunks.append((torch.nn.functional.pad(chunk, (0, self.hop - chunk.shape[1])), chunk.shape[1]))
        return chunks

    @torch.inference_mode()
    def _run(self, chunks: list[tuple[Tensor, int]]) -> list[Hypothesis]:
        events: list[Hypothesis] = []
        for features, valid in chunks:
            out, self.encoder_state = self.r.backend.run(
                self.r.prepared_encoder, {"features": features[None], "valid": torch.tensor([valid])}, self.encoder_state)
            events += self.consume(out["encoded"][0], int(out["length"][0]))
        return events

    def _endpoint(self) -> bool:
        rules, frame_s = self.r.endpoint, self.r.model.frame_seconds
        if not rules.enabled:
            return False
        since = self.segment.start_frame if self.segment.last_token_frame is None else self.segment.last_token_frame + 1
        silence = (self.frames_decoded - since) * frame_s
        length = (self.frames_decoded - self.segment.start_frame) * frame_s
        if self.segment.tokens:
            return silence >= rules.silence_after_speech_s or length >= rules.max_segment_s
        if silence >= rules.silence_without_speech_s:
            self.segment = _Segment(start_frame=self.frames_decoded)  # nothing said: restart quietly
        return False

    def _finalise(self) -> list[Hypothesis]:
        events = []
        if self.segment.tokens:
            events.append(self.r.hypothesis(self.segment.tokens, True, self.segment_index))
            self.segment_index += 1
        self.segment = _Segment(start_frame=self.frames_decoded)
        self.decoder_state = self.r.initial_decoder_state(1)
        return events
