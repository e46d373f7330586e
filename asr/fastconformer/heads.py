"""CTC head, RNNT prediction network and joint, each usable as a pure step on explicit state.

Token ids are the tokenizer's; the blank is the last class (``vocab_size``), as in NeMo. The prediction
network's embedding pads the blank, so "start of sequence" and "last token was blank" are the same zero
input, which is what lets a decoder state be reset to (blank, zeros) after an endpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import HeadsConfig


class CTCHead(nn.Module):
    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size + 1)

    def forward(self, encoded: Tensor) -> Tensor:
        """``[B, T, D]`` -> log-probabilities ``[B, T, vocab + 1]``."""
        return F.log_softmax(self.proj(encoded).float(), dim=-1)


class Transducer(nn.Module):
    """RNNT prediction network (embedding + LSTM) and joint ``Linear(relu(enc(f) + pred(g)))``."""

    def __init__(self, d_model: int, cfg: HeadsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size + 1, cfg.pred_hidden, padding_idx=cfg.blank)
        self.lstm = nn.LSTM(cfg.pred_hidden, cfg.pred_hidden, cfg.pred_rnn_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.pred_rnn_layers > 1 else 0.0)
        self.pred_dropout = nn.Dropout(cfg.dropout)
        self.joint_enc = nn.Linear(d_model, cfg.joint_hidden)
        self.joint_pred = nn.Linear(cfg.pred_hidden, cfg.joint_hidden)
        self.joint_dropout = nn.Dropout(cfg.dropout)
        self.joint_out = nn.Linear(cfg.joint_hidden, cfg.vocab_size + 1)

    def initial_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
        """``(last_token [B], h [B, layers, H], c [B, layers, H])``: blank and zeros."""
        shape = (batch, self.cfg.pred_rnn_layers, self.cfg.pred_hidden)
        return (torch.full((batch,), self.cfg.blank, dtype=torch.int64, device=device),
                torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def predict_step(self, token: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One label: ``token [B]`` -> prediction output ``[B, H]`` and the state after consuming it."""
        out, (h2, c2) = self.lstm(self.embed(token)[:, None], (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous()))
        return out[:, 0], h2.transpose(0, 1), c2.transpose(0, 1)

    def predict(self, targets: Tensor) -> Tensor:
        """Teacher forcing: ``targets [B, U]`` -> ``[B, U + 1, H]`` (blank/SOS prepended)."""
        sos = torch.full_like(targets[:, :1], self.cfg.blank)
        out, _ = self.lstm(self.embed(torch.cat([sos, targets], dim=1)))
        return self.pred_dropout(out)

    def joint(self, enc_proj: Tensor, pred_proj: Tensor) -> Tensor:
        """Logits from already projected encoder and prediction outputs (broadcasting)."""
        return self.joint_out(self.joint_dropout(F.relu(enc_proj + pred_proj)))

    def joint_all(self, encoded: Tensor, predicted: Tensor) -> Tensor:
        """``[B, T, D]`` x ``[B, U + 1, H]`` -> logits ``[B, T, U + 1, vocab + 1]`` for the loss."""
        return self.joint(self.joint_enc(encoded)[:, :, None], self.joint_pred(predicted)[:, None])
