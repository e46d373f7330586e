"""`speech corpus tts-pack`: the TTS training set as phoneme ids + HiFi-GAN mels, small enough for one device call.

Each voice's utterances are read from a manifest (the real sets of `speech corpus real`, the voices of
`speech corpus build`), resampled to 22.05 kHz, trimmed of leading and trailing silence, turned into the
vocoder's log-mel (``tts.hifigan.hifigan_mel``) and quantised to 8 bits over ``[MEL_LOW, MEL_HIGH]``
(a step of 0.055 in natural-log magnitude, far below what the acoustic model resolves); the text goes
through the same front end as synthesis (``tts.frontend.text_to_ids``). Mels are stored LZMA-compressed.

Files: ``mels.u8.xz`` (frames x 80 bytes, utterances back to back), ``index.jsonl`` (one line per
utterance: voice, speaker index, first frame, frames, phoneme ids, text), ``pack.json`` (voices, hours,
quantisation, mel mean and std). Loading needs only numpy (the GPU image has no G2P or audio stack).
"""

from __future__ import annotations

import json
import lzma
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEL_LOW, MEL_HIGH = -11.6, 2.4  # natural-log magnitude: log(1e-5) = -11.51 is HiFi-GAN's floor
SILENCE_DB_BELOW_PEAK = 45.0


@dataclass(frozen=True)
class VoiceSource:
    name: str  # the built-in voice name
    manifest: str
    select: str  # the manifest's `voice` value
    hours: float


DEFAULT_VOICES = (
    VoiceSource("lj", "corpora/real/ljspeech385.jsonl", "ljspeech385/LJ", 0.69),
    VoiceSource("allison", "corpora/real/allison/manifest.jsonl", "allison", 0.45),
    VoiceSource("joe", "corpora/synth/manifest.jsonl", "piper/joe", 0.55),
    VoiceSource("slt", "corpora/synth/manifest.jsonl", "festival/slt-hts", 0.4),
    VoiceSource("awb", "corpora/synth/manifest.jsonl", "flite/awb", 0.3),
    VoiceSource("alpha", "corpora/synth/manifest.jsonl", "kokoro/jf_alpha", 0.23),
    VoiceSource("kumo", "corpora/synth/manifest.jsonl", "kokoro/jm_kumo", 0.23),
)


def trim_silence(mel: np.ndarray, margin: int = 3) -> np.ndarray:
    """Drop leading/trailing frames whose loudest bin is ``SILENCE_DB_BELOW_PEAK`` below the utterance's."""
    loud = mel.max(axis=1)
    keep = np.flatnonzero(loud > loud.max() - SILENCE_DB_BELOW_PEAK / 20 * np.log(10))
    if keep.size == 0:
        return mel[:0]
    return mel[max(keep[0] - margin, 0) : keep[-1] + 1 + margin]


def quantise(mel: np.ndarray) -> np.ndarray:
    scaled = (np.clip(mel, MEL_LOW, MEL_HIGH) - MEL_LOW) / (MEL_HIGH - MEL_LOW) * 255
    return np.round(scaled).astype(np.uint8)


def dequantise(codes: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) / 255 * (MEL_HIGH - MEL_LOW) + MEL_LOW


def build_tts_pack(out: Path, voices: tuple[VoiceSource, ...] = DEFAULT_VOICES, seed: int = 0) -> dict:
    import torch

    from tts.frontend import text_to_ids
    from tts.hifigan import HifiGanConfig, hifigan_mel
    from tts.normalize import normalize

    from ..audio import read_audio, resample
    from .manifest import audio_path, read_manifest
    from .text import heldout_sentences

    cfg = HifiGanConfig()
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    # The benchmark's sentences never train, whichever voice read them (a build's test voices read the
    # test split, where they come from).
    held_out = {normalize(sentence) for sentence in heldout_sentences()}
    index, chunks, frames_total, summary = [], [], 0, {}
    for speaker, voice in enumerate(voices):
        manifest = Path(voice.manifest)
        rows = [u for u in read_manifest(manifest)
                if u.voice == voice.select and u.text.strip() and normalize(u.text) not in held_out]
        if not rows:
            raise ValueError(f"no utterances of voice {voice.select!r} in {manifest}")
        rng.shuffle(rows)
        seconds = 0.0
        for utt in rows:
            if seconds >= voice.hours * 3600:
                break
            audio, rate = read_audio(audio_path(manifest, utt))
            audio = resample(audio, rate, cfg.sample_rate)
            mel = hifigan_mel(torch.from_numpy(audio)[None])[0].T.numpy()
            mel = trim_silence(mel)
            ids = text_to_ids(utt.text)
            if not ids or mel.shape[0] < len(ids) or mel.shape[0] < 10:
                continue  # too short for its text: a monotonic alignment needs a frame per phoneme
            chunks.append(quantise(mel))
            index.append({"voice": voice.name, "speaker": speaker, "utt_id": utt.utt_id, "start": frames_total,
                          "frames": int(mel.shape[0]), "ids": ids, "text": utt.text})
            frames_total += mel.shape[0]
            seconds += mel.shape[0] * cfg.hop_length / cfg.sample_rate
        summary[voice.name] = {"source": voice.select, "hours": seconds / 3600,
                               "utterances": sum(1 for r in index if r["speaker"] == speaker)}
    return write_pack(out, np.concatenate(chunks), index, [v.name for v in voices], summary)


def write_pack(out: Path, codes: np.ndarray, index: list[dict], voices: list[str], summary: dict) -> dict:
    """The pack's files from 8-bit mels ``[frames, 80]`` and their index rows; returns ``pack.json``'s info."""
    from tts.hifigan import HifiGanConfig

    cfg = HifiGanConfig()
    mel = dequantise(codes)
    (out / "mels.u8.xz").write_bytes(lzma.compress(codes.tobytes(), preset=6))
    with open(out / "index.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in index)
    info = {"voices": voices, "summary": summary, "frames": int(codes.shape[0]),
            "hours": codes.shape[0] * cfg.hop_length / cfg.sample_rate / 3600, "n_mels": cfg.n_mels,
            "mel_low": MEL_LOW, "mel_high": MEL_HIGH, "mel_mean": float(mel.mean()), "mel_std": float(mel.std()),
            "bytes": (out / "mels.u8.xz").stat().st_size}
    (out / "pack.json").write_text(json.dumps(info, indent=1))
    return info


def _read_codes(pack: Path) -> tuple[np.ndarray, list[dict], dict]:
    info = json.loads((pack / "pack.json").read_text())
    codes = np.frombuffer(lzma.decompress((pack / "mels.u8.xz").read_bytes()), np.uint8)
    rows = [json.loads(line) for line in (pack / "index.jsonl").read_text().splitlines() if line]
    return codes.reshape(-1, info["n_mels"]), rows, info


def load_tts_pack(pack: Path) -> tuple[np.ndarray, list[dict], dict]:
    """``(mels [frames, 80] float32, index rows, pack info)``."""
    codes, rows, info = _read_codes(pack)
    return dequantise(codes), rows, info


def subset_tts_pack(pack: Path, out: Path, every: int) -> dict:
    """Every ``every``-th utterance of ``pack`` (each voice keeps its share) as a pack of its own: the vocoder's
    training set, small enough to travel in one device call."""
    codes, rows, info = _read_codes(pack)
    out.mkdir(parents=True, exist_ok=True)
    kept, chunks, start = [], [], 0
    for row in rows[::every]:
        chunks.append(codes[row["start"] : row["start"] + row["frames"]])
        kept.append({**row, "start": start})
        start += row["frames"]
    from tts.hifigan import HifiGanConfig

    hop_seconds = HifiGanConfig().hop_length / HifiGanConfig().sample_rate
    summary = {voice: {"hours": sum(r["frames"] for r in kept if r["voice"] == voice) * hop_seconds / 3600,
                       "utterances": sum(1 for r in kept if r["voice"] == voice)} for voice in info["voices"]}
    return write_pack(out, np.concatenate(chunks), kept, info["voices"], summary)


if __name__ == "__main__":  # python -m speech.corpus.tts_pack subset PACK OUT EVERY (needs only numpy)
    import sys

    if len(sys.argv) != 5 or sys.argv[1] != "subset":
        sys.exit("usage: python -m speech.corpus.tts_pack subset PACK OUT EVERY")
    print(json.dumps(subset_tts_pack(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))["summary"]))
