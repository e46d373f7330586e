"""Manifests of the real recorded speech: `../shared/data/*` and Debian's Asterisk prompts (Allison Smith).

`use` follows DESIGN.md section 5: sets reserved for ASR evaluation say so, and ASR training recipes must
refuse them.
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .debian import ensure_packages
from .manifest import Utterance, write_manifest

ASR_EVAL_ONLY = "asr-eval-only"


@dataclass(frozen=True)
class RealSet:
    name: str
    tsv: str  # relative to the data folder
    licence: str
    use: str  # "train", "untranscribed" or ASR_EVAL_ONLY


SHARED_SETS = (
    RealSet("ljspeech385", "ljspeech385/manifest.tsv", "public domain", "train"),
    RealSet("an4-train", "an4/train.tsv", "CMU AN4: free for any use", "train"),
    RealSet("an4-test", "an4/test.tsv", "CMU AN4: free for any use", ASR_EVAL_ONLY),
    RealSet("vctk13", "vctk13/manifest.tsv", "CC BY 4.0", ASR_EVAL_ONLY),
    RealSet("librispeech-speakers200", "librispeech_speakers200/manifest.tsv", "CC BY 4.0", "untranscribed"),
    RealSet("fsdd600", "fsdd600/manifest.tsv", "CC BY-SA 4.0", "train"),
    RealSet("jfk", "jfk/manifest.tsv", "public domain", ASR_EVAL_ONLY),
)

ASTERISK_PACKAGES = ["asterisk-core-sounds-en", "asterisk-core-sounds-en-g722"]
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ASTERISK_LICENCE = "CC BY-SA 3.0 (Allison Smith, Asterisk core sounds)"


def shared_set(data_dir: str | Path, real: RealSet) -> list[Utterance]:
    """One shared set as corpus utterances, paths absolute (the audio stays in ../shared)."""
    tsv = Path(data_dir) / real.tsv
    utts = []
    with open(tsv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            utts.append(Utterance(
                utt_id=f"{real.name}/{row['utt_id']}", path=str((tsv.parent / row["path"]).resolve()),
                speaker=f"{real.name}/{row['speaker']}", text=row.get("text", "") or "",
                duration_s=float(row["duration_s"]), sample_rate=int(row["sample_rate"]),
                voice=f"{real.name}/{row['speaker']}", licence=real.licence, split=real.use))
    return utts


def asterisk_transcripts() -> dict[str, str]:
    """Prompt name -> transcript, without the bracketed non-speech prompts ("[this is a simple beep tone]")."""
    out = {}
    with gzip.open(ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            spoken = re.sub(r"\s*\[[^]]*\]", "", text).replace("-", " ").replace("exclaimation", "exclamation")
            spoken = re.sub(r"\s+", " ", spoken).strip()
            if spoken:  # the rest are tones and sound effects
                out[name.strip()] = spoken
    return out


def decode_g722(path: str | Path) -> np.ndarray:
    """A raw G.722 file as 16 kHz float32 mono."""
    import av

    with av.open(str(path), format="g722") as container:
        frames = [frame.to_ndarray() for frame in container.decode(audio=0)]
    pcm = np.concatenate(frames, axis=1)[0]
    return (pcm.astype(np.float32) / 32768.0)


def build_asterisk(out_dir: str | Path, install: bool = True) -> Path:
    """Decode the transcribed Allison prompts to 16 kHz FLAC under out_dir and write manifest.jsonl."""
    import soundfile as sf

    if install:
        ensure_packages(ASTERISK_PACKAGES)
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    utts = []
    for name, text in sorted(asterisk_transcripts().items()):
        src = ASTERISK_SOUNDS / f"{name}.g722"
        if not src.exists():
            continue
        audio = decode_g722(src)
        rel = f"audio/{name.replace('/', '__')}.flac"
        sf.write(out / rel, audio, 16000, subtype="PCM_16", format="FLAC")
        utts.append(Utterance(utt_id=f"allison/{name}", path=rel, speaker="allison", text=text,
                              duration_s=len(audio) / 16000, sample_rate=16000, voice="allison",
                              licence=ASTERISK_LICENCE, split=ASR_EVAL_ONLY))
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, utts)
    return manifest


def build_real(data_dir: str | Path, out_dir: str | Path, install: bool = True) -> dict[str, tuple[int, float]]:
    """Write one manifest per real set under out_dir; returns name -> (utterances, hours)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for real in SHARED_SETS:
        if not (Path(data_dir) / real.tsv).exists():
            continue
        utts = shared_set(data_dir, real)
        write_manifest(out / f"{real.name}.jsonl", utts)
        summary[real.name] = (len(utts), sum(u.duration_s for u in utts) / 3600)
    from .manifest import read_manifest

    allison = read_manifest(build_asterisk(out / "allison", install=install))
    summary["allison"] = (len(allison), sum(u.duration_s for u in allison) / 3600)
    return summary


SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def live_speech(count: int, data_dir: str | Path = SHARED_DATA) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """``count`` real utterances at 16 kHz for streaming end-to-end runs (the server's tests and benchmark):
    an4/test from ``data_dir`` when it is there, else digit strings spoken by the Asterisk voice (one
    recording per digit, joined with 0.3 s pauses, like an4's numbers, which the small default model knows).
    Samples hold exact 16-bit values, so PCM16 carries them unchanged. Returns the source's name and the
    utterances; raises FileNotFoundError when neither source is installed."""
    from ..audio import read_audio

    an4 = Path(data_dir) / "an4" / "test.tsv"
    if an4.is_file():
        with open(an4, encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:count]
        return "an4/test", [(r["utt_id"], read_audio(an4.parent / r["path"], sample_rate=16000)[0]) for r in rows]
    digits = {d: ASTERISK_SOUNDS / "digits" / f"{d}.g722" for d in "0123456789"}
    if not all(path.is_file() for path in digits.values()):
        raise FileNotFoundError(f"no real speech: {an4} is absent and the Asterisk prompts are not installed "
                                f"(Debian {' '.join(ASTERISK_PACKAGES)})")
    spoken = {d: decode_g722(path) for d, path in digits.items()}
    pause = np.zeros(4800, np.float32)
    rng = np.random.default_rng(0)
    utterances = []
    for _ in range(count):
        number = "".join(rng.choice(list("0123456789"), size=int(rng.integers(3, 7))))
        utterances.append((f"digits-{number}", np.concatenate([x for d in number for x in (spoken[d], pause)])))
    return "asterisk digit strings", utterances
