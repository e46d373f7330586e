"""`speech train whisper-causal`: LoRA adapters that make Whisper transcribe from a block-causal encoder.

CarelessWhisper's recipe on our packs: Whisper's weights frozen, LoRA (rank 32, alpha 32) on every
attention projection, the encoder run once per batch under the block-causal mask (which makes every chunk
prefix available at once), and for a sample of chunk ends t the decoder is taught the words whose aligned
end is <= t, then end-of-text. Utterances without word times teach only their full prefix. Optionally
(``distill_weight``) the causal encoder's frames are also pulled towards plain Whisper's on the same audio,
a target that needs no labels. bf16 autocast,
AdamW, ``ckpt.pt`` for resume across device calls, a progress bar, and streaming validation WER (the
real decoding path, Whisper's English normaliser) at the end of each call.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from asr.whisper.features import HOP, causal_features, offline_features
from asr.whisper.labels import TimedTokens, prefix_target, timed_tokens
from asr.whisper.lora import adapters_disabled, add_lora, lora_state, save_adapter
from asr.whisper.model import CausalWhisper
from asr.whisper.streaming import StreamConfig, stream_signal

from ..corpus.loader import PackedDataset, collate
from .recipe import load_recipe, resume_checkpoint, save_checkpoint, warmup_cosine


@dataclass
class WhisperTrainConfig:
    packs: list[str]
    val_pack: str
    out: str
    base: str = "base"  # a packaged name or a Hugging Face Whisper directory
    chunk_ms: list[int] = field(default_factory=lambda: [300])  # sampled per batch; the adapter serves them all
    rank: int = 32
    lr: float = 5e-4
    warmup_steps: int = 100
    total_steps: int = 3000
    min_lr: float = 1e-5
    weight_decay: float = 0.01
    batch_size: int = 32
    prefix_fraction: float = 0.25  # of a batch's chunk ends, taught per step (the last one always)
    distill_weight: float = 0.0  # weight of the encoder distillation loss (plain Whisper's encoder as teacher)
    max_seconds: float = 28.0
    grad_clip: float = 1.0
    workers: int = 8
    minutes: float = 8.0
    val_utterances: int = 48
    bf16: bool = True
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | Path, settings: list[str] = ()) -> WhisperTrainConfig:
        return load_recipe(cls, path, settings)


class _Interleaved(torch.utils.data.IterableDataset):
    """Utterances of all packs, drawn at random from each in turn (every loader worker takes its share)."""

    def __init__(self, cfg: WhisperTrainConfig, epoch: int, salt: int) -> None:
        seed = cfg.seed + 7919 * salt  # a resumed call draws a new order, not the previous call's first batches
        self.sets = [PackedDataset(p, seed=seed + i, max_seconds=cfg.max_seconds) for i, p in enumerate(cfg.packs)]
        for s in self.sets:
            s.set_epoch(epoch)
        self.seed = seed + epoch

    def __iter__(self):
        streams, rng = [iter(s) for s in self.sets], random.Random(self.seed)
        while streams:
            stream = rng.choice(streams)
            try:
                yield next(stream)
            except StopIteration:
                streams.remove(stream)


def _batches(cfg: WhisperTrainConfig, epoch: int, salt: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(_Interleaved(cfg, epoch, salt), batch_size=cfg.batch_size, collate_fn=collate,
                                       num_workers=cfg.workers)


def encode_causal(model: CausalWhisper, audio: torch.Tensor, chunk_frames: int) -> tuple[torch.Tensor, int]:
    """The batch through the block-causal encoder once (every chunk prefix at once) -> frames and chunk count.

    The features are padded by at least one frame, so the last chunk ends after every utterance."""
    mel = causal_features(audio)
    width = 2 * chunk_frames
    pad = width - mel.shape[-1] % width
    mel = torch.cat([mel, mel.amin(dim=(1, 2), keepdim=True).expand(-1, mel.shape[1], pad)], dim=-1)
    return model.encoder(mel, chunk_frames), mel.shape[-1] // width


def distillation_loss(model: CausalWhisper, audio: torch.Tensor, lengths: torch.Tensor,
                      encoded: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the causal encoder's frames to plain Whisper's (full attention, 30 s window,
    no adapters) over each utterance's own frames: a dense target from audio alone, so the adapted encoder
    stays close to what the decoder was trained on where labels are few."""
    with torch.no_grad(), adapters_disabled(model):
        teacher = model.encoder(offline_features(audio).to(encoded.dtype))[:, : encoded.shape[1]]
    frames = torch.arange(teacher.shape[1], device=audio.device)
    valid = (frames[None, :] < (lengths.to(audio.device)[:, None] // (2 * HOP)))[..., None]
    error = (encoded[:, : teacher.shape[1]].float() - teacher.float()).pow(2) * valid
    return error.sum() / (valid.sum() * encoded.shape[-1]).clamp(min=1)


def prefix_loss(model: CausalWhisper, encoded: torch.Tensor, chunks: int, timed: list[TimedTokens],
                chunk_frames: int, fraction: float, rng: random.Random) -> torch.Tensor:
    """Mean cross-entropy over sampled chunk ends of a block-causally ``encoded`` batch."""
    chunk_s = chunk_frames * 2 * HOP / 16000
    ends = sorted(set(rng.sample(range(chunks), max(1, int(chunks * fraction)))) | {chunks - 1})
    prompt = model.tokens.prompt()
    losses = []
    for c in ends:
        targets = [prefix_target(t, (c + 1) * chunk_s) for t in timed]
        rows = [i for i, target in enumerate(targets) if target is not None]
        if not rows:
            continue
        sequences = [prompt + targets[i] + [model.tokens.eot] for i in rows]
        longest = max(map(len, sequences))
        inputs = torch.full((len(rows), longest - 1), model.tokens.eot, dtype=torch.int64)
        labels = torch.full((len(rows), longest - 1), -100, dtype=torch.int64)
        for r, seq in enumerate(sequences):
            inputs[r, : len(seq) - 1] = torch.tensor(seq[:-1])
            labels[r, len(prompt) - 1 : len(seq) - 1] = torch.tensor(seq[len(prompt) :])
        logits = model.decoder.logits(inputs.to(encoded.device), encoded[rows, : (c + 1) * chunk_frames])
        losses.append(F.cross_entropy(logits.float().flatten(0, 1), labels.to(encoded.device).flatten()))
    if not losses:
        raise ValueError("no utterance of the batch has a target at any sampled chunk end")
    return torch.stack(losses).mean()


def validate(model: CausalWhisper, cfg: WhisperTrainConfig) -> dict[str, float]:
    """Streaming WER per chunk size on the first ``val_utterances`` of the validation pack."""
    from whisper_normalizer.english import EnglishTextNormalizer

    from asr.text import wer

    normaliser = EnglishTextNormalizer()
    utts = [u for _, u in zip(range(cfg.val_utterances), PackedDataset(cfg.val_pack, shuffle=False))]
    model.eval()
    results = {}
    for chunk_ms in cfg.chunk_ms:
        hyps = []
        for u in utts:
            events = stream_signal(model, u.audio, StreamConfig(chunk_ms=chunk_ms))
            hyps.append(normaliser(" ".join(e.text for e in events if e.final)))
        results[f"{chunk_ms}ms"] = round(100 * wer([normaliser(u.text) for u in utts], hyps), 2)
    return results


def run(cfg: WhisperTrainConfig) -> dict:
    from speech.whisper_models import whisper_directory

    start_time = time.time()
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = CausalWhisper.load(whisper_directory(cfg.base))
    add_lora(model, cfg.rank)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = out / "ckpt.pt"
    weights, step, epoch, history = resume_checkpoint(ckpt, optim, device)
    if weights is not None:
        model.hf.load_state_dict(weights, strict=False)
    print(f"LoRA {sum(p.numel() for p in trainable) / 1e6:.2f} M trainable parameters on Whisper {cfg.base}, "
          f"device {device}", file=sys.stderr)
    from tqdm import tqdm

    bar = tqdm(total=cfg.total_steps, initial=step, mininterval=20, file=sys.stderr, desc="train")
    deadline, audio_seconds, saved_at = start_time + 60 * cfg.minutes, 0.0, time.time()
    first_step = step
    while step < cfg.total_steps and time.time() < deadline:
        model.train()
        for batch in _batches(cfg, epoch, first_step):
            for group in optim.param_groups:
                group["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.total_steps, cfg.min_lr)
            timed = [timed_tokens(model.tokens, text, words, int(n) / 16000)
                     for text, words, n in zip(batch["texts"], batch["words"], batch["lengths"], strict=True)]
            chunk_frames = rng.choice(cfg.chunk_ms) // 20
            audio = batch["audio"].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"):
                encoded, chunks = encode_causal(model, audio, chunk_frames)
                loss = prefix_loss(model, encoded, chunks, timed, chunk_frames, cfg.prefix_fraction, rng)
                if cfg.distill_weight:
                    distill = distillation_loss(model, audio, batch["lengths"], encoded)
                    loss = loss + cfg.distill_weight * distill
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            optim.step()
            step += 1
            audio_seconds += float(batch["lengths"].sum()) / 16000
            bar.update(1)
            if time.time() - saved_at > 120:  # a call that dies keeps most of its work
                save_checkpoint(ckpt, lora_state(model), optim, step, epoch, history)
                saved_at = time.time()
            if step % 20 == 0:
                logged = {"loss": round(float(loss.detach()), 4)}
                if cfg.distill_weight:
                    logged["distill"] = round(float(distill.detach()), 4)
                bar.set_postfix(**logged, ep=epoch)
                history.append({"step": step, "epoch": epoch, **logged})
            if step >= cfg.total_steps or time.time() > deadline:
                break
        epoch += 1
    bar.close()
    train_s = time.time() - start_time
    save_checkpoint(ckpt, lora_state(model), optim, step, epoch, history)
    val = validate(model, cfg)
    report = {"step": step, "epoch": epoch, "audio_seconds_this_call": round(audio_seconds),
              "seconds_this_call": round(train_s), "validation_wer": val, "history": history, "config": asdict(cfg)}
    save_adapter(model, out / "adapter", chunk_ms=cfg.chunk_ms[0], base=cfg.base)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("step", "epoch", "audio_seconds_this_call", "seconds_this_call",
                                             "validation_wer")}), file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="speech train whisper-causal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/whisper_causal.yaml")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="any recipe key, value in YAML (e.g. out=runs/w minutes=2 base=tiny.en)")
    parser.add_argument("--fp32", action="store_true", help="train in fp32 instead of bf16 autocast")
    args = parser.parse_args(argv)
    try:
        cfg = WhisperTrainConfig.from_yaml(args.config, args.set)
    except (OSError, ValueError, TypeError) as error:
        print(f"speech train whisper-causal: {error}", file=sys.stderr)
        return 2
    if args.fp32:
        cfg.bf16 = False
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
