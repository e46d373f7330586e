"""`speech bench serve`: N concurrent real-time ASR (or VC) sessions against a `speech serve` in its own process.

This process is the client: it starts the server as a subprocess on loopback, then for each N runs N session
loops for ``seconds``. An ASR loop connects once, then streams one real utterance after another at the pace
of real time in ``frame_ms`` PCM16 frames (loops start at random offsets, as real users do) and ends each
with ``end``. A VC loop (``task="vc"``) is one live conversion: a reference recording, then real utterances
back to back for ``seconds``, each frame sent when its last sample would have left a microphone; its audio
lag is, for every converted frame received, the time it arrived minus the time its last sample stands for
(mouth to ear, less the sound cards). Measured per N:

- final-result latency: the client sending ``end`` after the utterance's last audio to receiving ``done``
  (the finals come just before it): p50/p95/p99;
- deadline misses: the share of model chunks whose results were ready later than one chunk after their
  audio arrived at the server (the server's ``speech_chunk_deadline_misses`` over ``speech_chunks``);
- the server's CPU use (cores busy) and memory (peak RSS), from ``psutil``;
- the client's own pacing lag (p99), so an overloaded client is not mistaken for a slow server.

The largest N with at most ``max_miss`` deadline misses is the answer the issue asks for.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import psutil
import yaml

from ..client import SpeechClient
from ..corpus.real import live_speech
from .report import table, write_json


@dataclass(frozen=True)
class ServeBenchConfig:
    sessions: tuple[int, ...] = (16, 24, 32, 40, 48)
    seconds: float = 30.0
    lookahead_ms: float = 80.0
    frame_ms: float = 40.0
    max_wait_ms: float = 20.0
    max_miss: float = 0.01
    utterances: int = 60
    threads: int | None = None
    backends: tuple[str, ...] = ("onnx", "torch")  # each gets its own server, one after the other
    precision: str = "fp32"
    models: list = field(default_factory=list)  # the server's models (default: the shipped FastConformer)
    task: str = "asr"  # or "vc": the shipped VC model, 1 solver step


def fastconformer_model(cfg: ServeBenchConfig, backend: str) -> dict:
    return {"name": "fastconformer", "family": "fastconformer", "default_lookahead_ms": cfg.lookahead_ms,
            "max_wait_ms": cfg.max_wait_ms, "max_streams": max(cfg.sessions), "max_batch": max(cfg.sessions),
            "backend": backend, **({"precision": cfg.precision} if backend == "onnx" else {})}


def vc_model(cfg: ServeBenchConfig, backend: str) -> dict:
    return {"name": "vc", "family": "vc", "steps": 1, "max_wait_ms": cfg.max_wait_ms, "max_streams": max(cfg.sessions),
            "max_batch": max(cfg.sessions), "backend": backend,
            **({"precision": cfg.precision} if backend == "onnx" else {})}


class ServerProcess:
    """`speech serve` in a subprocess on a free loopback port."""

    def __init__(self, cfg: ServeBenchConfig, backend: str) -> None:
        models = cfg.models or [vc_model(cfg, backend) if cfg.task == "vc" else fastconformer_model(cfg, backend)]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
            yaml.safe_dump({"port": 0, "max_sessions": max(cfg.sessions), "models": models,
                            **({"threads": cfg.threads} if cfg.threads else {})}, config)
        self.config_path = config.name
        command = [sys.executable, "-c", "import sys; from speech.cli import main; sys.exit(main(sys.argv[1:]))",
                   "serve", "--config", self.config_path, "--quiet"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline()
        found = re.search(r"page (http://\S+)\s+WebSocket (ws://\S+)", line)
        if not found:
            self.process.kill()
            raise RuntimeError(f"the server did not start: {line!r}")
        self.url, self.ws_url = found.group(1), found.group(2)
        self.ps = psutil.Process(self.process.pid)

    def metrics(self) -> dict[str, float]:
        """Sums of the server's chunk and deadline-miss counters over its lanes."""
        import urllib.request

        text = urllib.request.urlopen(self.url + "metrics", timeout=10).read().decode()
        totals = {}
        for name, key in (("speech_chunks_total", "chunks"), ("speech_chunk_deadline_misses_total", "misses"),
                          ("speech_lane_batches_total", "batches"), ("speech_lane_chunks_total", "lane_chunks")):
            totals[key] = sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE))
        return totals

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.unlink(self.config_path)


async def _session_loop(url: str, audios: list[np.ndarray], seconds: float, frame_ms: float, seed: int,
                        lookahead_ms: float, finals: list[float], lags: list[float], counts: dict) -> None:
    rng = np.random.default_rng(seed)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    await asyncio.sleep(rng.uniform(0, 1.0))  # users do not start in step
    frame = round(frame_ms * 16)
    async with await SpeechClient.connect(url) as client:
        while loop.time() < stop_at:
            audio = audios[int(rng.integers(len(audios)))]
            await client.start(sample_rate=16000, lookahead_ms=lookahead_ms)

            async def receive() -> None:
                while (message := await client.receive())["type"] != "done":
                    if message["type"] == "error":
                        raise RuntimeError(f"{message['code']}: {message['message']}")

            receiver = asyncio.create_task(receive())
            start = loop.time()
            for i, at in enumerate(range(0, len(audio), frame)):
                due = start + i * frame_ms / 1000
                await asyncio.sleep(max(0.0, due - loop.time()))
                lags.append(loop.time() - due)
                await client.send_audio(audio[at : at + frame])
            ended = loop.time()
            await client.send({"type": "end"})
            await receiver
            finals.append(loop.time() - ended)
            counts["utterances"] += 1


async def _vc_session_loop(url: str, audios: list[np.ndarray], seconds: float, frame_ms: float, seed: int,
                           finals: list[float], lags: list[float], counts: dict, audio_lags: list[float]) -> None:
    rng = np.random.default_rng(seed)
    loop = asyncio.get_running_loop()
    await asyncio.sleep(rng.uniform(0, 1.0))
    order = rng.permutation(len(audios))
    reference = np.concatenate([audios[i] for i in order[:3]])  # another speaker's few seconds
    source, at = [], 0
    while at < seconds * 16000:
        source.append(audios[order[3 + len(source) % (len(audios) - 3)]])
        at += len(source[-1])
    source = np.concatenate(source)[: int(seconds * 16000)]
    frame = round(frame_ms * 16)
    async with await SpeechClient.connect(url) as client:
        await client.start("vc", sample_rate=16000)
        await client.send_reference(reference, 16000)
        start, received = loop.time(), 0

        async def receive() -> None:
            nonlocal received
            while (message := await client.receive())["type"] != "done":
                if message["type"] == "error":
                    raise RuntimeError(f"{message['code']}: {message['message']}")
                if message["type"] == "audio":
                    received += len(message["data"]) // 2
                    audio_lags.append(loop.time() - (start + received / 16000))

        receiver = asyncio.create_task(receive())
        for i, at in enumerate(range(0, len(source), frame)):
            due = start + (i + 1) * frame_ms / 1000  # when a microphone would have it all
            await asyncio.sleep(max(0.0, due - loop.time()))
            lags.append(loop.time() - due)
            await client.send_audio(source[at : at + frame])
        ended = loop.time()
        await client.send({"type": "end"})
        await receiver
        finals.append(loop.time() - ended)
        counts["utterances"] += 1


async def _level(server: ServerProcess, audios: list[np.ndarray], n: int, cfg: ServeBenchConfig, backend: str) -> dict:
    finals: list[float] = []
    lags: list[float] = []
    audio_lags: list[float] = []
    counts = {"utterances": 0}
    before, cpu_before, wall = server.metrics(), server.ps.cpu_times(), time.perf_counter()
    peak = server.ps.memory_info().rss

    async def sample_memory() -> None:
        nonlocal peak
        while True:
            peak = max(peak, server.ps.memory_info().rss)
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample_memory())
    if cfg.task == "vc":
        await asyncio.gather(*(_vc_session_loop(server.ws_url, audios, cfg.seconds, cfg.frame_ms, seed, finals, lags,
                                                counts, audio_lags) for seed in range(n)))
    else:
        await asyncio.gather(*(_session_loop(server.ws_url, audios, cfg.seconds, cfg.frame_ms, seed, cfg.lookahead_ms,
                                             finals, lags, counts) for seed in range(n)))
    sampler.cancel()
    wall = time.perf_counter() - wall
    after, cpu_after = server.metrics(), server.ps.cpu_times()
    chunks = after["chunks"] - before["chunks"]
    misses = after["misses"] - before["misses"]
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / wall
    ms = np.asarray(finals) * 1000
    return {"backend": backend, "sessions": n, "utterances": counts["utterances"], "chunks": int(chunks),
            "final_p50_ms": float(np.percentile(ms, 50)), "final_p95_ms": float(np.percentile(ms, 95)),
            "final_p99_ms": float(np.percentile(ms, 99)), "deadline_miss": misses / max(chunks, 1),
            "server_cpu_cores": cpu, "server_cpu_share": cpu / psutil.cpu_count(),
            "server_peak_rss_mb": peak / 2**20,
            "mean_batch": (after["lane_chunks"] - before["lane_chunks"]) / max(after["batches"] - before["batches"], 1),
            "client_lag_p99_ms": float(np.percentile(lags, 99) * 1000),
            **({f"audio_lag_{q}_ms": float(np.percentile(audio_lags, q) * 1000) for q in (50, 95, 99)}
               if audio_lags else {})}


def main(cfg: ServeBenchConfig, json_path: str) -> int:
    try:
        source, named = live_speech(cfg.utterances)
    except FileNotFoundError as missing:
        raise RuntimeError(str(missing)) from None
    audios = [audio for _, audio in named]
    rows = []
    for backend in cfg.backends:
        server = ServerProcess(cfg, backend)
        try:
            rows += [asyncio.run(_level(server, audios, n, cfg, backend)) for n in cfg.sessions]
        finally:
            server.stop()
    headers = ["backend", "sessions", "utterances" if cfg.task == "asr" else "conversions", "final p50 ms", "p95 ms",
               "p99 ms", "deadline miss %", "mean batch", "server CPU cores", "peak RSS MB", "client lag p99 ms"]
    lag = ["audio lag p50 ms", "p95 ms", "p99 ms"] if cfg.task == "vc" else []
    print(table(headers + lag, [[r["backend"], r["sessions"], r["utterances"], r["final_p50_ms"], r["final_p95_ms"],
                                 r["final_p99_ms"], 100 * r["deadline_miss"], r["mean_batch"], r["server_cpu_cores"],
                                 r["server_peak_rss_mb"], r["client_lag_p99_ms"],
                                 *[r[f"audio_lag_{q}_ms"] for q in (50, 95, 99) if lag]] for r in rows]))
    best = {}
    for backend in cfg.backends:
        passing = [r["sessions"] for r in rows if r["backend"] == backend and r["deadline_miss"] <= cfg.max_miss]
        best[backend] = max(passing) if passing else None
        setting = f"{cfg.lookahead_ms:g} ms lookahead" if cfg.task == "asr" else "VC, 1 solver step, 70 ms chunks"
        print(f"\n{backend}: largest N with <= {100 * cfg.max_miss:g}% deadline misses: {best[backend]} "
              f"({setting}, {source}, {os.cpu_count()} cores)", end="")
    print()
    path = write_json(json_path, "serve", {**asdict(cfg), "audio": source},
                      {"levels": rows, "largest_n_within_miss_budget": best})
    print(f"wrote {path}")
    return 0
