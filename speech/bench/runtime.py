"""`speech bench runtime`: what the chunk scheduler costs on top of the steps it runs.

N streams push chunks of the reference step through one lane as fast as backpressure lets them. The same
batches (same sizes, same counts) are then run by calling the backend directly, and

    scheduler overhead = (wall time through the scheduler - time of the direct calls) / time of the direct calls.

The two runs alternate ``repeats`` times; each pair gives one overhead figure and the median is reported
(pairing cancels the slow drifts of a shared machine). The in-run overhead needs no second run: the lane's
time over the time of its own step calls, measured inside the same run (steady on a noisy machine). Both run on the same
thread: the event loop's (``--executor inline``, the default) or one step thread (``--executor thread``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch

from streaming import ChunkScheduler, TorchBackend
from streaming.reference import ReferenceStep

from .report import table, write_json


@dataclass(frozen=True)
class RuntimeBenchConfig:
    streams: int = 32
    chunks: int = 40
    chunk_frames: int = 64
    channels: int = 512
    layers: int = 8
    groups: int = 1
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_pending: int = 4
    device: str = "cpu"
    dtype: str = "fp32"
    executor: str = "inline"
    repeats: int = 7


async def _through_scheduler(cfg: RuntimeBenchConfig, step, backend, chunks, executor: Executor | None):
    async with ChunkScheduler(backend, executor=executor) as scheduler:
        lane = scheduler.add_lane(
            "reference", step, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms, max_streams=cfg.streams
        )
        streams = [scheduler.open_stream("reference", max_pending=cfg.max_pending) for _ in range(cfg.streams)]

        async def produce(stream):
            for chunk in chunks:
                await stream.push({"x": chunk})
            await stream.close()

        async def consume(stream):
            async for _ in stream:
                pass

        start = time.perf_counter()
        await asyncio.gather(*(produce(s) for s in streams), *(consume(s) for s in streams))
        backend.synchronize()
        return time.perf_counter() - start, lane.stats


def _direct(step, backend: TorchBackend, batch_sizes: Counter, cfg: RuntimeBenchConfig, executor) -> float:
    """The same number of batches of the same sizes, called straight on the backend, where steps run."""
    if executor is None:
        return _direct_here(step, backend, batch_sizes, cfg)
    return executor.submit(_direct_here, step, backend, batch_sizes, cfg).result()


def _direct_here(step, backend: TorchBackend, batch_sizes: Counter, cfg: RuntimeBenchConfig) -> float:
    # Each call gets fresh input data, made just before it (outside the timing), as a direct caller would
    # have it; the state is chained from call to call. Only the step calls are timed.
    total = 0.0
    for size, count in batch_sizes.items():
        state = {k: v.to(backend.device, backend.dtype) for k, v in step.initial_state(size).items()}
        for call in range(count + 1):  # call 0 warms the shapes and is not counted
            batch = {"x": torch.randn(size, cfg.chunk_frames, cfg.channels, device=backend.device)}
            backend.synchronize()
            start = time.perf_counter()
            _, state = backend.run(step, batch, state)
            backend.synchronize()
            total += (time.perf_counter() - start) if call else 0.0
    return total


def run(cfg: RuntimeBenchConfig) -> dict:
    if cfg.executor not in ("inline", "thread"):
        raise ValueError(f"executor is 'inline' or 'thread', got {cfg.executor!r}")
    executor = ThreadPoolExecutor(1, thread_name_prefix="steps") if cfg.executor == "thread" else None
    backend = TorchBackend(cfg.device, cfg.dtype)
    step = backend.prepare(ReferenceStep(channels=cfg.channels, layers=cfg.layers, groups=cfg.groups))
    chunks = [torch.randn(cfg.chunk_frames, cfg.channels) for _ in range(cfg.chunks)]
    step_ms = 1000 * _direct(step, backend, Counter({cfg.max_batch: 20}), cfg, executor) / 20
    scheduled, busy, in_run, direct, latencies, sizes = [], [], [], [], [], Counter()
    for _ in range(cfg.repeats):
        wall, stats = asyncio.run(_through_scheduler(cfg, step, backend, chunks, executor))
        scheduled.append(wall)
        busy.append(stats.busy_seconds)
        in_run.append((stats.busy_seconds - stats.step_seconds) / stats.step_seconds)
        direct.append(_direct(step, backend, stats.batch_sizes, cfg, executor))
        latencies.extend(stats.latencies)
        sizes = stats.batch_sizes
    wall, steps, lane = statistics.median(scheduled), statistics.median(direct), statistics.median(busy)
    if executor is not None:
        executor.shutdown()
    total_chunks = cfg.streams * cfg.chunks
    batches = sum(sizes.values())
    lat_ms = 1000 * np.asarray(latencies)
    return {
        "step_ms_at_max_batch": step_ms,
        "scheduled_s": wall,
        "direct_s": steps,
        "lane_busy_s": lane if executor is None else None,
        "scheduler_overhead": statistics.median((b - d) / d for b, d in zip(busy, direct)) if executor is None else None,
        "scheduler_overheads": [(b - d) / d for b, d in zip(busy, direct)] if executor is None else None,
        # On CUDA a step call returns once its kernels are queued, so only the paired figure means anything.
        "in_run_overhead": statistics.median(in_run) if executor is None and backend.device.type == "cpu" else None,
        "end_to_end_overhead": statistics.median((s - d) / d for s, d in zip(scheduled, direct)),
        "end_to_end_overheads": [(s - d) / d for s, d in zip(scheduled, direct)],
        "end_to_end_us_per_chunk": 1e6 * statistics.median(s - d for s, d in zip(scheduled, direct)) / total_chunks,
        "throughput_chunks_per_s": total_chunks / wall,
        "latency_ms": {f"p{q}": float(np.percentile(lat_ms, q)) for q in (50, 95, 99)},
        "mean_batch": sum(k * v for k, v in sizes.items()) / batches,
        "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def main(cfg: RuntimeBenchConfig, json_path: str) -> dict:
    results = run(cfg)
    print(f"speech bench runtime: {cfg.streams} streams x {cfg.chunks} chunks of {cfg.chunk_frames} frames, "
          f"reference step {cfg.layers}x{cfg.channels} (groups {cfg.groups}) on {cfg.device}/{cfg.dtype}, "
          f"max_batch {cfg.max_batch}, steps {cfg.executor}")
    lat = results["latency_ms"]
    print(table(
        ["step ms @B", "mean batch", "chunks/s", "p50 ms", "p95 ms", "p99 ms", "steps s", "lane s", "wall s",
         "scheduler overhead", "in-run", "end-to-end", "e2e us/chunk"],
        [[results["step_ms_at_max_batch"], results["mean_batch"], results["throughput_chunks_per_s"],
          lat["p50"], lat["p95"], lat["p99"], results["direct_s"], results["lane_busy_s"] or "-",
          results["scheduled_s"], _percent(results["scheduler_overhead"]), _percent(results["in_run_overhead"]),
          _percent(results["end_to_end_overhead"]), results["end_to_end_us_per_chunk"]]],
    ))
    print("scheduler overhead = (lane time - direct step time) / direct step time, paired runs; in-run = lane "
          "time over its own step calls in the same run; end-to-end adds the asyncio clients (one producer and "
          "one consumer task per stream) on the same event loop.")
    print(f"wrote {write_json(json_path, 'runtime', asdict(cfg), results)}")
    return results
