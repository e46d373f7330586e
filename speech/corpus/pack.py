"""`speech corpus pack`: utterances -> shards small enough to carry to the GPU machine in one call.

A shard is a folder with `audio.bin` (Ogg Opus blobs, 16 kHz mono, 20 kb/s, back to back) and
`index.jsonl` (one line per utterance: offset and size in audio.bin, text, words, speaker, ...).
Opus because the whole shard, index included, must stay within `max_mib` (one device call carries
64 MiB of working tree in all), and because soundfile's bundled libsndfile decodes it on any machine
(the GPU image gets soundfile as a carried wheel; PyAV is too large to carry).
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
OPUS_BITRATE = 20000  # b/s: 5 h in ~45 MiB; Whisper's transcripts of packed speech are unchanged
OPUS_COMPLEXITY = 5  # libopus 0-10: 5 encodes ~4x faster than 10 at the same bitrate


@dataclass
class PackReport:
    shards: list[str]
    utterances: int
    hours: float
    bytes: int


def encode_opus(audio: np.ndarray, rate: int) -> bytes:
    """Ogg Opus with PyAV's libopus (libsndfile's encoder is ~5x slower), checked to decode with soundfile.

    Bit-exact muxing (no random stream serial) keeps packs reproducible. libsndfile refuses files whose
    audio sits in one page, so pages are 250 ms (ffmpeg's default is 1 s), and 100 ms under a second.
    """
    import av
    import soundfile as sf

    pcm = np.clip(np.round(resample(audio, rate, PACK_RATE) * 32767), -32768, 32767).astype(np.int16)
    page_us = "100000" if len(pcm) < PACK_RATE else "250000"
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg", options={"fflags": "+bitexact", "page_duration": page_us}) as container:
        stream = container.add_stream("libopus", rate=PACK_RATE, layout="mono")
        stream.bit_rate = OPUS_BITRATE
        stream.codec_context.options = {"compression_level": str(OPUS_COMPLEXITY), "application": "voip"}
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = PACK_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    data = buf.getvalue()
    decoded, _ = sf.read(io.BytesIO(data), dtype="int16")
    if abs(len(decoded) - len(pcm)) > PACK_RATE // 100:
        raise RuntimeError(f"Opus round trip changed the length: {len(pcm)} -> {len(decoded)} samples")
    return data


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
    blob, index, index_bytes, total_bytes, seconds, count = bytearray(), [], 0, 0, 0.0, 0

    def flush() -> None:
        nonlocal blob, index, index_bytes, total_bytes
        if not index:
            return
        folder = out / f"shard-{len(shards):04d}"
        folder.mkdir(exist_ok=True)
        (folder / "audio.bin").write_bytes(bytes(blob))
        (folder / "index.jsonl").write_text("".join(index), encoding="utf-8")
        total_bytes += len(blob) + index_bytes
        shards.append(folder.name)
        blob, index, index_bytes = bytearray(), [], 0

    for manifest, utt in select(manifests, hours, splits, seed):
        audio, rate = sf.read(audio_path(manifest, utt), dtype="float32")
        data = encode_opus(audio if audio.ndim == 1 else audio.mean(1), rate)
        line = _index_line(utt, len(blob), len(data))
        if index and len(blob) + len(data) + index_bytes + len(line.encode()) > limit:
            flush()
            line = _index_line(utt, 0, len(data))
        blob += data
        index.append(line)
        index_bytes += len(line.encode())
        seconds += utt.duration_s
        count += 1
    flush()
    (out / "pack.json").write_text(json.dumps({"shards": shards, "utterances": count, "hours": seconds / 3600,
                                               "sample_rate": PACK_RATE, "codec": "ogg-opus"}, indent=1) + "\n")
    return PackReport(shards, count, seconds / 3600, total_bytes)
