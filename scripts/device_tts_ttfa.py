"""On the lent GPU: our TTS's time to first audio and RTF with the models on CUDA, eager and as CUDA graphs.

The GPU image lacks the front end's espeak-ng, so it runs here on the CPU first: `python
scripts/device_tts_ttfa.py --prepare corpora/ttsgpu` writes the phoneme ids of the held-out sentences there;
add the wheels the image lacks: `pip download num2words docopt pytest pluggy iniconfig --no-deps -d
corpora/ttsgpu` (num2words: the normaliser's dependency; pytest: for tests/test_cuda_graphs.py). There:
`python3 -m pip install --no-deps corpora/ttsgpu/*.whl; PYTHONPATH=. python3 scripts/device_tts_ttfa.py
corpora/ttsgpu`, carrying corpora/ttsgpu. The models are the shipped ones (acoustic model and causal vocoder,
in the tracked tree). Time to first audio is from handing the ids to a new stream to its first audio on the
host; the CPU front end's own time per sentence (printed by --prepare, about 1 ms) comes on top.
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
    from speech.corpus.text import heldout_sentences
    from tts.frontend import IncrementalFrontEnd

    out.mkdir(parents=True, exist_ok=True)
    texts = heldout_sentences()[:sentences]
    ids, seconds = [], []
    for text in texts:
        start = time.perf_counter()
        front = IncrementalFrontEnd()
        ids.append(front.push(text) + front.finish())
        seconds.append(time.perf_counter() - start)
    (out / "ids.json").write_text(json.dumps({"texts": texts, "ids": ids}))
    print(f"front end on this CPU: p50 {1000 * statistics.median(seconds):.1f} ms per sentence")


def measure(directory: Path) -> None:
    from speech.say import DEFAULT_TTS, DEFAULT_VOCODER
    from streaming.cuda_graphs import CudaGraphBackend
    from tts.acoustic import load_acoustic
    from tts.flow_step import SolverSettings
    from tts.hifigan import load_vocoder
    from tts.synthesizer import StreamingSynthesizer

    device = torch.device("cuda")
    model = load_acoustic(DEFAULT_TTS).to(device)
    vocoder = load_vocoder(DEFAULT_VOCODER).to(device)
    data = json.loads((directory / "ids.json").read_text())
    settings = SolverSettings(steps=4, chunk=16)
    results = {}
    for name, backend in (("eager", None), ("cuda graphs", CudaGraphBackend())):
        for vocoder_chunk in (16, 32):
            first, total, audio_s = [], [], 0.0
            for round_ in range(2):  # the first round warms up (CUDA kernels, allocator, graph capture)
                for ids in data["ids"]:
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    synthesizer = StreamingSynthesizer(model, vocoder, settings, model.cfg.speaking_voice,
                                                       vocoder_chunk=vocoder_chunk, backend=backend)
                    got = None
                    samples = 0
                    for piece in itertools.chain(synthesizer.push_ids(ids), synthesizer.finish_ids([])):
                        got = got if got is not None else time.perf_counter() - start
                        samples += len(piece)
                    elapsed = time.perf_counter() - start
                    if round_:
                        first.append(got)
                        total.append(elapsed)
                        audio_s += samples / vocoder.cfg.sample_rate
            key = f"{name}, vocoder chunk {vocoder_chunk}"
            results[key] = {"ttfa_p50_ms": 1000 * statistics.median(first),
                            "ttfa_p90_ms": 1000 * sorted(first)[int(0.9 * len(first))],
                            "rtf": sum(total) / audio_s}
            print(f"{key}: {results[key]}", flush=True)
    print(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    if sys.argv[1] == "--prepare":
        prepare(Path(sys.argv[2]))
    else:
        measure(Path(sys.argv[1]))
