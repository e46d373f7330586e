"""Which layer of the frame-causal Whisper content encoder to feed voice conversion: probes per layer.

VC wants content features that keep the words and lose the speaker. For the input log-mel and the output of
every encoder layer (normalised as :class:`vc.content.ContentEncoder` with that many layers would give):

- speaker accuracy: a multinomial logistic regression from the utterance-mean feature to the speaker id,
  trained on half of each speaker's utterances, tested on the other half (lower is better for VC);
- content accuracy: speaker-independent template matching, 1-nearest-neighbour by DTW over the frames
  (cosine distance, normalised by path length), each utterance matched only against the utterances of the
  other speakers (higher is better).

Accuracies are percentages.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from asr.whisper.encoder import WhisperEncoderStack
from asr.whisper.features import causal_features
from streaming.blocks.attention import additive_mask

SpeakerSet = Sequence[tuple[np.ndarray, str]]  # (16 kHz audio, speaker)
ContentSet = Sequence[tuple[np.ndarray, str, str]]  # (16 kHz audio, speaker, word)


def read_set(tsv: str | Path, per_group: int, by_text: bool = False) -> list[tuple[np.ndarray, str, str]]:
    """``(audio at 16 kHz, speaker, text)`` for the first ``per_group`` rows of each speaker (of each speaker
    and text with ``by_text``) of a manifest (``utt_id path speaker duration_s sample_rate text``)."""
    from speech.audio import read_audio

    tsv = Path(tsv)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    out = []
    with tsv.open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            key = (row["speaker"], row["text"] if by_text else "")
            if counts[key] < per_group:
                counts[key] += 1
                audio, _ = read_audio(tsv.parent / row["path"], sample_rate=16000)
                out.append((audio, row["speaker"], row["text"]))
    return out


@torch.inference_mode()
def layer_features(stack: WhisperEncoderStack, audio16k: np.ndarray) -> list[Tensor]:
    """The log-mel ``[2T, 80]`` and each encoder layer's output ``[T, D]`` of one utterance, in one pass: layer
    ``k`` equals ``ContentEncoder(stack, k)`` on the same (even-length) features."""
    mel = causal_features(torch.from_numpy(np.asarray(audio16k, np.float32))[None])
    mel = mel[..., : mel.shape[-1] // 2 * 2]
    out = [mel[0].T]
    x = stack.stem(mel, chunk=1)
    frames = torch.arange(x.shape[1])
    x = x + stack.hf.embed_positions.weight[frames % stack.capacity]
    behind = frames[:, None] - frames[None, :]
    mask = additive_mask((behind >= 0) & (behind < stack.capacity), x.dtype)
    layers = stack.hf.layers
    for i, layer in enumerate(layers):
        keys, values = stack.project(layer, x)
        x = stack.attend_layer(layer, x, keys, values, mask)
        last = i == len(layers) - 1
        out.append((stack.hf.layer_norm(x) if last else F.layer_norm(x, (stack.d_model,)))[0])
    return out


def speaker_probe(vectors: Tensor, speakers: Sequence[str], steps: int = 300, lr: float = 0.05,
                  l2: float = 1e-3) -> float:
    """Test accuracy (%) of a logistic regression from ``vectors [N, D]`` (utterance means) to speaker id,
    trained on each speaker's even-numbered utterances and tested on the odd-numbered ones."""
    ids = {s: i for i, s in enumerate(sorted(set(speakers)))}
    labels = torch.tensor([ids[s] for s in speakers])
    seen: dict[str, int] = defaultdict(int)
    train = []
    for s in speakers:
        train.append(seen[s] % 2 == 0)
        seen[s] += 1
    train_mask = torch.tensor(train)
    with torch.inference_mode(False), torch.enable_grad():  # callers may be in inference mode
        x = vectors.float().clone()
        mean, std = x[train_mask].mean(0), x[train_mask].std(0).clamp_min(1e-6)
        x = (x - mean) / std
        weight = torch.zeros(x.shape[1], len(ids), requires_grad=True)
        bias = torch.zeros(len(ids), requires_grad=True)
        opt = torch.optim.Adam([weight, bias], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(x[train_mask] @ weight + bias, labels[train_mask]) + l2 * weight.square().sum()
            loss.backward()
            opt.step()
    with torch.no_grad():
        guess = (x[~train_mask] @ weight + bias).argmax(1)
    return 100.0 * float((guess == labels[~train_mask]).float().mean())


def dtw(cost: Tensor, len_a: Tensor, len_b: Tensor) -> Tensor:
    """Batched DTW: ``cost [P, A, B]`` (pair ``p`` valid up to ``len_a[p], len_b[p]``) -> ``[P]``, the
    cheapest path's total cost over its length (steps right, down, diagonal; ties prefer the diagonal). Runs
    over anti-diagonals, so the Python loop has ``A + B - 1`` steps whatever the batch."""
    p, a, b = cost.shape
    rows = torch.arange(a)
    cols = torch.arange(a + b - 1)[:, None] - rows  # [diagonal, row]
    valid = (cols >= 0) & (cols < b)
    skew = cost[:, rows, cols.clamp(0, b - 1)].masked_fill(~valid, float("inf")).transpose(0, 1).contiguous()
    ends = len_a + len_b - 2
    out = cost.new_full((p,), float("nan"))
    # cumulative cost and path length on the two previous diagonals, by row; column 0 is row -1 (unreachable)
    acc2, acc1 = cost.new_full((p, a + 1), float("inf")), cost.new_full((p, a + 1), float("inf"))
    len2, len1 = cost.new_zeros(p, a + 1), cost.new_zeros(p, a + 1)
    for d in range(a + b - 1):
        acc, length = cost.new_full((p, a + 1), float("inf")), cost.new_zeros(p, a + 1)
        if d == 0:
            acc[:, 1:], length[:, 1:] = skew[0], 1.0
        else:  # (i-1, j-1) on diagonal d-2, (i-1, j) and (i, j-1) on d-1
            diag, up, left = acc2[:, :-1], acc1[:, :-1], acc1[:, 1:]
            steps = torch.where(up < diag, len1[:, :-1], len2[:, :-1])
            best = torch.minimum(diag, up)
            steps = torch.where(left < best, len1[:, 1:], steps)
            acc[:, 1:] = skew[d] + torch.minimum(best, left)
            length[:, 1:] = steps + 1
        hit = (ends == d).nonzero()[:, 0]
        if hit.numel():
            out[hit] = acc[hit, len_a[hit]] / length[hit, len_a[hit]]
        acc2, acc1, len2, len1 = acc1, acc, len1, length
    return out


def content_probe(frames: Sequence[Tensor], speakers: Sequence[str], words: Sequence[str],
                  batch: int = 2048, standardise: bool = False) -> float:
    """Accuracy (%) of 1-nearest-neighbour word recognition by DTW over ``frames`` (``[T, D]`` each), every
    utterance matched against the utterances of the other speakers only. ``standardise`` z-scores each
    dimension over all frames first, so a few large dimensions (Whisper has some) cannot dominate the cosine."""
    n = len(frames)
    if standardise:
        every = torch.cat(list(frames)).float()
        mean, std = every.mean(0), every.std(0).clamp_min(1e-6)
        frames = [(f.float() - mean) / std for f in frames]
    lengths = torch.tensor([f.shape[0] for f in frames])
    padded = torch.zeros(n, int(lengths.max()), frames[0].shape[1])
    for i, f in enumerate(frames):
        padded[i, : f.shape[0]] = F.normalize(f.float(), dim=-1)
    first, second = torch.triu_indices(n, n, 1)
    spk = {s: i for i, s in enumerate(sorted(set(speakers)))}
    spk_id = torch.tensor([spk[s] for s in speakers])
    keep = spk_id[first] != spk_id[second]
    first, second = first[keep], second[keep]
    swap = lengths[first] > lengths[second]  # DTW is symmetric: the shorter first, pairs by length
    first, second = torch.where(swap, second, first), torch.where(swap, first, second)
    order = torch.argsort(lengths[second] * (lengths.max() + 1) + lengths[first])
    first, second = first[order], second[order]
    distance = torch.full((n, n), float("inf"))
    for start in range(0, len(first), batch):
        i, j = first[start : start + batch], second[start : start + batch]
        la, lb = lengths[i], lengths[j]
        xa, xb = padded[i, : int(la.max())], padded[j, : int(lb.max())]
        d = dtw(1.0 - xa @ xb.transpose(1, 2), la, lb)
        distance[i, j] = d
        distance[j, i] = d
    nearest = distance.argmin(1).tolist()
    return 100.0 * sum(words[k] == words[m] for k, m in enumerate(nearest)) / n


def probe_layers(stack: WhisperEncoderStack, speaker_set: SpeakerSet, content_set: ContentSet) -> list[dict]:
    """One row per representation (log-mel, layer 1..L): ``name``, ``layer`` (0: log-mel),
    ``speaker_accuracy`` and ``content_accuracy`` (%)."""
    spk_feats = [layer_features(stack, audio) for audio, _ in speaker_set]
    con_feats = [layer_features(stack, audio) for audio, _, _ in content_set]
    speakers = [s for _, s in speaker_set]
    con_speakers, words = [s for _, s, _ in content_set], [w for _, _, w in content_set]
    rows = []
    for k in range(len(spk_feats[0])):
        means = torch.stack([f[k].mean(0) for f in spk_feats])
        rows.append({
            "name": "log-mel" if k == 0 else f"layer {k}",
            "layer": k,
            "speaker_accuracy": speaker_probe(means, speakers),
            "content_accuracy": content_probe([f[k] for f in con_feats], con_speakers, words),
            "content_accuracy_standardised": content_probe([f[k] for f in con_feats], con_speakers, words,
                                                           standardise=True),
        })
    return rows


def choose_layer(rows: Sequence[dict]) -> int:
    """The encoder layer for VC: the most content kept less speaker kept, content measured on standardised
    features (the VC decoder normalises and weighs its input dimensions itself, as standardising does for the
    cosine; the raw cosine is ruled by Whisper's few huge dimensions). The log-mel row is not a candidate."""
    layers = [r for r in rows if r["layer"] > 0]
    return max(layers, key=lambda r: (r["content_accuracy_standardised"] - r["speaker_accuracy"], -r["layer"]))["layer"]
