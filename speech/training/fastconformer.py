"""`speech train asr-fastconformer`: the hybrid CTC/RNNT multi-lookahead recipe of the default ASR model.

Reads packed Opus shards (speech.corpus.pack) once per call into a feature bank on the training device
(a clean and augmented copies of every utterance: speed, reverb, noise, gain, telephone band), normalises
the log-mel with global CMVN statistics of the training data, masks with SpecAugment, samples one
attention context per batch, trains in bf16 on CUDA and fp32 on CPU. It stops after ``minutes`` of wall
time or at ``total_steps`` and leaves ``ckpt.pt`` (model, optimiser, step, epoch) in ``out``; run it
again with the same ``out`` to resume. At the end it writes the fp16 model directory ``out/model`` and
validation WER per lookahead.
"""

from __future__ import annotations

import json
import random
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr.fastconformer.config import EncoderConfig, FastConformerConfig, HeadsConfig
from asr.fastconformer.model import FastConformer
from asr.fastconformer.recognizer import Recognizer
from asr.fastconformer.training import SpecAugment, hybrid_loss
from asr.text import normalise, wer
from asr.tokenizer import Tokenizer

from ..corpus.augment import AugmentConfig, Augmenter
from ..corpus.loader import PackedDataset, read_index, shards_of
from .recipe import load_recipe, resume_checkpoint, save_checkpoint, warmup_cosine


@dataclass
class TrainConfig:
    packs: list[str]  # "DIR" or "DIR*REPEATS" (repeats oversample a pack within an epoch)
    val_pack: str
    out: str
    encoder: dict = field(default_factory=dict)
    init_from: str | None = None  # a model directory to fine-tune: its architecture, tokenizer and weights win
    heads: dict = field(default_factory=dict)
    vocab_size: int = 256
    batch_seconds: float = 400.0
    max_batch: int = 96
    max_seconds: float = 20.0
    lr: float = 2e-3
    warmup_steps: int = 400
    total_steps: int = 6000
    min_lr: float = 1e-5
    weight_decay: float = 1e-3
    ctc_weight: float = 0.3
    grad_clip: float = 1.0
    augment_prob: float = 0.8
    bank_copies: int = 3  # versions of each utterance in the feature bank: one clean, the rest augmented
    spec_augment: bool = True
    workers: int = 8
    minutes: float = 8.0
    val_utterances: int = 120
    bf16: bool = True
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | Path, settings: list[str] = (), **overrides) -> TrainConfig:
        return load_recipe(cls, path, settings, **overrides)


class _Augmented(torch.utils.data.IterableDataset):
    """Packed utterances -> (audio, normalised text); augmentation drawn from the utterance id and epoch."""

    def __init__(self, packs: list[tuple[str, int]], cfg: TrainConfig) -> None:
        self.sets = [PackedDataset(p, seed=cfg.seed + i, max_seconds=cfg.max_seconds) for p, r in packs for i in range(r)]
        self.augmenter = Augmenter(AugmentConfig(channels=("telephone",)))
        self.prob, self.epoch = cfg.augment_prob, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for s in self.sets:
            s.set_epoch(epoch)

    def __iter__(self):
        streams = [iter(s) for s in self.sets]
        rng = random.Random(self.epoch)
        while streams:
            stream = rng.choice(streams)
            try:
                utt = next(stream)
            except StopIteration:
                streams.remove(stream)
                continue
            seed = zlib.crc32(f"{utt.utt_id}/{self.epoch}".encode())
            audio = utt.audio
            if seed % 1000 < self.prob * 1000:
                audio = self.augmenter(audio, seed).audio
            text = normalise(utt.text)
            if text:
                yield audio.astype(np.float32), text


class FeatureBank:
    """Every training utterance as fp16 log-mel on the training device, plus its token ids.

    Decoding Opus and augmenting on the CPU cannot keep a GPU busy (it capped earlier runs at ~7 steps/s),
    so the packs are read once per call into ``copies`` versions of each utterance: copy 0 clean, the
    others augmented (``augment_prob``) with their own seeds. Training then only indexes device memory;
    SpecAugment stays per batch. 6 h x 3 copies is about 1 GB of fp16.
    """

    def __init__(self, mels: list[torch.Tensor], targets: list[list[int]], frame_rate: float, clean: int) -> None:
        self.mels, self.targets, self.frame_rate, self.clean = mels, targets, frame_rate, clean

    @classmethod
    def build(cls, packs: list[tuple[str, int]], cfg: TrainConfig, tokenizer: Tokenizer, model: FastConformer,
              device: torch.device) -> FeatureBank:
        dataset, mels, targets, clean = _Augmented(packs, cfg), [], [], 0
        for copy in range(cfg.bank_copies):
            dataset.prob = 0.0 if copy == 0 else cfg.augment_prob
            dataset.set_epoch(copy)
            loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=cfg.workers,
                                                 prefetch_factor=64 if cfg.workers else None)
            with torch.no_grad():
                for audio, text in loader:
                    ids = tokenizer.encode(text)
                    mel, frames = model.features(torch.as_tensor(audio)[None].to(device))
                    mels.append(mel[0, :, : int(frames[0])].half())
                    targets.append(ids)
            clean = clean or len(mels)
        features = model.cfg.features
        return cls(mels, targets, features.sample_rate / features.hop_length, clean)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-bin log-mel mean and std of the clean copy (global CMVN)."""
        total = squares = 0.0
        for mel in self.mels[: self.clean]:
            mel = mel.double()
            total, squares = total + mel.sum(dim=1), squares + (mel * mel).sum(dim=1)
        count = sum(m.shape[1] for m in self.mels[: self.clean])
        mean = total / count
        return mean.float(), (squares / count - mean * mean).clamp(min=0).sqrt().float()

    @property
    def seconds(self) -> float:
        return sum(m.shape[1] for m in self.mels) / self.frame_rate

    def batches(self, cfg: TrainConfig, epoch: int):
        """Length-bucketed batches of at most ``batch_seconds`` padded, in a per-epoch random order."""
        rng = random.Random(cfg.seed * 1000 + epoch)
        order = sorted(range(len(self.mels)), key=lambda i: (self.mels[i].shape[1], rng.random()))
        groups, current = [], []
        for i in order:  # ascending lengths: the newest item is the longest of its group
            if current and (self.mels[i].shape[1] * (len(current) + 1) > cfg.batch_seconds * self.frame_rate
                            or len(current) >= cfg.max_batch):
                groups.append(current)
                current = []
            current.append(i)
        groups.append(current)
        rng.shuffle(groups)
        for group in groups:
            yield self._collate(group)

    def _collate(self, group: list[int]) -> dict:
        frames = torch.tensor([self.mels[i].shape[1] for i in group])
        first = self.mels[group[0]]
        mel = first.new_zeros(len(group), first.shape[0], int(frames.max()))
        for row, i in enumerate(group):
            mel[row, :, : self.mels[i].shape[1]] = self.mels[i]
        target_lengths = torch.tensor([len(self.targets[i]) for i in group])
        targets = torch.zeros(len(group), max(1, int(target_lengths.max())), dtype=torch.int64)
        for row, i in enumerate(group):
            targets[row, : len(self.targets[i])] = torch.tensor(self.targets[i], dtype=torch.int64)
        return {"mel": mel, "frames": frames.to(mel.device), "targets": targets.to(mel.device),
                "target_lengths": target_lengths.to(mel.device), "seconds": float(frames.sum()) / self.frame_rate}


def train_tokenizer(packs: list[str], vocab_size: int, path: Path) -> Tokenizer:
    import sentencepiece as spm

    texts = [normalise(row["text"]) for p in packs for shard in shards_of(p) for row in read_index(shard)]
    corpus = path.with_suffix(".txt")
    corpus.write_text("\n".join(t for t in texts if t) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(path.with_suffix("")), vocab_size=vocab_size,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2,
                                   input_sentence_size=200000, shuffle_input_sentence=True, hard_vocab_limit=False)
    return Tokenizer.from_file(path)


def validate(model: FastConformer, cfg: TrainConfig, device: torch.device) -> dict[str, dict[str, float]]:
    """WER per lookahead and decoder on the first ``val_utterances`` of the validation pack (offline masks)."""
    rows = PackedDataset(cfg.val_pack, shuffle=False)
    utts = [u for _, u in zip(range(cfg.val_utterances), rows)]
    model.eval().to(device)
    results: dict[str, dict[str, float]] = {}
    for context in model.cfg.encoder.att_context_size:
        ms = model.cfg.encoder.lookahead_ms(context)
        for decoder in model.decoders:
            rec = Recognizer(model, ms, decoder)
            hyps = []
            for start in range(0, len(utts), 32):
                hyps += [h.text for h in rec.transcribe_offline([u.audio for u in utts[start:start + 32]])]
            results.setdefault(f"{ms:g}ms", {})[decoder] = round(100 * wer([u.text for u in utts], hyps), 2)
    return results


def run(cfg: TrainConfig) -> dict:
    start_time = time.time()
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    packs = [(p.split("*")[0], int(p.split("*")[1]) if "*" in p else 1) for p in cfg.packs]
    tok_path = out / "tokenizer.model"
    if cfg.init_from:
        model = FastConformer.load(cfg.init_from)
        tokenizer, model_cfg = model.tokenizer, model.cfg
    else:
        tokenizer = Tokenizer.from_file(tok_path) if tok_path.exists() else train_tokenizer([p for p, _ in packs], cfg.vocab_size, tok_path)
        model_cfg = FastConformerConfig(EncoderConfig(**_tuples(cfg.encoder)), HeadsConfig(vocab_size=tokenizer.vocab_size, **cfg.heads))
        model = FastConformer(model_cfg, tokenizer)
    model = model.to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    ckpt = out / "ckpt.pt"
    weights, step, epoch, history = resume_checkpoint(ckpt, optim, device)
    if weights is not None:
        model.load_state_dict(weights)
    params = sum(p.numel() for p in model.parameters())
    print(f"model {params / 1e6:.2f} M parameters, vocab {tokenizer.vocab_size}, device {device}", file=sys.stderr)
    bank_start = time.time()
    bank = FeatureBank.build(packs, cfg, tokenizer, model, device)
    print(f"feature bank: {len(bank.mels)} utterances, {bank.seconds / 3600:.2f} h in {time.time() - bank_start:.0f} s",
          file=sys.stderr)
    if model_cfg.encoder.global_cmvn and step == 0 and not cfg.init_from:  # else the checkpoint's or model's
        model.encoder.set_feature_statistics(*bank.statistics())
    spec = SpecAugment() if cfg.spec_augment else None
    audio_seconds, deadline = 0.0, start_time + 60 * cfg.minutes
    from tqdm import tqdm

    bar = tqdm(total=cfg.total_steps, initial=step, mininterval=20, file=sys.stderr, desc="train")
    while step < cfg.total_steps and time.time() < deadline:
        model.train()
        for batch in bank.batches(cfg, epoch):
            for group in optim.param_groups:
                group["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.total_steps, cfg.min_lr)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"):
                losses = hybrid_loss(model, batch["mel"], batch["frames"], batch["targets"],
                                     batch["target_lengths"], cfg.ctc_weight, spec)
            optim.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optim.step()
            step += 1
            audio_seconds += batch["seconds"]
            bar.update(1)
            if step % 50 == 0:
                values = {k: round(float(v.detach()), 4) for k, v in losses.items()}
                bar.set_postfix(values | {"ep": epoch})
                history.append({"step": step, "epoch": epoch, **values})
            if step >= cfg.total_steps or time.time() > deadline:
                break
        epoch += 1  # a stopped epoch is not resumed mid-way: the next call starts a fresh order
    bar.close()
    train_s = time.time() - start_time
    save_checkpoint(ckpt, model.state_dict(), optim, step, epoch, history)
    val = validate(model, cfg, device)
    report = {"step": step, "epoch": epoch, "parameters": params, "audio_seconds_this_call": round(audio_seconds),
              "seconds_this_call": round(train_s), "validation_wer": val, "history": history,
              "config": asdict(cfg)}
    model.cpu().save(out / "model")
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("step", "epoch", "audio_seconds_this_call", "seconds_this_call", "validation_wer")}),
          file=sys.stderr)
    return report


def _tuples(encoder: dict) -> dict:
    encoder = dict(encoder)
    if "att_context_size" in encoder:
        encoder["att_context_size"] = tuple(tuple(c) for c in encoder["att_context_size"])
    if encoder.get("att_context_probs") is not None:
        encoder["att_context_probs"] = tuple(encoder["att_context_probs"])
    return encoder


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="speech train asr-fastconformer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/asr_fastconformer.yaml")
    parser.add_argument("--out", help="run folder (checkpoint, tokenizer, model, report); overrides the config")
    parser.add_argument("--minutes", type=float, help="wall-time budget of this call")
    parser.add_argument("--total-steps", type=int, dest="total_steps")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--fp32", action="store_true", help="train in fp32 instead of bf16 autocast")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--warmup-steps", type=int, dest="warmup_steps")
    parser.add_argument("--batch-seconds", type=float, dest="batch_seconds")
    parser.add_argument("--packs", nargs="+", help="training packs (DIR or DIR*REPEATS); override the config")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="any other recipe key, value in YAML (e.g. spec_augment=false encoder.xscaling=true)")
    args = parser.parse_args(argv)
    try:
        cfg = TrainConfig.from_yaml(args.config, out=args.out, minutes=args.minutes, total_steps=args.total_steps,
                                    workers=args.workers, packs=args.packs,
                                    bf16=False if args.fp32 else None, lr=args.lr, warmup_steps=args.warmup_steps,
                                    batch_seconds=args.batch_seconds, settings=args.set)
        for pack in [p.split("*")[0] for p in cfg.packs] + [cfg.val_pack]:
            if not (Path(pack) / "pack.json").is_file():
                raise FileNotFoundError(f"pack {pack} not found (make it with `speech corpus pack`)")
    except (OSError, ValueError, TypeError) as error:
        print(f"speech train asr-fastconformer: {error}", file=sys.stderr)
        return 2
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
