"""Smoke training on a packed corpus: stream the shards, log-mel on the GPU, a small CTC model, N steps.

Proves the pack -> carry -> load -> train -> bring back path of the GPU workflow (README "GPU workflow");
the real recipes (issue 4 onwards) use the same loader. Writes --out/smoke-{model,opt}.pt; --resume DIR
continues from such a pair.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from speech.corpus.loader import loader
from streaming.blocks.mel import LogMelConfig, log_mel_offline

ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"  # CTC blank is index 0, so characters are 1..27


class TinyCTC(nn.Module):
    def __init__(self, mels: int = 80, width: int = 192) -> None:
        super().__init__()
        self.subsample = nn.Sequential(nn.Conv1d(mels, width, 5, stride=2, padding=2), nn.GELU(),
                                       nn.Conv1d(width, width, 5, stride=2, padding=2), nn.GELU())
        self.rnn = nn.GRU(width, width, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * width, len(ALPHABET) + 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # mel [B, mels, T] -> log-probs [B, T/4, V]
        x = self.subsample(mel).transpose(1, 2)
        return self.head(self.rnn(x)[0]).log_softmax(-1)


def encode(text: str) -> list[int]:
    return [ALPHABET.index(c) + 1 for c in text.lower() if c in ALPHABET]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pack", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--resume")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = TinyCTC().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = 0
    if args.resume:  # a folder holding what a previous run wrote (carried back in)
        ckpt = torch.load(Path(args.resume) / "smoke-model.pt", map_location=device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(torch.load(Path(args.resume) / "smoke-opt.pt", map_location=device))
        step = ckpt["step"]
        print(f"resumed at step {step}")
    ctc = nn.CTCLoss(zero_infinity=True)
    cfg = LogMelConfig()
    losses, seconds, t0, first_step = [], 0.0, time.perf_counter(), step
    epoch_loader = loader(args.pack, batch_size=args.batch, workers=4, seed=step)
    epoch = 0
    while step < args.steps:
        epoch_loader.dataset.set_epoch(epoch)
        epoch += 1
        for batch in epoch_loader:
            audio = batch["audio"].to(device, non_blocking=True)
            mel = log_mel_offline(audio, cfg)  # [B, 80, T]
            frames = (batch["lengths"] // cfg.hop_length + 1).clamp(max=mel.shape[-1])
            targets = [torch.tensor(encode(t)) for t in batch["texts"]]
            logp = model(mel)
            out_lengths = ((frames + 3) // 4).clamp(max=logp.shape[1])
            loss = ctc(logp.transpose(0, 1), torch.cat(targets).to(device), out_lengths,
                       torch.tensor([len(t) for t in targets]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            seconds += float(batch["lengths"].sum()) / 16000
            step += 1
            if step % 25 == 0 or step == 1:
                print(f"step {step} loss {losses[-1]:.3f} audio {seconds / 3600:.2f} h", flush=True)
            if step >= args.steps:
                break
    wall = time.perf_counter() - t0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    # two files, each under the 16 MiB a device call brings back
    torch.save({"model": model.state_dict(), "step": step}, Path(args.out) / "smoke-model.pt")
    torch.save(opt.state_dict(), Path(args.out) / "smoke-opt.pt")
    summary = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "from_step": first_step,
               "steps": step,
               "first_loss": losses[0], "last_loss": sum(losses[-10:]) / min(10, len(losses)),
               "audio_hours_read": seconds / 3600, "wall_s": wall, "audio_s_per_wall_s": seconds / wall}
    (Path(args.out) / "smoke.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
