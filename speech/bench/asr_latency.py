"""`speech bench asr-latency`: how long after a word is said its text is committed, for causal streaming
Whisper and for LocalAgreement-2 (whisperlivekit's, over faster-whisper with the same Whisper base weights).

A word's emission latency is the time its text is committed (will not change any more) minus the end of
the word in the audio, from a forced alignment of the reference transcript (Whisper base's alignment heads
+ DTW, `speech.judges.whisper.force_align`). Both systems run in simulated real time with their compute
counted (whisper_streaming's computationally aware simulation): audio arrives at 1x; a system is called
once its next tick of audio has arrived (ours: a chunk, complete 2.5 ms after its end; LocalAgreement-2:
its 1 s minimum chunk) and its previous call has returned, with all the audio that arrived meanwhile; the
words a call commits are committed when it returns. Committed words are matched to the reference words by
spelling (case and punctuation aside); a word that matches none has no latency but counts in the WER.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..audio import read_audio
from ..corpus.manifest import audio_path, read_manifest
from .asr_quality import SETS, whisper_wer
from .report import table, write_json

RATE = 16000
LA2_PACKAGE = "whisperlivekit==0.2.26"


@dataclass(frozen=True)
class AsrLatencyConfig:
    real: str = "corpora/real"
    sets: tuple[str, ...] = ("jfk", "allison", "vctk13")
    max_utterances: int = 30
    whisper: str = "base"
    chunk_ms: int = 300
    adapter: str | None = "shipped"  # 'shipped', a directory, or None (causal Whisper without LoRA)
    la2_min_chunk_s: float = 1.0  # whisper_streaming's default --min-chunk-size
    beam: int = 1  # ours: 1 greedy, 2-4 beam search
    threads: int = field(default_factory=torch.get_num_threads)  # both systems get the same


class StreamingSystem(Protocol):
    """A live recogniser as the simulation drives it: words come back when they are committed."""

    name: str
    tick_s: float  # audio per call
    lead_s: float  # extra audio a tick needs before it can be processed

    def start(self) -> None: ...
    def feed(self, audio: np.ndarray) -> list[str]: ...
    def finish(self) -> list[str]: ...


class CausalWhisperSystem:
    """Our session; a word is committed once it is among a hypothesis's ``stable`` words."""

    def __init__(self, name: str, model, chunk_ms: int, beam: int = 1) -> None:
        from asr.whisper.streaming import StreamConfig

        self.name, self.model, self.cfg = name, model, StreamConfig(chunk_ms=chunk_ms, beam=beam)
        self.tick_s, self.lead_s = chunk_ms / 1000, 0.0025

    def start(self) -> None:
        from asr.whisper.streaming import WhisperSession

        self.session, self.reported = WhisperSession(self.model, self.cfg), {}

    def _committed(self, events) -> list[str]:
        words: list[str] = []
        for event in events:
            done = self.reported.get(event.segment, 0)
            words += [w.text for w in event.words[done : event.stable]]
            self.reported[event.segment] = max(done, event.stable)
        return words

    def feed(self, audio: np.ndarray) -> list[str]:
        return self._committed(self.session.accept(audio))

    def finish(self) -> list[str]:
        return self._committed(self.session.finish())


class LocalAgreementSystem:
    """whisperlivekit's OnlineASRProcessor (LocalAgreement-2, segment buffer trimming at 15 s, 200-character
    prompt, beam 5, word timestamps) over faster-whisper int8 with the packaged Whisper base."""

    def __init__(self, model_dir: Path, threads: int, min_chunk_s: float) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # it must never reach for the hub
        try:
            from faster_whisper import WhisperModel
            from whisperlivekit.local_agreement.whisper_online import backend_factory
        except ModuleNotFoundError as error:
            raise RuntimeError(f"the LocalAgreement-2 peer needs {LA2_PACKAGE} (pip install --no-deps "
                               f"{LA2_PACKAGE} tiktoken; setup.sh does): {error}") from error
        logging.getLogger().setLevel(logging.WARNING)  # whisperlivekit configures INFO logging on import
        self.asr = backend_factory(backend="faster-whisper", lan="en", model_size=None, model_cache_dir=None,
                                   model_dir=str(model_dir), model_path=None, lora_path=None,
                                   direct_english_translation=False, buffer_trimming="segment",
                                   buffer_trimming_sec=15.0, confidence_validation=False, warmup_file="")
        # its own loader picks device and threads itself; pin them to ours (same machine, same threads)
        self.asr.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
        logging.getLogger().setLevel(logging.WARNING)
        self.name, self.tick_s, self.lead_s = f"LocalAgreement-2 (whisperlivekit, {min_chunk_s:g} s)", min_chunk_s, 0.0

    def start(self) -> None:
        from whisperlivekit.local_agreement.online_asr import OnlineASRProcessor

        self.online = OnlineASRProcessor(self.asr, logfile=io.StringIO())  # its progress lines, unread

    @staticmethod
    def _words(tokens) -> list[str]:
        return [w for t in tokens for w in t.text.split()]

    def feed(self, audio: np.ndarray) -> list[str]:
        self.online.insert_audio_chunk(audio.astype(np.float32))
        return self._words(self.online.process_iter()[0])

    def finish(self) -> list[str]:
        return self._words(self.online.finish()[0])


@dataclass
class Run:
    commits: list[tuple[str, float]]  # (word, commit time in s of audio clock)
    calls_s: list[float]  # compute of each call


def simulate(system: StreamingSystem, audio: np.ndarray) -> Run:
    """One signal through ``system`` in computation-aware simulated real time."""
    system.start()
    tick, lead = round(system.tick_s * RATE), round(system.lead_s * RATE)
    clock, fed, run = 0.0, 0, Run([], [])

    def call(fn, *args) -> None:
        nonlocal clock
        start = time.perf_counter()
        words = fn(*args)
        run.calls_s.append(time.perf_counter() - start)
        clock += run.calls_s[-1]
        run.commits.extend((w, clock) for w in words)

    while fed < len(audio):
        due = min(len(audio), (max(0, fed - lead) // tick + 1) * tick + lead)
        clock = max(clock, due / RATE)  # wait for the tick, unless still busy with the last call
        upto = max(due, min(len(audio), int(clock * RATE)))  # everything that has arrived by now
        call(system.feed, audio[fed:upto])
        fed = upto
    call(system.finish)
    return run


def _key(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


def emission_latencies(commits: Sequence[tuple[str, float]], reference: Sequence) -> list[float]:
    """Commit time minus aligned end, for the committed words that match reference words (``.word``, ``.end``)."""
    hyp, ref = [_key(w) for w, _ in commits], [_key(w.word) for w in reference]
    blocks = SequenceMatcher(None, hyp, ref, autojunk=False).get_matching_blocks()
    return [commits[a + k][1] - reference[b + k].end for a, b, n in blocks for k in range(n) if hyp[a + k]]


@dataclass
class Utterance:
    audio: np.ndarray
    text: str
    aligned: list | None  # reference words with times; None where the aligner could not place them


def load_sets(cfg: AsrLatencyConfig) -> tuple[dict[str, list[Utterance]], dict[str, str]]:
    from ..judges.whisper import force_align

    sets, skipped = {}, {}
    for name in cfg.sets:
        if name not in SETS or SETS[name][0] != "real":
            raise ValueError(f"unknown set {name!r}; sets: {', '.join(n for n, s in SETS.items() if s[0] == 'real')}")
        manifest = Path(cfg.real) / SETS[name][1]
        if not manifest.is_file():
            skipped[name] = f"no {manifest} (run `speech corpus real`)"
            continue
        items = []
        for u in read_manifest(manifest)[: cfg.max_utterances]:
            audio = read_audio(audio_path(manifest, u), sample_rate=RATE)[0]
            try:
                aligned = force_align(u.text.split(), audio)
            except ValueError:  # Whisper's tokens did not split back into the reference words, or > 30 s
                aligned = None
            items.append(Utterance(audio, u.text, aligned))
        sets[name] = items
    return sets, skipped


def _systems(cfg: AsrLatencyConfig) -> list[StreamingSystem]:
    from ..whisper_models import ct2_directory, load_causal_whisper

    model = load_causal_whisper(cfg.whisper, cfg.chunk_ms, cfg.adapter)
    lora = "no LoRA" if cfg.adapter is None else "+ LoRA"
    beam = "greedy" if cfg.beam == 1 else f"beam {cfg.beam}"
    return [CausalWhisperSystem(f"causal {cfg.whisper} {cfg.chunk_ms} ms {lora} {beam} (ours)", model, cfg.chunk_ms,
                                cfg.beam),
            LocalAgreementSystem(ct2_directory(cfg.whisper), cfg.threads, cfg.la2_min_chunk_s)]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _summary(runs: list[Run], items: list[Utterance]) -> dict:
    latencies = [x for run, u in zip(runs, items, strict=True) if u.aligned for x in emission_latencies(run.commits, u.aligned)]
    calls = [c for run in runs for c in run.calls_s]
    seconds = sum(len(u.audio) for u in items) / RATE
    hyps = [" ".join(w for w, _ in run.commits) for run in runs]
    return {"wer": 100 * whisper_wer([u.text for u in items], hyps), "utterances": len(items),
            "matched_words": len(latencies), "latency_p50_ms": 1000 * _percentile(latencies, 50),
            "latency_p90_ms": 1000 * _percentile(latencies, 90), "compute_per_call_p50_ms": 1000 * _percentile(calls, 50),
            "compute_per_call_p90_ms": 1000 * _percentile(calls, 90), "real_time_factor": sum(calls) / seconds}


def main(cfg: AsrLatencyConfig, json_path: str) -> dict:
    torch.set_num_threads(cfg.threads)
    sets, skipped = load_sets(cfg)
    if not sets:
        raise RuntimeError("no evaluation set found: " + "; ".join(skipped.values()))
    results, rows = {}, []
    for system in _systems(cfg):
        simulate(system, np.zeros(RATE, np.float32))  # warm-up, as whisper_streaming does
        runs = {name: [simulate(system, u.audio) for u in items] for name, items in sets.items()}
        row = {name: _summary(runs[name], items) for name, items in sets.items()}
        row["all"] = _summary([r for name in sets for r in runs[name]], [u for name in sets for u in sets[name]])
        results[system.name] = row
        for name, s in row.items():
            rows.append([system.name, name, s["wer"], s["matched_words"], s["latency_p50_ms"], s["latency_p90_ms"],
                         s["compute_per_call_p50_ms"], s["real_time_factor"]])
        print(f"{system.name}: " + ", ".join(f"{n} p50 {s['latency_p50_ms']:.0f} ms WER {s['wer']:.1f}"
                                             for n, s in row.items()), file=sys.stderr, flush=True)
    print(f"emission latency (commit - aligned word end), computation-aware real-time simulation, {cfg.threads} "
          f"threads; WER with Whisper's EnglishTextNormalizer; at most {cfg.max_utterances} utterances per set")
    print(table(["system", "set", "WER %", "words", "p50 ms", "p90 ms", "compute/call p50 ms", "RTF"], rows))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    ours, peer = (results[s]["all"] for s in results)
    verdict = {"p50_ratio": ours["latency_p50_ms"] / peer["latency_p50_ms"], "wer_points_worse": ours["wer"] - peer["wer"]}
    verdict["met"] = verdict["p50_ratio"] <= 1 / 3 and verdict["wer_points_worse"] <= 2.0
    print(f"target: our p50 <= 1/3 of LocalAgreement-2's ({verdict['p50_ratio']:.2f}x) at WER at most 2 points worse "
          f"({verdict['wer_points_worse']:+.1f}): {'met' if verdict['met'] else 'NOT met'}")
    write_json(json_path, "asr-latency", asdict(cfg), {"systems": results, "target": verdict, "skipped": skipped})
    return results
