"""Greedy decoding that continues across chunks: batched RNNT with ``max_symbols`` and incremental CTC.

Both take one chunk of encoder frames plus the decoder state and return the tokens it adds, each with its
frame index within the chunk; history is never re-decoded. Streams in a batch advance independently:
a stream that emits a label stays on its frame, the others wait, exactly like decoding them one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass
class RNNTState:
    last_token: Tensor  # [B] int64, blank at the start (the zero embedding)
    h: Tensor  # [B, layers, H]
    c: Tensor  # [B, layers, H]


Emissions = list[list[tuple[int, int]]]  # per stream: (token, frame index in the chunk)


class TransducerSteps(Protocol):
    """The RNNT prediction and joint steps on some backend (``steps.HeadSteps``)."""

    def predict(self, token: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...

    def joint(self, encoded: Tensor, predicted: Tensor) -> Tensor: ...


@torch.no_grad()
def rnnt_greedy(steps: TransducerSteps, encoded: Tensor, lengths: Tensor, state: RNNTState,
                max_symbols: int, blank: int) -> tuple[Emissions, RNNTState]:
    """Frame-synchronous greedy search over ``encoded [B, T, D]`` (``lengths [B]`` real frames)."""
    batch, frames = encoded.shape[:2]
    token, h, c = state.last_token.clone(), state.h.clone(), state.c.clone()
    g, h_next, c_next = steps.predict(token, h, c)
    emitted: Emissions = [[] for _ in range(batch)]
    for t in range(frames):
        active = lengths > t
        for _ in range(max_symbols):
            if not bool(active.any()):
                break
            logits = steps.joint(encoded[:, t], g)
            best = logits.argmax(dim=-1)
            emit = active & (best != blank)
            if not bool(emit.any()):
                break
            for b in torch.nonzero(emit).flatten().tolist():
                emitted[b].append((int(best[b]), t))
            token = torch.where(emit, best, token)
            h = torch.where(emit[:, None, None], h_next, h)
            c = torch.where(emit[:, None, None], c_next, c)
            g_new, h_new, c_new = steps.predict(token, h, c)
            g = torch.where(emit[:, None], g_new, g)
            h_next = torch.where(emit[:, None, None], h_new, h_next)
            c_next = torch.where(emit[:, None, None], c_new, c_next)
            active = emit
    return emitted, RNNTState(token, h, c)


@torch.no_grad()
def ctc_greedy(log_probs: Tensor, lengths: Tensor, last_token: Tensor, blank: int) -> tuple[Emissions, Tensor]:
    """Merge repeats then drop blanks, continuing from the previous chunk's last frame label ``last_token [B]``."""
    best = log_probs.argmax(dim=-1)  # [B, T]
    previous = torch.cat([last_token[:, None], best[:, :-1]], dim=1)
    keep = (best != blank) & (best != previous)
    frames = torch.arange(best.shape[1], device=best.device)[None, :]
    keep &= frames < lengths[:, None]
    emitted: Emissions = [[(int(best[b, t]), int(t)) for t in torch.nonzero(keep[b]).flatten().tolist()]
                          for b in range(best.shape[0])]
    last_index = (lengths - 1).clamp(min=0)
    new_last = torch.where(lengths > 0, best.gather(1, last_index[:, None])[:, 0], last_token)
    return emitted, new_last
