"""Whisper's encoder, made block-causal at chunk granularity, as an offline forward and a streaming step.

A chunk is ``G`` encoder frames (20 ms each: 100 ms = 5, 300 ms = 15). Frame ``i`` attends to every frame
of its own chunk and of earlier chunks (CarelessWhisper's block-causal mask). The conv stem is Whisper's
(two kernel-3 convolutions, the second of stride 2); a chunk's last frame would need one mel frame of the
next chunk, so it is computed with zero right padding, as a stream must (CarelessWhisper does the same),
while the next chunk sees the true frames as its left context. A chunk is therefore complete 2.5 ms of
audio after its end (the last mel window's half).

The streaming step keeps, per stream: the last two mel frames (conv stem context), the projected keys and
values of every layer (capacity 1500 frames = 30 s, Whisper's positional table) and the number of frames
so far. ``encode(..., chunk=None)`` is plain Whisper (full attention), the offline upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streaming.blocks.attention import additive_mask


@dataclass
class EncoderState:
    mel_tail: Tensor  # [B, n_mels, 2] the two mel frames before the next chunk
    keys: Tensor  # [B, layers, capacity, d_model]
    values: Tensor  # [B, layers, capacity, d_model]
    length: Tensor  # [B] encoder frames so far (int64)


class WhisperEncoderStack(nn.Module):
    """Runs a Hugging Face ``WhisperEncoder``'s weights (its modules are shared, so LoRA layers apply)."""

    def __init__(self, hf_encoder: nn.Module) -> None:
        super().__init__()
        self.hf = hf_encoder
        first = hf_encoder.layers[0].self_attn
        self.n_heads, self.head_dim = first.num_heads if hasattr(first, "num_heads") else (
            first.embed_dim // first.head_dim), first.head_dim
        self.d_model = hf_encoder.conv1.out_channels
        self.capacity = hf_encoder.embed_positions.weight.shape[0]

    # ---- conv stem ------------------------------------------------------------------------------
    def stem(self, mel: Tensor, chunk: int | None) -> Tensor:
        """``[B, n_mels, 2T]`` -> ``[B, T, D]``; with ``chunk``, each chunk's last frame sees zeros beyond it."""
        conv1, conv2 = self.hf.conv1, self.hf.conv2
        g1 = F.gelu(conv1(mel))
        out = F.gelu(conv2(g1))
        if chunk is None:
            return out.transpose(1, 2)
        frames = out.shape[-1]
        ends = torch.arange(chunk - 1, frames, chunk, device=mel.device)
        if frames % chunk:
            ends = torch.cat([ends, ends.new_tensor([frames - 1])])
        ends = ends[2 * ends + 2 < mel.shape[-1]]  # the signal's own last frame is zero-padded already
        if ends.numel():
            tap = conv1.weight[:, :, 2]  # the weight on mel[k + 1]
            last_g1 = 2 * ends + 1
            pre = conv1(mel)[..., last_g1]
            truncated = F.gelu(pre - torch.einsum("oc,bcn->bon", tap, mel[..., last_g1 + 1]))
            delta = truncated - g1[..., last_g1]
            pre2 = conv2(g1)[..., ends] + torch.einsum("oc,bcn->bon", conv2.weight[:, :, 2], delta)
            out = out.clone()
            out[..., ends] = F.gelu(pre2)
        return out.transpose(1, 2)

    def stream_stem(self, mel: Tensor, mel_tail: Tensor, length: Tensor) -> tuple[Tensor, Tensor]:
        """The conv stem of one chunk: mel ``[B, n_mels, 2G]`` after the chunk's two previous mel frames
        ``mel_tail`` (ignored where ``length``, the encoder frames so far, is 0) -> ``[B, G, D]`` before the
        positional embedding, and the next tail. The chunk's last frame sees zeros past it, as ``stem``'s."""
        conv1, conv2 = self.hf.conv1, self.hf.conv2
        started = (length > 0)[:, None, None]
        full = torch.cat([mel_tail * started, mel], dim=-1)  # mel[2j0-2 .. 2j0+2G-1]
        g1 = F.gelu(F.conv1d(full, conv1.weight, conv1.bias))  # g1[2j0-1 .. 2j0+2G-2]
        last = F.gelu(F.conv1d(F.pad(full[..., -2:], (0, 1)), conv1.weight, conv1.bias))  # g1[2j0+2G-1], truncated
        g1 = torch.cat([g1, last], dim=-1)
        g1 = torch.cat([g1[..., :1] * started, g1[..., 1:]], dim=-1)  # g1[-1] is conv2's zero padding
        return F.gelu(F.conv1d(g1, conv2.weight, conv2.bias, stride=2)).transpose(1, 2), full[..., -2:]

    # ---- transformer layers ----------------------------------------------------------------------
    def attend_layer(self, layer: nn.Module, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
        """Pre-norm self-attention over projected ``keys``/``values`` ``[B, Tk, D]``, then the MLP."""
        b, t, _ = x.shape
        attn = layer.self_attn
        h = layer.self_attn_layer_norm(x)
        q = attn.q_proj(h).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = keys.view(b, keys.shape[1], self.n_heads, self.head_dim).transpose(1, 2)
        v = values.view(b, values.shape[1], self.n_heads, self.head_dim).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + attn.out_proj(a.transpose(1, 2).reshape(b, t, self.d_model))
        h = layer.final_layer_norm(x)
        return x + layer.fc2(F.gelu(layer.fc1(h)))

    @staticmethod
    def project(layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        h = layer.self_attn_layer_norm(x)
        return layer.self_attn.k_proj(h), layer.self_attn.v_proj(h)

    def forward(self, mel: Tensor, chunk: int | None = None) -> Tensor:
        """Offline: ``[B, n_mels, 2T]`` -> ``[B, T, D]`` under the block-causal mask of ``chunk`` frames."""
        x = self.stem(mel, chunk)
        t = x.shape[1]
        if t > self.capacity:
            raise ValueError(f"Whisper's encoder takes at most {self.capacity} frames (30 s), got {t}")
        x = x + self.hf.embed_positions.weight[:t]
        mask = None
        if chunk is not None:
            block = torch.arange(t, device=mel.device) // chunk
            mask = additive_mask(block[None, :] <= block[:, None], x.dtype)
        for layer in self.hf.layers:
            keys, values = self.project(layer, x)
            x = self.attend_layer(layer, x, keys, values, mask)
        return self.hf.layer_norm(x)

    # ---- streaming -----------------------------------------------------------------------------------
    def initial_state(self, batch: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
                      ) -> EncoderState:
        layers = len(self.hf.layers)
        zeros = torch.zeros(batch, layers, self.capacity, self.d_model, dtype=dtype, device=device)
        return EncoderState(mel_tail=torch.zeros(batch, self.hf.conv1.in_channels, 2, dtype=dtype, device=device),
                            keys=zeros, values=zeros.clone(), length=torch.zeros(batch, dtype=torch.int64, device=device))

    def stream(self, mel: Tensor, state: EncoderState) -> tuple[Tensor, EncoderState, tuple[Tensor, Tensor]]:
        """One chunk: mel ``[B, n_mels, 2G]`` -> encoder frames ``[B, G, D]``, the next state, and the keys and
        values the chunk added (``[B, layers, G, D]`` each, at frames ``length .. length + G``).

        Streams may be at different positions (``state.length``); each must have room for ``G`` more frames.
        A stream at length 0 starts afresh (its ``mel_tail`` is ignored). The new keys and values are written
        into ``state.keys``/``state.values`` in place, in rows at or past each stream's length, which hold
        nothing yet: attention then reads the cache where it lies instead of copying it.
        """
        b, _, n = mel.shape
        g = n // 2
        tracing = torch.jit.is_tracing()  # ONNX export: no in-place writes, lengths stay tensors
        if n % 2:
            raise ValueError(f"a chunk is an even number of mel frames (2 per encoder frame), got {n}")
        if not tracing and int(state.length.max()) + g > self.capacity:
            raise ValueError(f"the encoder cache holds {self.capacity} frames (30 s); reset the stream first")
        x, mel_tail = self.stream_stem(mel, state.mel_tail, state.length)
        positions = state.length[:, None] + torch.arange(g, device=mel.device)
        x = x + self.hf.embed_positions.weight[positions]
        past = state.length.max()
        if tracing:  # the chunk's keys after every stream's past (order does not matter: no relative positions)
            known = torch.arange(past, device=mel.device)[None, :] < state.length[:, None]
            visible = torch.cat([known, torch.ones(b, g, dtype=torch.bool, device=mel.device)], 1)[:, None]
        else:  # written in place after each stream's past; slots beyond every stream's chunk are empty
            past = int(past)
            visible = torch.arange(past + g, device=mel.device)[None, None, :] < (state.length[:, None, None] + g)
        visible = additive_mask(visible, x.dtype)
        index = positions[:, :, None].expand(b, g, self.d_model)
        past_keys, past_values = state.keys[:, :, :past], state.values[:, :, :past]  # sliced once for every layer
        new_keys, new_values = [], []
        for i, layer in enumerate(self.hf.layers):
            k, v = self.project(layer, x)
            new_keys.append(k)
            new_values.append(v)
            if tracing:
                keys, values = torch.cat([past_keys[:, i], k], 1), torch.cat([past_values[:, i], v], 1)
            else:
                state.keys[:, i].scatter_(1, index, k.to(state.keys.dtype))
                state.values[:, i].scatter_(1, index, v.to(state.values.dtype))
                keys, values = state.keys[:, i, : past + g], state.values[:, i, : past + g]
            x = self.attend_layer(layer, x, keys.to(x.dtype), values.to(x.dtype), visible[:, None])
        nxt = EncoderState(mel_tail=mel_tail, keys=state.keys, values=state.values, length=state.length + g)
        return self.hf.layer_norm(x), nxt, (torch.stack(new_keys, 1), torch.stack(new_values, 1))
