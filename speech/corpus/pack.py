"""`speech corpus pack`: utterances -> shards small enough to carry to the GPU machine in one call.

A shard is a folder with `audio.bin` (Ogg Opus blobs, 16 kHz mono, ~20 kb/s, back to back) and
`index.jsonl` (one line per utterance: offset and size in audio.bin, text, words, speaker, ...).
Opus because the whole shard, index included, must stay within `max_mib` (one device call carries
64 MiB of working tree in all), and because soundfile's bundled libsndfile decodes it on any machine.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..audio import resample
from .manifest import Utterance, audio_path, read_manifest

PACK_RATE = 16000
OPUS_LEVEL = 0.95  # libsndfile's compression level; 0.95 is ~20 kb/s at 16 kHz (Whisper transcripts unchanged)


@dataclass
class PackReport:
    shards: list[str]
    utterances: int
    hours: float
    bytes: int


def encode_opus(audio: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, resample(audio, rate, PACK_RATE), PACK_RATE, format="OGG", subtype="OPUS",
             compression_level=OPUS_LEVEL)
    return buf.getvalue()


def _index_line(utt: Utterance, offset: int, size: int) -> str:
    row = {k: v for k, v in asdict(utt).items() if k not in ("path", "sample_rate", "extra")}
    row.update(offset=offset, size=size, sample_rate=PACK_RATE, duration_s=round(utt.duration_s, 4))
    if utt.words is not None:
        row["words"] = [[w, round(s, 3), round(e, 3)] for w, s, e in utt.words]
    return json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n"


def select(manifests: list[str | Path], hours: float, splits: tuple[str, ...], seed: int) -> list[tuple[Path, Utterance]]:
    """A seeded random choice of utterances of `splits` adding up to `hours` (all of them if fewer)."""
    pool = [(Path(m), u) for m in manifests for u in read_manifest(m) if u.split in splits]
    random.Random(seed).shuffle(pool)
    chosen, total = [], 0.0
    for item in pool:
        if total >= hours * 3600:
            break
        chosen.append(item)
        total += item[1].duration_s
    return chosen


def pack(manifests: list[str | Path], out: str | Path, hours: float, max_mib: float = 60.0,
         splits: tuple[str, ...] = ("train",), seed: int = 0) -> PackReport:
    import soundfile as sf

    limit = int(max_mib * 2**20)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[str] = []
    blob, index, total_bytes, seconds, count = bytearray(), [], 0, 0.0, 0

    def flush() -> None:
        nonlocal blob, index, total_bytes
        if not index:
            return
        folder = out / f"shard-{len(shards):04d}"
        folder.mkdir(exist_ok=True)
        (folder / "audio.bin").write_bytes(bytes(blob))
        (folder / "index.jsonl").write_text("".join(index), encoding="utf-8")
        total_bytes += len(blob) + sum(len(line.encode()) for line in index)
        shards.append(folder.name)
        blob, index = bytearray(), []

    for manifest, utt in select(manifests, hours, splits, seed):
        audio, rate = sf.read(audio_path(manifest, utt), dtype="float32")
        data = encode_opus(audio if audio.ndim == 1 else audio.mean(1), rate)
        line = _index_line(utt, len(blob), len(data))
        if index and len(blob) + len(data) + sum(len(x.encode()) for x in index) + len(line.encode()) > limit:
            flush()
            line = _index_line(utt, 0, len(data))
        blob += data
        index.append(line)
        seconds += utt.duration_s
        count += 1
    flush()
    (out / "pack.json").write_text(json.dumps({"shards": shards, "utterances": count, "hours": seconds / 3600,
                                               "sample_rate": PACK_RATE, "codec": "ogg-opus"}, indent=1) + "\n")
    return PackReport(shards, count, seconds / 3600, total_bytes)
