"""`speech train tts`: the chunk-aware flow-matching acoustic model (``tts.acoustic``) from a TTS pack.

Reads a pack of `speech corpus tts-pack` (phoneme ids, 8-bit mels, voices) into GPU memory, batches
utterances of similar length up to ``batch_frames`` mel frames, samples one of the model's chunk sizes per
batch (CosyVoice 2's mask mixing), and minimises duration + prior + flow-matching losses with alignment
search on the fly. bf16 autocast, AdamW, warm-up + cosine, ``ckpt.pt`` for resume across device calls, a
progress bar; at the end of a call ``model.safetensors`` (fp16) + ``config.json`` + ``report.json`` with
the validation losses.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tts.acoustic import AcousticConfig, AcousticModel, read_weights, write_weights

from ..corpus.tts_pack import load_tts_pack
from .recipe import recipe_main, resume_checkpoint, save_checkpoint, warmup_cosine, write_report


@dataclass
class TTSTrainConfig:
    pack: str
    out: str
    lr: float = 4e-4
    warmup_steps: int = 500
    total_steps: int = 20000
    min_lr: float = 2e-5
    weight_decay: float = 0.01
    batch_frames: int = 24000
    max_frames: int = 1000
    grad_clip: float = 1.0
    minutes: float = 9.0
    val_fraction: float = 0.02
    bf16: bool = True
    seed: int = 0
    model: dict | None = None  # AcousticConfig overrides (e.g. {blocks: 4})
    init: str | None = None  # a trained model directory to start from (fine-tuning); ignored on resume


class PackBatches:
    """Length-bucketed batches of a TTS pack, held on the training device."""

    def __init__(self, pack: Path, cfg: TTSTrainConfig, device: torch.device) -> None:
        mels, rows, self.info = load_tts_pack(pack)
        self.mels = torch.from_numpy(mels).to(device, torch.float16)
        rows = [r for r in rows if r["frames"] <= cfg.max_frames]
        rng = random.Random(cfg.seed)
        rng.shuffle(rows)
        n_val = max(1, int(len(rows) * cfg.val_fraction))
        self.val, self.train = rows[:n_val], rows[n_val:]
        self.device, self.cfg = device, cfg

    def epoch(self, seed: int) -> list[list[dict]]:
        rng = random.Random(seed)
        rows = sorted(self.train, key=lambda r: r["frames"] + rng.random() * 40)
        batches, batch = [], []
        for row in rows:
            if batch and (len(batch) + 1) * max(row["frames"], batch[-1]["frames"]) > self.cfg.batch_frames:
                batches.append(batch)
                batch = []
            batch.append(row)
        batches.append(batch)
        rng.shuffle(batches)
        return batches

    def tensors(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        n_ph = max(len(r["ids"]) for r in batch)
        n_fr = max(r["frames"] for r in batch)
        ids = torch.zeros(len(batch), n_ph, dtype=torch.long)
        mel = torch.zeros(len(batch), self.info["n_mels"], n_fr, device=self.device)
        for i, r in enumerate(batch):
            ids[i, : len(r["ids"])] = torch.tensor(r["ids"])
            mel[i, :, : r["frames"]] = self.mels[r["start"] : r["start"] + r["frames"]].T.float()
        return {"ids": ids.to(self.device), "mel": mel,
                "n_phonemes": torch.tensor([len(r["ids"]) for r in batch], device=self.device),
                "n_frames": torch.tensor([r["frames"] for r in batch], device=self.device),
                "speaker": torch.tensor([r["speaker"] for r in batch], device=self.device)}


def model_config(cfg: TTSTrainConfig, info: dict) -> AcousticConfig:
    return AcousticConfig(**{"voices": tuple(info["voices"]), "mel_mean": info["mel_mean"],
                             "mel_std": info["mel_std"], **(cfg.model or {})})


@torch.no_grad()
def validate(model: AcousticModel, data: PackBatches, cfg: TTSTrainConfig) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    torch.manual_seed(cfg.seed)
    batches = [data.val[i : i + 16] for i in range(0, len(data.val), 16)]
    for chunk in model.cfg.chunk_sizes:
        for batch in batches:
            losses = model.losses(**data.tensors(batch), chunk=chunk)
            for k, v in losses.items():
                totals[f"{k}@{chunk}"] = totals.get(f"{k}@{chunk}", 0.0) + float(v) / len(batches)
    model.train()
    return {k: round(v, 4) for k, v in totals.items()}


def start_from(model: AcousticModel, directory: Path) -> list[str]:
    """Load a trained model's weights into ``model``, which may have grown parts the trained one lacks (they
    keep their initialisation, which for the decoder's frame-feature input is zero: the start is exactly
    the trained model). Returns the names of those new parameters."""
    missing, unexpected = model.load_state_dict(read_weights(directory), strict=False)
    if unexpected:
        raise ValueError(f"{directory} has weights this model has no place for: {', '.join(unexpected)}")
    return list(missing)


def run(cfg: TTSTrainConfig) -> dict:
    start_time = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    data = PackBatches(Path(cfg.pack), cfg, device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = AcousticModel(model_config(cfg, data.info)).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = out / "ckpt.pt"
    weights, step, epoch, history = resume_checkpoint(ckpt, optim, device)
    if weights is not None:
        model.load_state_dict(weights)
    elif cfg.init:
        new = start_from(model, Path(cfg.init))
        print(f"started from the weights of {cfg.init}" + (f"; new: {', '.join(new)}" if new else ""),
              file=sys.stderr)
    print(f"acoustic model {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"{len(data.train)} training utterances ({data.info['hours']:.2f} h), device {device}", file=sys.stderr)
    from tqdm import tqdm

    rng = random.Random(cfg.seed + step)
    bar = tqdm(total=cfg.total_steps, initial=step, mininterval=20, file=sys.stderr, desc="train")
    deadline, saved_at, frames_seen = start_time + 60 * cfg.minutes, time.time(), 0
    save = lambda: save_checkpoint(ckpt, model.state_dict(), optim, step, epoch, history)
    while step < cfg.total_steps and time.time() < deadline:
        for batch in data.epoch(cfg.seed * 1000 + epoch):
            for group in optim.param_groups:
                group["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.total_steps, cfg.min_lr)
            tensors = data.tensors(batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"):
                losses = model.losses(**tensors, chunk=rng.choice(model.cfg.chunk_sizes))
            loss = sum(losses.values())
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optim.step()
            step += 1
            frames_seen += int(tensors["n_frames"].sum())
            bar.update(1)
            if step % 50 == 0:
                logged = {k: round(float(v.detach()), 4) for k, v in losses.items()}
                bar.set_postfix(**logged, ep=epoch)
                history.append({"step": step, "epoch": epoch, **logged})
            if time.time() - saved_at > 120:  # a call that dies keeps most of its work
                save()
                saved_at = time.time()
            if step >= cfg.total_steps or time.time() > deadline:
                break
        else:
            epoch += 1
    bar.close()
    save()
    val = validate(model, data, cfg)
    write_weights(model, model.cfg.to_dict(), out)
    report = {"step": step, "epoch": epoch, "seconds_this_call": round(time.time() - start_time),
              "audio_hours_seen_this_call": round(frames_seen * 256 / 22050 / 3600, 2), "validation": val,
              "pack": data.info, "history": history, "config": asdict(cfg)}
    return write_report(out, report)


def main(argv: list[str] | None = None) -> int:
    return recipe_main("speech train tts", __doc__.split("\n\n")[0], TTSTrainConfig, run, argv, "configs/tts.yaml")


if __name__ == "__main__":
    sys.exit(main())
