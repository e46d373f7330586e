"""Stream packed shards (speech.corpus.pack) into training batches; runs on the GPU machine.

Needs only torch, numpy and soundfile (carried as a wheel), so it imports nothing else of `speech`.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class PackedUtterance:
    utt_id: str
    audio: np.ndarray  # float32, 16 kHz
    text: str
    words: list | None
    speaker: str


def read_index(shard: Path) -> list[dict]:
    with open(shard / "index.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def shards_of(pack_dir: str | Path) -> list[Path]:
    pack_dir = Path(pack_dir)
    names = json.loads((pack_dir / "pack.json").read_text())["shards"]
    return [pack_dir / n for n in names]


class PackedDataset(torch.utils.data.IterableDataset):
    """Utterances of every shard, shuffled per epoch with `seed + epoch`; loader workers take every
    n-th utterance, so that one big shard still feeds all of them."""

    def __init__(self, pack_dir: str | Path, seed: int = 0, shuffle: bool = True, max_seconds: float = 30.0) -> None:
        self.shards = shards_of(pack_dir)
        self.seed, self.shuffle, self.max_seconds = seed, shuffle, max_seconds
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating again: each epoch has its own order (workers get a copy at iter())."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[PackedUtterance]:
        import soundfile as sf

        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rng = random.Random(self.seed + self.epoch)
        for shard in self.shards:
            rows = read_index(shard)
            if self.shuffle:
                rng.shuffle(rows)
            rows = rows[worker::workers]
            with open(shard / "audio.bin", "rb") as f:
                data = f.read()
            for row in rows:
                if row["duration_s"] > self.max_seconds:
                    continue
                audio, _ = sf.read(io.BytesIO(data[row["offset"]:row["offset"] + row["size"]]), dtype="float32")
                yield PackedUtterance(row["utt_id"], audio, row["text"], row.get("words"), row["speaker"])


def collate(batch: list[PackedUtterance]) -> dict:
    """Zero-padded audio [B, T] with lengths; texts and words as lists."""
    lengths = torch.tensor([len(u.audio) for u in batch])
    audio = torch.zeros(len(batch), int(lengths.max()))
    for i, u in enumerate(batch):
        audio[i, : len(u.audio)] = torch.from_numpy(u.audio)
    return {"audio": audio, "lengths": lengths, "texts": [u.text for u in batch],
            "words": [u.words for u in batch], "utt_ids": [u.utt_id for u in batch]}


def loader(pack_dir: str | Path, batch_size: int = 16, workers: int = 2, seed: int = 0) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(PackedDataset(pack_dir, seed), batch_size=batch_size, collate_fn=collate,
                                       num_workers=workers, pin_memory=torch.cuda.is_available())
