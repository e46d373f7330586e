"""`speech bench export`: ONNX Runtime (CPU) against torch (CPU) per streaming chunk, and a 10-minute stream.

Per-chunk latency: the steps a chunk costs, for B streams in lock step, with every state chained from the
start of a stream (caches fill as they would live), the two backends alternating chunk by chunk so drift on
a shared machine hits both alike. FastConformer (the shipped model): one encoder step at the chosen
lookahead. Causal Whisper (base + the shipped 300 ms adapter): one audio step, the re-read decoder call over
the segment's tokens (a bucket of ``reread_tokens`` at position 0) and two one-token calls, at positions
that walk through a 30 s segment. Long stream: one session per model fed 100 ms pieces of a ``minutes``-long
signal (one minute of speech, repeated) on the ONNX backend; the wall time of every piece that completed a
chunk, first vs last minute.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from streaming.backend import Backend, TorchBackend
from streaming.contract import StepFunction, Tensors
from streaming.inline import advance, initial_states
from streaming.onnx_backend import OnnxBackend

from .report import table, write_json


@dataclass(frozen=True)
class ExportBenchConfig:
    models: tuple[str, ...] = ("fastconformer", "whisper-causal")
    batches: tuple[int, ...] = (1, 16)
    chunks: int = 30  # timed chunks per model, batch and backend
    warmup: int = 40  # FastConformer chunks first (35 fill the 70-frame cache)
    lookahead_ms: float = 80.0
    reread_tokens: int = 32
    minutes: float = 10.0  # the long stream; 0 skips it
    threads: int | None = None


class _Chain:
    """Steps of B streams in lock step on one backend, each state chained call after call."""

    def __init__(self, backend: Backend, steps: list[StepFunction], batch: int) -> None:
        self.backend, self.batch = backend, batch
        self.steps = {step.name: backend.prepare(step) for step in steps}
        self.states = {name: initial_states(backend, step, batch) for name, step in self.steps.items()}

    def __call__(self, name: str, inputs: Tensors) -> Tensors:
        outputs, next_state = self.backend.run(self.steps[name], inputs, self.states[name])
        advance(self.states[name], next_state)
        return outputs


Chunk = Callable[[_Chain, int], None]  # runs chunk i of a stream on a chain


def _fastconformer(cfg: ExportBenchConfig):
    from asr.fastconformer.steps import EncoderStep

    from ..asr_models import load_fastconformer

    model = load_fastconformer(None)
    enc = model.cfg.encoder
    context = enc.context_for_lookahead_ms(cfg.lookahead_ms, 1000 * model.cfg.features.hop_length / 16000)
    step = EncoderStep(model.encoder, context)
    features = torch.randn(1, enc.feat_in, step.signature.geometry.hop)

    def chunk(chain: _Chain, i: int) -> None:
        chain(step.name, {"features": features.expand(chain.batch, -1, -1),
                          "valid": torch.full((chain.batch,), features.shape[-1])})

    return f"fastconformer, {cfg.lookahead_ms:g} ms lookahead", [step], chunk, cfg.warmup


def _whisper(cfg: ExportBenchConfig):
    from asr.whisper.streaming import StreamConfig, whisper_steps

    from ..whisper_models import load_causal_whisper

    stream = StreamConfig(chunk_ms=300)
    model = load_causal_whisper("base", 300, "shipped")
    audio_step, decoder_step = whisper_steps(model, stream)
    g, n = stream.frames, cfg.reread_tokens
    mel = torch.randn(1, 80, 2 * g)
    tokens = torch.randint(0, 50000, (1, 1, n))
    per_segment = model.encoder.capacity // g  # chunks in a 30 s segment: positions wrap there, as a reset would

    def chunk(chain: _Chain, i: int) -> None:
        b, at = chain.batch, (i % per_segment) * g
        full = lambda value: torch.full((b,), value)
        out = chain(audio_step.name, {"mel": mel.expand(b, -1, -1), "position": full(at)})
        audio = {"audio_keys": out["audio_keys"], "audio_values": out["audio_values"]}
        chain(decoder_step.name, {"tokens": tokens.expand(b, -1, -1), "start": full(0), "count": full(n - 2),
                                  "audio_at": full(at), "frames": full(at + g), **audio})
        quiet = {k: torch.zeros_like(v) for k, v in audio.items()}
        for extra in range(2):
            chain(decoder_step.name, {"tokens": tokens[..., :1].expand(b, -1, -1), "start": full(n - 2 + extra),
                                      "count": full(1), "audio_at": full(model.encoder.capacity),
                                      "frames": full(at + g), **quiet})

    return "causal Whisper base, 300 ms chunk", [audio_step, decoder_step], chunk, 0


def _latency(cfg: ExportBenchConfig, steps: list[StepFunction], chunk: Chunk, warmup: int, batch: int,
             backends: dict[str, Backend]) -> dict[str, list[float]]:
    chains = {name: _Chain(backend, steps, batch) for name, backend in backends.items()}
    times: dict[str, list[float]] = {name: [] for name in backends}
    for i in range(warmup + cfg.chunks):
        for name, chain in chains.items():
            start = time.perf_counter()
            chunk(chain, i)
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def _long_signal(minutes: float) -> np.ndarray:
    """One minute of real speech (../shared/data an4/test and jfk) when it is here, else speech-like noise,
    repeated: every minute of the stream holds the same words, so a change from minute to minute is the
    stream's age, not its content."""
    from pathlib import Path

    from ..audio import read_audio
    from .nemo_reference import random_speechlike

    data = Path(__file__).resolve().parents[3] / "shared" / "data"
    files = sorted((data / "an4" / "audio" / "test").glob("*/*.flac")) + [data / "jfk" / "audio" / "jfk.flac"]
    minute = 60 * 16000
    if files[0].is_file():
        pieces = [read_audio(f, sample_rate=16000)[0] for f in files[:20] + files[-1:]]
        one = np.concatenate(pieces)[:minute]
    else:
        one = random_speechlike(60.0, seed=1)
    return np.tile(one, int(np.ceil(minutes)))[: int(minutes * minute)]


def _long_stream(model: str, backend: Backend, audio: np.ndarray, cfg: ExportBenchConfig) -> dict[str, float]:
    """Wall time of each 100 ms piece that completed a chunk, by minute of the stream."""
    if model == "fastconformer":
        from asr.fastconformer.recognizer import Recognizer

        from ..asr_models import load_fastconformer

        session = Recognizer(load_fastconformer(None), cfg.lookahead_ms, backend=backend).session()
        chunked = lambda: session.frames_decoded
    else:
        from asr.whisper.streaming import StreamConfig, WhisperSession

        from ..whisper_models import load_causal_whisper

        session = WhisperSession(load_causal_whisper("base", 300, "shipped"), StreamConfig(chunk_ms=300), backend=backend)
        chunked = lambda: session.chunks_taken
    piece = 1600
    by_minute: dict[int, list[float]] = {}
    for start in range(0, len(audio), piece):
        before = chunked()
        began = time.perf_counter()
        session.accept(audio[start : start + piece])
        if chunked() != before:
            by_minute.setdefault(start // (60 * 16000), []).append(1000 * (time.perf_counter() - began))
    first, last = by_minute[min(by_minute)], by_minute[max(by_minute)]
    return {"first_minute_p50_ms": statistics.median(first), "last_minute_p50_ms": statistics.median(last),
            "minutes": len(by_minute), "per_minute_p50_ms": [statistics.median(v) for _, v in sorted(by_minute.items())]}


def main(cfg: ExportBenchConfig, json_path: str) -> dict:
    from ..exporting import cache_locator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    backends = {"torch": TorchBackend(), "onnxruntime": OnnxBackend(cache_locator("fp32"), threads=cfg.threads)}
    makers = {"fastconformer": _fastconformer, "whisper-causal": _whisper}
    results: dict[str, dict] = {}
    rows = []
    for model in cfg.models:
        label, steps, chunk, warmup = makers[model](cfg)
        results[model] = {"label": label, "latency": {}, "long_stream": None}
        for batch in cfg.batches:
            times = _latency(cfg, steps, chunk, warmup, batch, backends)
            p50 = {name: statistics.median(t) for name, t in times.items()}
            results[model]["latency"][batch] = {name: {"p50_ms": p50[name], "p90_ms": float(np.percentile(t, 90))}
                                                for name, t in times.items()}
            rows.append([label, batch, p50["torch"], p50["onnxruntime"], p50["onnxruntime"] / p50["torch"]])
            print(f"{label}, batch {batch}: torch {p50['torch']:.1f} ms, onnxruntime {p50['onnxruntime']:.1f} ms",
                  flush=True)
    print(f"per-chunk latency, p50 ms over {cfg.chunks} chunks, CPU, {torch.get_num_threads()} threads")
    print(table(["model", "batch", "torch", "onnxruntime", "ratio"], rows))
    if cfg.minutes > 0:
        audio = _long_signal(cfg.minutes)
        long_rows = []
        for model in cfg.models:
            stream = _long_stream(model, backends["onnxruntime"], audio, cfg)
            results[model]["long_stream"] = stream
            growth = stream["last_minute_p50_ms"] / stream["first_minute_p50_ms"] - 1
            long_rows.append([results[model]["label"], stream["first_minute_p50_ms"], stream["last_minute_p50_ms"],
                              f"{100 * growth:+.1f}%"])
        print(f"one {cfg.minutes:g}-minute stream on onnxruntime: wall time of a 100 ms piece that completed a chunk")
        print(table(["model", "first minute p50 ms", "last minute p50 ms", "change"], long_rows))
    write_json(json_path, "export", asdict(cfg), results)
    return results
