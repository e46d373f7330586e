"""Which layer of the frame-causal Whisper content encoder VC should read: words kept, speaker lost.

For the log-mel input and every layer's output (:mod:`vc.content_probe`): speaker accuracy of a logistic
regression on utterance means (AN4 train, ``speakers_per`` utterances per speaker, half train and half test;
lower is better for VC) and speaker-independent 1-NN DTW word accuracy (FSDD digits, ``takes`` takes per digit
and speaker, each matched against the other speakers only; higher is better), by the cosine of raw frames and of
standardised ones. The chosen layer keeps the most content less speaker (``vc.content_probe.choose_layer``).
CPU, a minute or two.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .report import table, write_json


def run(data_dir: str | Path = "../shared/data", json_path: str | Path | None = None, speakers_per: int = 6,
        takes: int = 4) -> dict:
    """Runs both probes on every layer, prints the table and returns (and optionally writes) the results."""
    from speech.vc_models import content_stack
    from vc.content_probe import choose_layer, probe_layers, read_set

    data_dir = Path(data_dir)
    an4, fsdd = data_dir / "an4" / "train.tsv", data_dir / "fsdd600" / "manifest.tsv"
    missing = [str(p) for p in (an4, fsdd) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"vc_content needs AN4 and FSDD manifests under {data_dir.resolve()}; "
                                f"missing: {', '.join(missing)}")
    start = time.perf_counter()
    stack = content_stack(None)
    speaker_set = [(audio, speaker) for audio, speaker, _ in read_set(an4, speakers_per)]
    content_set = read_set(fsdd, takes, by_text=True)
    rows = probe_layers(stack, speaker_set, content_set)
    chosen = choose_layer(rows)
    seconds = time.perf_counter() - start
    print(f"speech bench vc-content: speaker probe on {len(speaker_set)} AN4 utterances "
          f"({len({s for _, s in speaker_set})} speakers), content probe on {len(content_set)} FSDD utterances "
          f"({len({s for _, s, _ in content_set})} speakers)")
    print(table(["features", "speaker acc %", "content acc % (cosine)", "content acc % (standardised)"],
                [[r["name"], r["speaker_accuracy"], r["content_accuracy"], r["content_accuracy_standardised"]]
                 for r in rows]))
    print(f"chosen: layer {chosen} ({seconds:.0f} s)")
    results = {"rows": rows, "chosen_layer": chosen, "seconds": seconds,
               "speaker_utterances": len(speaker_set), "content_utterances": len(content_set)}
    if json_path is not None:
        config = {"data_dir": str(data_dir), "speakers_per": speakers_per, "takes": takes,
                  "threads": torch.get_num_threads()}
        print(f"wrote {write_json(json_path, 'vc_content', config, results)}")
    return results
