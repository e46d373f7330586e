"""Same batch, same weights: hybrid-loss gradients on CPU (our RNNT loss) vs CUDA (torchaudio's and ours).

A diagnostic for the non-converging GPU runs (issue 4): prints each loss and, per parameter group, the
gradient norm and the cosine similarity to the CPU reference.
"""

from __future__ import annotations

import sys

import torch

sys.path.insert(0, ".")
from asr.fastconformer import losses
from asr.fastconformer.config import EncoderConfig, FastConformerConfig, HeadsConfig
from asr.fastconformer.model import FastConformer
from asr.fastconformer.training import hybrid_loss
from asr.text import normalise
from asr.tokenizer import Tokenizer
from speech.corpus.loader import PackedDataset
from speech.training.fastconformer import _collate


def grads(model, batch, device, loss_impl):
    model = model.to(device).train()
    model.zero_grad()
    for m in model.modules():  # dropout off: the runs must see the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for layer in model.encoder.layers:
        layer.self_attn.dropout = 0.0
    b = {k: v.to(device) for k, v in batch.items()}
    transducer_loss = losses.rnnt_loss_reference if loss_impl == "reference" else losses.rnnt_loss
    out = hybrid_loss(model, b["audio"], b["lengths"], b["targets"], b["target_lengths"], 0.5, None,
                      context=(70, 6), transducer_loss=transducer_loss)
    out["loss"].backward()
    return ({k: float(v.detach()) for k, v in out.items()},
            {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.grad is not None})


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    utts = [u for _, u in zip(range(6), PackedDataset("corpora/packval", shuffle=False))]
    batch = _collate([(u.audio, normalise(u.text)) for u in utts], tok)
    torch.manual_seed(0)
    cfg = FastConformerConfig(EncoderConfig(n_layers=3, d_model=128, n_heads=4, subsampling_conv_channels=64),
                              HeadsConfig(vocab_size=tok.vocab_size, pred_hidden=96, joint_hidden=96))
    model = FastConformer(cfg, tok)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {"cpu-reference": ("cpu", "reference")}
    if torch.cuda.is_available():
        runs.update({"cuda-torchaudio": ("cuda", "torchaudio"), "cuda-reference": ("cuda", "reference")})
    results = {}
    for name, (device, impl) in runs.items():
        model.load_state_dict(state)
        results[name] = grads(model, batch, device, impl)
        print(name, results[name][0])
    ref = results["cpu-reference"][1]
    for name, (_, g) in results.items():
        groups = {}
        for n, v in g.items():
            key = ".".join(n.split(".")[:2])
            a, b = v.flatten().double(), ref[n].flatten().double()
            s = groups.setdefault(key, [0.0, 0.0, 0.0])
            s[0] += float(a @ b); s[1] += float(a @ a); s[2] += float(b @ b)
        print(name, {k: (round(v[1] ** 0.5, 4), round(v[0] / max(1e-30, (v[1] * v[2]) ** 0.5), 4)) for k, v in groups.items()})


if __name__ == "__main__":
    main()
