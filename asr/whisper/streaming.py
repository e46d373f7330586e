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

from ..hypothesis import Hypothesis, Word
from ..vad import WINDOW, VADState, speech_probabilities
from .decoder import DecoderState
from .encoder import EncoderState
from .features import HOP, SAMPLE_RATE, StreamingFeatures
from .model import CausalWhisper

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

    def __post_init__(self) -> None:
        if self.chunk_ms % 20 or self.chunk_ms <= 0:
            raise ValueError(f"a chunk is a whole number of 20 ms encoder frames, got {self.chunk_ms} ms")

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


class WhisperSession:
    """One live stream: ``accept`` audio pieces, ``finish`` at the end; both return new hypotheses."""

    def __init__(self, model: CausalWhisper, cfg: StreamConfig = StreamConfig()) -> None:
        self.model, self.cfg = model, cfg
        weight = next(model.parameters())
        self.device, self.dtype = weight.device, weight.dtype
        self.suppress = torch.tensor(model.tokens.suppress, device=self.device)  # once, not per token
        self.suppress_begin = torch.tensor(model.tokens.suppress_begin, device=self.device)
        self.continuations = torch.tensor(model.tokens.continuations, device=self.device)
        self.features = StreamingFeatures()
        self.pending = torch.zeros(model.encoder.hf.conv1.in_channels, 0)
        self.segment = _Segment()
        self.context: list[int] = []
        self.chunks = 0
        self.finished = False
        self.vad = VADState()
        self.vad_windows: list[bool] = []  # speech decisions of 32 ms windows not yet reached by a chunk
        self.vad_consumed = 0  # windows already reached
        self.chunks_taken = 0  # chunks taken from the stream, skipped ones included
        self.silence_s = 0.0  # trailing non-speech up to the current chunk's end
        self.heard_speech = False  # in the open segment
        self.preroll: Tensor | None = None  # the last skipped chunk: speech onsets straddle chunks
        self._reset_states()

    def _reset_states(self) -> None:
        self.encoder_state: EncoderState = self.model.encoder.initial_state(1, self.dtype, self.device)
        self.decoder_state: DecoderState = self.model.decoder.initial_state(1, self.dtype, self.device)

    # ---- audio in ----------------------------------------------------------------------------------
    def accept(self, audio: np.ndarray | Tensor) -> list[Hypothesis]:
        if self.finished:
            raise RuntimeError("this session has finished; open a new one")
        audio = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono samples [n], got shape {list(audio.shape)}")
        self.vad_windows += [p >= self.cfg.vad_threshold for p in speech_probabilities(audio.numpy(), self.vad)]
        self.pending = torch.cat([self.pending, self.features.process(audio)], dim=1)
        return self._run(final=False)

    def finish(self) -> list[Hypothesis]:
        """Decodes the last, partial chunk (padded with the feature floor) and finalises the segment."""
        if self.finished:
            return []
        self.finished = True
        self.pending = torch.cat([self.pending, self.features.flush()], dim=1)
        return self._run(final=True) + self._finalise()

    @torch.inference_mode()
    def _run(self, final: bool) -> list[Hypothesis]:
        width = 2 * self.cfg.frames
        events: list[Hypothesis] = []
        while self.pending.shape[1] >= width or (final and self.pending.shape[1] > 0):
            chunk, self.pending = self.pending[:, :width], self.pending[:, width:]
            if chunk.shape[1] < width:  # padded with what silence looks like
                chunk = torch.nn.functional.pad(chunk, (0, width - chunk.shape[1]), value=self.features.floor())
            self._hear_until((self.chunks_taken + 1) * self.cfg.chunk_ms / 1000)
            self.chunks_taken += 1
            if int(self.encoder_state.length) + 2 * self.cfg.frames > self.model.encoder.capacity:
                events += self._finalise()
            if not self.heard_speech:  # silence before the segment's speech: skip it (one chunk kept as pre-roll)
                self.segment.start_s += self.cfg.chunk_ms / 1000
                self.preroll = chunk
                continue
            if self.preroll is not None:  # the chunk before the onset, encoded but not decoded on its own
                self.segment.start_s -= self.cfg.chunk_ms / 1000
                self._encode(self.preroll)
                self.preroll = None
            self._encode(chunk)
            if self._decode(self.chunks * self.cfg.chunk_ms / 1000):
                events.append(self._hypothesis(final=False))
            endpoint = self.cfg.endpoint_silence_s
            long_enough = self.chunks * self.cfg.chunk_ms / 1000 >= self.cfg.pause_after_s
            if not final and self.silence_s > 0 and (long_enough or endpoint is not None and self.silence_s >= endpoint):
                events += self._finalise()  # a segment without tokens (noise) ends too, silently
        return events

    def _hear_until(self, time_s: float) -> None:
        """Takes the VAD decisions of the windows that end by ``time_s`` (the current chunk's end)."""
        reached = min(len(self.vad_windows), int(time_s * SAMPLE_RATE) // WINDOW - self.vad_consumed)
        for speech in self.vad_windows[:max(0, reached)]:
            self.silence_s = 0.0 if speech else self.silence_s + WINDOW / SAMPLE_RATE
            self.heard_speech |= speech
        del self.vad_windows[:max(0, reached)]
        self.vad_consumed += max(0, reached)

    def _encode(self, chunk: Tensor) -> None:
        encoded, self.encoder_state = self.model.encoder.stream(chunk[None].to(self.device, self.dtype),
                                                                self.encoder_state)
        self.decoder_state = self.model.decoder.extend_audio(encoded, self.decoder_state)
        self.chunks += 1

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

    def _decode(self, now_s: float) -> bool:
        """Re-checks the open tail against the new audio and continues greedily; True if the text or the
        committed part changed."""
        seg, cfg = self.segment, self.cfg
        prefix = self._prefix()
        before = (list(seg.tokens), seg.stable_end)
        state = self.model.decoder.rewind(self.decoder_state, torch.zeros(1, dtype=torch.int64, device=self.device))
        logits, state = self.model.decoder.step(torch.tensor([prefix + seg.tokens], device=self.device), state)
        for i in range(seg.committed, len(seg.tokens)):  # the stability rule on the open tail
            scores = self._scores(logits[0, len(prefix) + i - 1], i)
            token = seg.tokens[i]
            if not (scores[token] >= seg.logits[i] or int(scores.argmax()) == token):
                del seg.tokens[i:], seg.logits[i:], seg.emitted_s[i:], seg.checks[i:]
                break
            seg.checks[i] += 1
        state = self.model.decoder.rewind(state, torch.tensor([len(prefix) + len(seg.tokens)], device=self.device))
        scores = self._scores(logits[0, len(prefix) + len(seg.tokens) - 1], len(seg.tokens))
        budget = 8 + cfg.max_tokens_per_s * now_s
        for _ in range(cfg.max_tokens_per_chunk):
            token = int(scores.argmax())
            if (token == self.model.tokens.eot or len(seg.tokens) >= budget or _repeats([*seg.tokens, token])
                    or len(prefix) + len(seg.tokens) >= self.model.decoder.token_capacity - 1):
                break
            seg.tokens.append(token)
            seg.logits.append(float(scores[token]))
            seg.emitted_s.append(now_s)
            seg.checks.append(0)
            step_logits, state = self.model.decoder.step(torch.tensor([[token]], device=self.device), state)
            scores = self._scores(step_logits[0, -1], len(seg.tokens))
        self.decoder_state = state
        self._commit(ended=token == self.model.tokens.eot)
        return (seg.tokens, seg.stable_end) != before

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
        """Commits the whole segment and starts the next one with fresh caches (30 s is Whisper's window)."""
        final = [self._hypothesis(final=True)] if self.segment.tokens else []
        self.context = (self.context + self.segment.tokens)[-self.cfg.prompt_tokens :]
        start = self.segment.start_s + self.chunks * self.cfg.chunk_ms / 1000
        self.segment = _Segment(index=self.segment.index + 1, start_s=start)
        self.chunks = 0
        self.heard_speech = self.silence_s == 0.0
        self.preroll = None
        self._reset_states()
        return final


def stream_signal(model: CausalWhisper, audio: np.ndarray, cfg: StreamConfig = StreamConfig(),
                  piece_s: float = 0.1) -> list[Hypothesis]:
    """A whole signal through one session in ``piece_s`` pieces, as live audio would arrive; every event."""
    session, piece = WhisperSession(model, cfg), max(1, round(piece_s * SAMPLE_RATE))
    events = [e for i in range(0, len(audio), piece) for e in session.accept(audio[i : i + piece])]
    return events + session.finish()
