"""Host side of causal streaming Whisper: chunks through the encoder step, decoding with the stability rule.

Every chunk (100, 200 or 300 ms of audio, complete 2.5 ms after its end) runs the encoder step and appends
its frames to the decoder's cross-attention cache. The decoder then re-reads the segment's tokens against
all the audio so far (one parallel pass; a stale cache would have seen less audio than a fresh decode)
and applies CarelessWhisper's stability rule to the open tail (at most the last ``look_back`` tokens) of
the previous hypothesis: a token stays if its new logit did not fall or it is still the argmax; from the
first that fails, the tail is decoded again. A token is committed, and never changes, once it has passed
``confirmations`` re-checks against newer audio or once ``look_back`` tokens follow it. A word is committed
(a hypothesis's ``stable`` words) when its tokens are and a new word or end-of-text follows it; from then on
the decoder may not continue it (tokens without a leading space are barred at that position), so committed
words never change. Decoding stops at
end-of-text, at a word said three times in a row (n-grams up to 4 tokens) and beyond 6 tokens per second
of audio: Whisper's loops, which would otherwise be committed. A word's time is
the end of the chunk at which its last token was first emitted (commit-time stamps).

A segment ends at the end of an utterance (Silero VAD hears ``endpoint_silence_s`` of silence after
speech), at any pause once it is ``pause_after_s`` long (the adapter learned on short utterances, and
30 s segments drift into repeating earlier audio), when the encoder's 30 s window is full, or at the end
of the signal; the next segment starts with
fresh caches and is prompted with the end of the committed text (``<|startofprev|>``). Chunks before any
speech are not decoded and do not fill the window (Whisper invents text on silence).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from streaming.backend import DTYPES, Backend, TorchBackend
from streaming.inline import InlineSteps, Requests, drive

from ..hypothesis import Hypothesis, Word
from ..vad import WINDOW, VADState, speech_probabilities
from .features import HOP, SAMPLE_RATE, StreamingFeatures
from .model import CausalWhisper
from .steps import TOKEN_BUCKET, WhisperAudioStep, WhisperDecoderStep

FRAME_S = 2 * HOP / SAMPLE_RATE  # an encoder frame: 20 ms
CHUNKS_MS = (100, 200, 300)


@dataclass(frozen=True)
class StreamConfig:
    chunk_ms: int = 300
    look_back: int = 2  # the open tail: at most this many tokens are re-checked against each new chunk
    confirmations: int = 1  # re-checks a token must pass to be committed before it leaves the open tail
    max_tokens_per_chunk: int = 12
    max_tokens_per_s: float = 6.0  # speech runs at ~3 tokens/s; more is Whisper looping
    prompt_tokens: int = 32  # committed tokens carried into the next segment as <|startofprev|> context
    endpoint_silence_s: float | None = 0.8  # None: no end-of-utterance rule
    pause_after_s: float = 15.0  # past this, a segment also ends at any pause (long segments drift into loops)
    vad_threshold: float = 0.5
    beam: int = 1  # 1: greedy; 2-4: beam search over each chunk's continuation

    def __post_init__(self) -> None:
        if self.chunk_ms % 20 or self.chunk_ms <= 0:
            raise ValueError(f"a chunk is a whole number of 20 ms encoder frames, got {self.chunk_ms} ms")
        if not 1 <= self.beam <= 8:
            raise ValueError(f"beam is 1 (greedy) to 8, got {self.beam}")

    @property
    def frames(self) -> int:
        return self.chunk_ms // 20


@dataclass
class _Segment:
    index: int = 0
    start_s: float = 0.0
    tokens: list[int] = field(default_factory=list)
    logits: list[float] = field(default_factory=list)  # each token's logit when it was chosen
    emitted_s: list[float] = field(default_factory=list)  # when each token was first emitted
    checks: list[int] = field(default_factory=list)  # re-checks each token has passed
    committed: int = 0  # tokens that will not change
    stable_end: int = 0  # tokens up to the end of the last committed word (a word boundary)


def _repeats(tokens: list[int], times: int = 3, longest: int = 4) -> bool:
    """Whether the tokens end with an n-gram (n <= ``longest``) said ``times`` times in a row: a Whisper loop."""
    return any(len(tokens) >= times * n and all(tokens[-n:] == tokens[len(tokens) - (k + 1) * n : len(tokens) - k * n]
                                               for k in range(1, times))
               for n in range(1, longest + 1))


def model_backend(model: CausalWhisper) -> TorchBackend:
    """Torch where the model's weights are, in their dtype (the default backend of a session)."""
    weight = next(model.parameters())
    return TorchBackend(weight.device, {dtype: name for name, dtype in DTYPES.items()}[weight.dtype])


def whisper_steps(model: CausalWhisper, cfg: StreamConfig) -> tuple[WhisperAudioStep, WhisperDecoderStep]:
    """The two step functions a session of ``cfg`` runs (its lanes on a scheduler)."""
    return WhisperAudioStep(model, cfg.frames), WhisperDecoderStep(model, cfg.frames, cfg.look_back + 1)


@dataclass
class _Beam:
    tokens: list[int]
    logits: list[float]  # each token's raw logit when it was chosen
    score: float = 0.0  # summed log-probability
    ended: bool = False  # finished with end-of-text (not cut by a limit)

    def normalised(self) -> float:
        return self.score / max(1, len(self.tokens) + self.ended)


class WhisperSession:
    """One live stream: ``accept`` audio pieces, ``finish`` at the end; both return new hypotheses.

    Steps run inline by default; ``feed``/``end`` are the same work as generators of step requests, for a
    scheduler that batches many sessions' steps (``streaming.inline.drive_async``; lanes from
    :func:`whisper_steps`)."""

    def __init__(self, model: CausalWhisper, cfg: StreamConfig = StreamConfig(), inline: bool = True,
                 backend: Backend | None = None) -> None:
        self.model, self.cfg = model, cfg
        backend = backend or model_backend(model)
        self.device = backend.device  # inputs go in the steps' declared fp32; a backend casts them to its own
        self.suppress = torch.tensor(model.tokens.suppress, device=self.device)  # once, not per token
        self.suppress_begin = torch.tensor(model.tokens.suppress_begin, device=self.device)
        self.continuations = torch.tensor(model.tokens.continuations, device=self.device)
        audio_step, decoder_step = whisper_steps(model, cfg)
        self.lanes = {"audio": audio_step.name, "decoder": decoder_step.name}
        self.steps = InlineSteps({audio_step.name: audio_step, decoder_step.name: decoder_step},
                                 backend) if inline else None
        layers, d = len(model.decoder.hf.layers), model.decoder.d_model
        self.no_audio = torch.zeros(layers, cfg.frames, d, device=self.device)
        self.new_audio: tuple[Tensor, Tensor] | None = None  # the last chunk's cross-attention rows, not yet sent
        self.features = StreamingFeatures()
        self.pending = torch.zeros(model.encoder.hf.conv1.in_channels, 0)
        self.segment = _Segment()
        self.context: list[int] = []
        self.chunks = 0  # encoded in the open segment
        self.finished = False
        self.vad = VADState()
        self.vad_windows: list[bool] = []  # speech decisions of 32 ms windows not yet reached by a chunk
        self.vad_consumed = 0  # windows already reached
        self.chunks_taken = 0  # chunks taken from the stream, skipped ones included
        self.silence_s = 0.0  # trailing non-speech up to the current chunk's end
        self.heard_speech = False  # in the open segment
        self.preroll: Tensor | None = None  # the last skipped chunk: speech onsets straddle chunks

    @property
    def frames(self) -> int:
        """Encoder frames in the open segment (the valid length of both frame caches)."""
        return self.chunks * self.cfg.frames

    # ---- audio in ----------------------------------------------------------------------------------
    def accept(self, audio: np.ndarray | Tensor) -> list[Hypothesis]:
        return drive(self.feed(audio), self._inline())

    def finish(self) -> list[Hypothesis]:
        """Decodes the last, partial chunk (padded with the feature floor) and finalises the segment."""
        return drive(self.end(), self._inline())

    def _inline(self):
        if self.steps is None:
            raise RuntimeError("this session runs on a scheduler: drive feed()/end() with its streams")
        return self.steps

    def feed(self, audio: np.ndarray | Tensor) -> Requests[list[Hypothesis]]:
        """``accept`` as step requests."""
        if self.finished:
            raise RuntimeError("this session has finished; open a new one")
        audio = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono samples [n], got shape {list(audio.shape)}")
        self.vad_windows += [p >= self.cfg.vad_threshold for p in speech_probabilities(audio.numpy(), self.vad)]
        self.pending = torch.cat([self.pending, self.features.process(audio)], dim=1)
        return self._run(final=False)

    def end(self) -> Requests[list[Hypothesis]]:
        """``finish`` as step requests."""
        if self.finished:
            return self._nothing()
        self.finished = True
        self.pending = torch.cat([self.pending, self.features.flush()], dim=1)
        return self._run(final=True)

    @staticmethod
    def _nothing() -> Requests[list[Hypothesis]]:
        return []
        yield  # a generator that asks for nothing

    def _run(self, final: bool) -> Requests[list[Hypothesis]]:
        width = 2 * self.cfg.frames
        events: list[Hypothesis] = []
        while self.pending.shape[1] >= width or (final and self.pending.shape[1] > 0):
            chunk, self.pending = self.pending[:, :width], self.pending[:, width:]
            if chunk.shape[1] < width:  # padded with what silence looks like
                chunk = torch.nn.functional.pad(chunk, (0, width - chunk.shape[1]), value=self.features.floor())
            self._hear_until((self.chunks_taken + 1) * self.cfg.chunk_ms / 1000)
            self.chunks_taken += 1
            if self.frames + 2 * self.cfg.frames > self.model.encoder.capacity:
                events += self._finalise()
            if not self.heard_speech:  # silence before the segment's speech: skip it (one chunk kept as pre-roll)
                self.segment.start_s += self.cfg.chunk_ms / 1000
                self.preroll = chunk
                continue
            if self.preroll is not None:  # the chunk before the onset, encoded but not decoded on its own
                self.segment.start_s -= self.cfg.chunk_ms / 1000
                yield from self._encode(self.preroll)
                self.preroll = None
            yield from self._encode(chunk)
            if (yield from self._decode(self.chunks * self.cfg.chunk_ms / 1000)):
                events.append(self._hypothesis(final=False))
            endpoint = self.cfg.endpoint_silence_s
            long_enough = self.chunks * self.cfg.chunk_ms / 1000 >= self.cfg.pause_after_s
            if not final and self.silence_s > 0 and (long_enough or endpoint is not None and self.silence_s >= endpoint):
                events += self._finalise()  # a segment without tokens (noise) ends too, silently
        return events + (self._finalise() if final else [])

    def _hear_until(self, time_s: float) -> None:
        """Takes the VAD decisions of the windows that end by ``time_s`` (the current chunk's end)."""
        reached = min(len(self.vad_windows), int(time_s * SAMPLE_RATE) // WINDOW - self.vad_consumed)
        for speech in self.vad_windows[:max(0, reached)]:
            self.silence_s = 0.0 if speech else self.silence_s + WINDOW / SAMPLE_RATE
            self.heard_speech |= speech
        del self.vad_windows[:max(0, reached)]
        self.vad_consumed += max(0, reached)

    def _encode(self, chunk: Tensor) -> Requests[None]:
        if self.new_audio is not None:  # two chunks in a row (the pre-roll): the first goes in alone
            yield from self._step_decoder([[self.model.tokens.eot]], 0, 1)
        out = yield self.lanes["audio"], {"mel": chunk.to(self.device, torch.float32),
                                          "position": torch.tensor(self.frames, device=self.device)}
        self.new_audio = (out["audio_keys"].float(), out["audio_values"].float())  # fp16 backends give fp16
        self.chunks += 1

    def _step_decoder(self, rows: list[list[int]], start: int, count: int) -> Requests[Tensor]:
        """One decoder call: ``rows`` of tokens at ``start`` (the first call after a chunk brings its audio)."""
        capacity = self.model.encoder.capacity
        if self.new_audio is None:
            keys = values = self.no_audio
            audio_at = capacity  # the scratch rows
        else:
            (keys, values), self.new_audio = self.new_audio, None
            audio_at = self.frames - self.cfg.frames
        out = yield self.lanes["decoder"], {
            "tokens": torch.tensor(rows, device=self.device), "start": torch.tensor(start, device=self.device),
            "count": torch.tensor(count, device=self.device), "audio_at": torch.tensor(audio_at, device=self.device),
            "frames": torch.tensor(self.frames, device=self.device), "audio_keys": keys, "audio_values": values}
        return out["logits"]

    # ---- decoding ----------------------------------------------------------------------------------
    def _prefix(self) -> list[int]:
        tokens = self.model.tokens
        context = [tokens.sot_prev, *self.context[-self.cfg.prompt_tokens :]] if self.context else []
        return context + tokens.prompt()

    def _scores(self, logits: Tensor, position: int) -> Tensor:
        """Logits of the token at ``position`` of the segment, with what may not come there barred."""
        scores = logits.float().clone()
        scores[..., self.suppress] = -torch.inf
        if position == 0:
            scores[..., self.suppress_begin] = -torch.inf
        elif position == self.segment.stable_end:  # right after a committed word: a new word or the end
            scores[..., self.continuations] = -torch.inf
        return scores

    def _stops(self, prefix: list[int], tokens: list[int], budget: float) -> bool:
        """Whether a candidate (the last of ``tokens``, the segment's) may not come: it would make a Whisper
        loop, or the segment already has its tokens-per-second budget or fills the decoder."""
        before = len(tokens) - 1
        return before >= budget or _repeats(tokens) or len(prefix) + before >= self.model.decoder.token_capacity - 1

    def _decode(self, now_s: float) -> Requests[bool]:
        """Re-checks the open tail against the new audio and continues; True if the text or the committed
        part changed."""
        seg = self.segment
        prefix = self._prefix()
        before = (list(seg.tokens), seg.stable_end)
        sequence = prefix + seg.tokens
        padded = -(-len(sequence) // TOKEN_BUCKET) * TOKEN_BUCKET
        logits = yield from self._step_decoder([sequence + [self.model.tokens.eot] * (padded - len(sequence))], 0,
                                               len(sequence))
        first = len(sequence) - logits.shape[1]  # the position of logits[0, 0]
        for i in range(seg.committed, len(seg.tokens)):  # the stability rule on the open tail
            scores = self._scores(logits[0, len(prefix) + i - 1 - first], i)
            token = seg.tokens[i]
            if not (scores[token] >= seg.logits[i] or int(scores.argmax()) == token):
                del seg.tokens[i:], seg.logits[i:], seg.emitted_s[i:], seg.checks[i:]
                break
            seg.checks[i] += 1
        scores = self._scores(logits[0, len(prefix) + len(seg.tokens) - 1 - first], len(seg.tokens))
        budget = 8 + self.cfg.max_tokens_per_s * now_s
        search = self._greedy if self.cfg.beam == 1 else self._beam_search
        chosen = yield from search(prefix, scores, budget)
        seg.tokens += chosen.tokens
        seg.logits += chosen.logits
        seg.emitted_s += [now_s] * len(chosen.tokens)
        seg.checks += [0] * len(chosen.tokens)
        self._commit(ended=chosen.ended)
        return (seg.tokens, seg.stable_end) != before

    def _greedy(self, prefix: list[int], scores: Tensor, budget: float) -> Requests[_Beam]:
        tokens = self.segment.tokens
        chosen = _Beam([], [])
        for _ in range(self.cfg.max_tokens_per_chunk):
            token = int(scores.argmax())
            if token == self.model.tokens.eot:
                chosen.ended = True
                break
            if self._stops(prefix, [*tokens, *chosen.tokens, token], budget):
                break
            chosen.tokens.append(token)
            chosen.logits.append(float(scores[token]))
            logits = yield from self._step_decoder([[token]], len(prefix) + len(tokens) + len(chosen.tokens) - 1, 1)
            scores = self._scores(logits[0, -1], len(tokens) + len(chosen.tokens))
        return chosen

    def _beam_search(self, prefix: list[int], scores: Tensor, budget: float) -> Requests[_Beam]:
        """Beam search over this chunk's continuation (Whisper's: ``beam`` live beams, each extended by its
        best ``beam + 1`` tokens, until ``beam`` have finished); the best by mean log-probability wins.
        Beams share the cached segment and re-send their own tokens each step (at most a chunk's worth)."""
        width, eot = self.cfg.beam, self.model.tokens.eot
        tokens, shared = self.segment.tokens, len(prefix) + len(self.segment.tokens)
        live, finished, rows = [_Beam([], [])], [], [scores]
        for _ in range(self.cfg.max_tokens_per_chunk):
            candidates = []
            for beam, row in zip(live, rows, strict=True):
                logp = torch.log_softmax(row, -1)
                top = torch.topk(logp, width + 1)
                candidates += [(beam.score + float(lp), beam, int(t), float(row[t])) for lp, t in zip(*top)]
            candidates.sort(key=lambda c: -c[0])
            following: list[_Beam] = []
            barred = {id(beam): 0 for beam in live}
            for score, beam, token, logit in candidates:
                if token == eot:
                    finished.append(_Beam(beam.tokens, beam.logits, score, ended=True))
                elif self._stops(prefix, [*tokens, *beam.tokens, token], budget):
                    barred[id(beam)] += 1
                elif len(following) < width:
                    following.append(_Beam([*beam.tokens, token], [*beam.logits, logit], score))
            finished += [beam for beam in live if barred[id(beam)] == width + 1]  # cut by a limit, as it is
            if len(finished) >= width or not following:
                break
            live = following
            grid = [b.tokens for b in live] + [live[-1].tokens] * (width - len(live))  # a full batch shape
            logits = yield from self._step_decoder(grid, shared, len(live[0].tokens))
            rows = [self._scores(logits[r, -1], len(tokens) + len(b.tokens)) for r, b in enumerate(live)]
        else:
            finished += live
        if not finished:
            finished = live
        return max(finished, key=_Beam.normalised)

    def _commit(self, ended: bool) -> None:
        """Advances the committed tokens and the committed words (see the module's docstring)."""
        seg, cfg = self.segment, self.cfg
        confirmed = seg.committed
        while confirmed < len(seg.tokens) and seg.checks[confirmed] >= cfg.confirmations:
            confirmed += 1
        seg.committed = max(seg.committed, confirmed, len(seg.tokens) - cfg.look_back)
        starts = [i for i in range(seg.stable_end + 1, seg.committed + 1)
                  if i < len(seg.tokens) and self.model.tokens.starts_word(seg.tokens[i])
                  or i == len(seg.tokens) and ended]  # a new word, or end-of-text, follows token i - 1
        seg.stable_end = max([seg.stable_end, *starts])

    # ---- output ----------------------------------------------------------------------------------
    def _words(self) -> tuple[tuple[Word, ...], int]:
        """The segment's words, and how many of them are committed."""
        words: list[Word] = []
        ends: list[int] = []  # each word's end, in tokens
        for i, (token, emitted) in enumerate(zip(self.segment.tokens, self.segment.emitted_s, strict=True)):
            piece, at = self.model.tokens.piece(token), self.segment.start_s + emitted
            if not words or self.model.tokens.starts_word(token):
                words.append(Word(piece.strip(), at, at))
                ends.append(i + 1)
            else:
                words[-1] = Word(words[-1].text + piece, words[-1].start, at)
                ends[-1] = i + 1
        kept = [(w, end) for w, end in zip(words, ends, strict=True) if w.text]
        return tuple(w for w, _ in kept), sum(end <= self.segment.stable_end for _, end in kept)

    def _hypothesis(self, final: bool) -> Hypothesis:
        seg = self.segment
        words, stable = self._words()
        return Hypothesis(self.model.tokens.decode(seg.tokens), words, final, seg.index, tuple(seg.tokens),
                          len(words) if final else stable)

    def _finalise(self) -> list[Hypothesis]:
        """Commits the whole segment and starts the next one with empty caches (30 s is Whisper's window):
        the caches' valid lengths go back to 0."""
        final = [self._hypothesis(final=True)] if self.segment.tokens else []
        self.context = (self.context + self.segment.tokens)[-self.cfg.prompt_tokens :]
        start = self.segment.start_s + self.chunks * self.cfg.chunk_ms / 1000
        self.segment = _Segment(index=self.segment.index + 1, start_s=start)
        self.chunks = 0
        self.new_audio = None
        self.heard_speech = self.silence_s == 0.0
        self.preroll = None
        return final


def stream_signal(model: CausalWhisper, audio: np.ndarray, cfg: StreamConfig = StreamConfig(),
                  piece_s: float = 0.1, backend: Backend | None = None) -> list[Hypothesis]:
    """A whole signal through one session in ``piece_s`` pieces, as live audio would arrive; every event."""
    session, piece = WhisperSession(model, cfg, backend=backend), max(1, round(piece_s * SAMPLE_RATE))
    events = [e for i in range(0, len(audio), piece) for e in session.accept(audio[i : i + piece])]
    return events + session.finish()
