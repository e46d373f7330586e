"""ChunkScheduler: isolation, bitwise equality with solo runs, backpressure, cancellation, EDF, pipelines."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from streaming.backend import TorchBackend
from streaming.contract import InvalidChunk, Tensors
from streaming.pool import PoolFull
from streaming.reference import ReferenceStep
from streaming.scheduler import ChunkScheduler, Stage, StreamClosed, StreamFailed

CHANNELS = 32
POISON = 1234.5


class FragileStep(ReferenceStep):
    """The reference step, failing inside the model for a chunk that carries a poison value.

    Stands for a model-level error that input validation cannot see (say, a token id out of range).
    """

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        if bool((inputs["x"] == POISON).any()):
            raise ValueError("poisoned chunk")
        return super().step(inputs, state)


def make_chunks(seed: int, n_chunks: int, max_len: int = 24) -> list[torch.Tensor]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(rng.randint(1, max_len), CHANNELS, generator=gen) for _ in range(n_chunks)]


async def drive(scheduler: ChunkScheduler, target: str, chunks, *, seed: int, max_pending: int = 3):
    """Producer with random arrival times and a consumer, like a client; returns the outputs in order."""
    rng = random.Random(seed)
    await asyncio.sleep(rng.uniform(0, 0.02))  # streams join at different times
    stream = scheduler.open_stream(target, max_pending=max_pending)

    async def produce():
        try:
            for chunk in chunks:
                await asyncio.sleep(rng.uniform(0, 0.003))
                await stream.push({"x": chunk})
        except Exception:
            stream.cancel()  # a client that gives up on its stream
            raise
        await stream.close()

    producer = asyncio.create_task(produce())
    try:
        outputs = [out["y"].clone() async for out in stream]
    except BaseException:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        raise
    await producer
    return outputs


async def solo(chunks, step) -> list[torch.Tensor]:
    async with ChunkScheduler(TorchBackend()) as scheduler:
        scheduler.add_lane("lane", step, max_batch=1, max_wait_ms=0)
        return await drive(scheduler, "lane", chunks, seed=0)


def test_64_streams_match_solo_runs_and_one_bad_stream_fails_alone():
    step = FragileStep(channels=CHANNELS, layers=3)
    chunks = {i: make_chunks(i, n_chunks=random.Random(i).randint(5, 25)) for i in range(64)}
    malformed, poisoned = 7, 42
    chunks[malformed][3] = torch.randn(5, CHANNELS + 1)
    chunks[poisoned][4] = chunks[poisoned][4].clone()
    chunks[poisoned][4][0, 0] = POISON

    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            lane = scheduler.add_lane("lane", step, max_batch=16, max_wait_ms=1.0)
            results = await asyncio.gather(
                *(drive(scheduler, "lane", chunks[i], seed=i) for i in range(64)), return_exceptions=True
            )
            return results, lane

    results, lane = asyncio.run(main())
    assert isinstance(results[malformed], InvalidChunk)
    assert "[5, 33]" in str(results[malformed]) and "x: [*, 32] float32" in str(results[malformed])
    assert isinstance(results[poisoned], StreamFailed)
    assert "poisoned chunk" in str(results[poisoned])
    assert lane.stats.failed_runs >= 1
    assert max(lane.stats.batch_sizes) > 1, "the scheduler never batched streams together"
    assert lane.pool.in_use == 0, "slots leaked"
    for i in set(range(64)) - {malformed, poisoned}:
        alone = asyncio.run(solo(chunks[i], step))
        assert len(results[i]) == len(alone) == len(chunks[i])
        for got, want in zip(results[i], alone):
            assert torch.equal(got, want), f"stream {i} differs from its solo run"


def test_streaming_through_scheduler_equals_offline():
    step = ReferenceStep(channels=CHANNELS, layers=3)
    chunks = make_chunks(3, 12)
    outputs = asyncio.run(solo(chunks, step))
    offline = step.offline(torch.cat(chunks)[None])[0]
    torch.testing.assert_close(torch.cat(outputs), offline, atol=1e-5, rtol=0)


def test_pool_exhaustion_is_a_clear_error_and_recovers():
    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            scheduler.add_lane("a", ReferenceStep(channels=CHANNELS), max_streams=3)
            scheduler.add_lane("b", ReferenceStep(channels=CHANNELS), max_streams=1)
            scheduler.add_pipeline("ab", ["a", Stage("b", adapt=lambda out: {"x": out["y"]})])
            first = scheduler.open_stream("ab")
            with pytest.raises(PoolFull, match="all 1 stream slots are in use"):
                scheduler.open_stream("ab")
            assert scheduler.lanes["a"].pool.in_use == 1, "a failed open must give back the slots it took"
            await first.close()
            second = scheduler.open_stream("ab")
            out = await second.process({"x": torch.zeros(4, CHANNELS)})
            assert out["y"].shape == (4, CHANNELS)
            await second.close()

    asyncio.run(main())


def test_cancel_drops_queued_chunks_frees_slot_and_spares_others():
    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            lane = scheduler.add_lane("lane", ReferenceStep(channels=CHANNELS), max_batch=4)
            doomed = scheduler.open_stream("lane", max_pending=8)
            for chunk in make_chunks(1, 8):
                await doomed.push({"x": chunk})
            doomed.cancel()
            with pytest.raises(StreamClosed):
                await doomed.push({"x": torch.zeros(2, CHANNELS)})
            drained = [out async for out in doomed]
            assert len(drained) < 8
            survivor_chunks = make_chunks(2, 6)
            survivor = await drive(scheduler, "lane", survivor_chunks, seed=2)
            await asyncio.sleep(0.01)
            assert lane.pool.in_use == 0
            return survivor, survivor_chunks

    survivor, chunks = asyncio.run(main())
    assert all(torch.equal(a, b) for a, b in zip(survivor, asyncio.run(solo(chunks, ReferenceStep(channels=CHANNELS)))))


def test_cancel_wakes_a_producer_blocked_by_backpressure():
    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            scheduler.add_lane("lane", ReferenceStep(channels=CHANNELS))
            stream = scheduler.open_stream("lane", max_pending=2)
            for chunk in make_chunks(5, 2):
                await stream.push({"x": chunk})
            blocked = asyncio.create_task(stream.push({"x": torch.zeros(3, CHANNELS)}))
            await asyncio.sleep(0.05)
            assert not blocked.done(), "a third chunk must wait while two are untaken (max_pending=2)"
            await stream.get()
            await asyncio.wait_for(blocked, 1.0)  # taking one output lets the producer go on
            late = asyncio.create_task(stream.push({"x": torch.zeros(3, CHANNELS)}))
            await asyncio.sleep(0.05)
            assert not late.done()
            stream.cancel()
            with pytest.raises(StreamClosed):
                await asyncio.wait_for(late, 1.0)

    asyncio.run(main())


def test_batches_are_formed_earliest_deadline_first():
    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            scheduler.add_lane("lane", ReferenceStep(channels=CHANNELS), max_batch=1, max_wait_ms=0)
            streams = [scheduler.open_stream("lane") for _ in range(5)]
            now = asyncio.get_running_loop().time()
            deadlines = [now + d for d in (0.5, 0.1, 0.4, 0.2, 0.3)]
            order: list[int] = []

            async def wait(i):
                await streams[i].get()
                order.append(i)

            waiters = [asyncio.create_task(wait(i)) for i in range(5)]
            for stream, deadline in zip(streams, deadlines):  # no await yields in between: all ready at once
                await stream.push({"x": torch.zeros(2, CHANNELS)}, deadline=deadline)
            await asyncio.gather(*waiters)
            return order

    assert asyncio.run(main()) == [1, 3, 4, 2, 0]


def test_max_wait_bounds_the_wait_for_a_full_batch():
    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            scheduler.add_lane("lane", ReferenceStep(channels=CHANNELS), max_batch=8, max_wait_ms=30)
            idle = scheduler.open_stream("lane")  # joined but silent: the lane cannot wait for it forever
            busy = scheduler.open_stream("lane")
            loop = asyncio.get_running_loop()
            start = loop.time()
            await busy.process({"x": torch.zeros(2, CHANNELS)})
            waited = loop.time() - start
            await idle.close()
            await busy.close()
            return waited

    waited = asyncio.run(main())
    assert 0.025 <= waited < 1.0


def test_pipeline_chains_lanes_in_order():
    first, second = ReferenceStep(channels=CHANNELS, seed=1), ReferenceStep(channels=CHANNELS, seed=2)
    chunks = make_chunks(9, 10)

    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            scheduler.add_lane("first", first)
            scheduler.add_lane("second", second)
            scheduler.add_pipeline("both", [Stage("first"), Stage("second", adapt=lambda out: {"x": out["y"] * 0.5})])
            results = await asyncio.gather(*(drive(scheduler, "both", chunks, seed=s) for s in range(4)))
            return results

    results = asyncio.run(main())
    offline = second.offline(0.5 * first.offline(torch.cat(chunks)[None]))[0]
    for outputs in results:
        torch.testing.assert_close(torch.cat(outputs), offline, atol=1e-5, rtol=0)


def test_a_bad_hand_over_between_lanes_fails_that_stream_with_a_clear_error():
    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            scheduler.add_lane("a", ReferenceStep(channels=CHANNELS))
            scheduler.add_lane("b", ReferenceStep(channels=CHANNELS))
            scheduler.add_pipeline("ab", ["a", "b"])  # "a" outputs "y", "b" wants "x"
            stream = scheduler.open_stream("ab")
            with pytest.raises(StreamFailed, match=r"chunk has inputs \['y'\], expected \['x'\]"):
                await stream.process({"x": torch.zeros(2, CHANNELS)})
            assert scheduler.lanes["a"].pool.in_use == 0 and scheduler.lanes["b"].pool.in_use == 0

    asyncio.run(main())


def test_unknown_targets_and_stopped_scheduler_are_reported():
    scheduler = ChunkScheduler(TorchBackend())
    scheduler.add_lane("lane", ReferenceStep(channels=CHANNELS))
    with pytest.raises(RuntimeError, match="not running"):
        scheduler.open_stream("lane")
    with pytest.raises(ValueError, match="unknown lanes"):
        scheduler.add_pipeline("p", ["nope"])

    async def main():
        async with scheduler:
            with pytest.raises(KeyError, match="no lane or pipeline 'missing'"):
                scheduler.open_stream("missing")
            stream = scheduler.open_stream("lane")
        with pytest.raises(StreamClosed):
            await stream.push({"x": torch.zeros(1, CHANNELS)})

    asyncio.run(main())


def test_pipeline_on_a_reduced_precision_backend_hands_over_between_lanes():
    async def main():
        async with ChunkScheduler(TorchBackend("cpu", "bf16")) as scheduler:
            scheduler.add_lane("a", ReferenceStep(channels=CHANNELS, seed=1))
            scheduler.add_lane("b", ReferenceStep(channels=CHANNELS, seed=2))
            scheduler.add_pipeline("ab", ["a", Stage("b", adapt=lambda out: {"x": out["y"]})])
            stream = scheduler.open_stream("ab")
            out = await stream.process({"x": torch.randn(4, CHANNELS)})
            await stream.close()
            return out["y"]

    assert asyncio.run(main()).dtype == torch.bfloat16


def test_scheduler_restarts_cleanly():
    scheduler = ChunkScheduler(TorchBackend())
    scheduler.add_lane("lane", ReferenceStep(channels=CHANNELS), depth=2)

    async def once():
        async with scheduler:
            stream = scheduler.open_stream("lane")
            out = await asyncio.wait_for(stream.process({"x": torch.zeros(2, CHANNELS)}), 5)
            await stream.close()
            return out

    for _ in range(4):
        assert asyncio.run(once())["y"].shape == (2, CHANNELS)


def test_a_dead_executor_fails_the_streams_instead_of_hanging():
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(1)

    async def main():
        async with ChunkScheduler(TorchBackend(), executor=executor) as scheduler:
            scheduler.add_lane("lane", ReferenceStep(channels=CHANNELS))
            stream = scheduler.open_stream("lane")
            executor.shutdown()
            with pytest.raises(StreamFailed, match="cannot schedule new futures"):
                await asyncio.wait_for(stream.process({"x": torch.zeros(2, CHANNELS)}), 5)
            assert scheduler.lanes["lane"].pool.in_use == 0

    asyncio.run(main())


def test_without_deadlines_chunks_are_served_first_come_first_served():
    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            scheduler.add_lane("lane", ReferenceStep(channels=CHANNELS), max_batch=1, max_wait_ms=0)
            old = scheduler.open_stream("lane", max_pending=8)
            for _ in range(5):  # the old stream has a history
                await old.process({"x": torch.zeros(2, CHANNELS)})
            new = scheduler.open_stream("lane", max_pending=8)
            order: list[str] = []

            async def take(stream, name):
                for _ in range(3):
                    await stream.get()
                    order.append(name)

            waiters = [asyncio.create_task(take(old, "old")), asyncio.create_task(take(new, "new"))]
            for _ in range(3):
                await old.push({"x": torch.zeros(2, CHANNELS)})
            for _ in range(3):
                await new.push({"x": torch.zeros(2, CHANNELS)})
            await asyncio.gather(*waiters)
            return order

    assert asyncio.run(main()) == ["old"] * 3 + ["new"] * 3


def test_one_step_module_can_serve_lanes_of_different_precision():
    step = ReferenceStep(channels=CHANNELS).eval()

    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            scheduler.add_lane("fp32", step)
            scheduler.add_lane("bf16", step, backend=TorchBackend("cpu", "bf16"))
            a, b = scheduler.open_stream("fp32"), scheduler.open_stream("bf16")
            x = {"x": torch.randn(3, CHANNELS)}
            return (await a.process(x))["y"], (await b.process(x))["y"]

    full, reduced = asyncio.run(main())
    assert full.dtype == torch.float32 and reduced.dtype == torch.bfloat16
    assert next(step.parameters()).dtype == torch.float32, "the caller's module was changed"


def test_deadline_misses_are_counted_and_budgets_set_deadlines():
    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            lane = scheduler.add_lane("lane", ReferenceStep(channels=CHANNELS))
            late = scheduler.open_stream("lane")
            past = asyncio.get_running_loop().time() - 1.0
            await late.process({"x": torch.zeros(2, CHANNELS)}, deadline=past)
            relaxed = scheduler.open_stream("lane", budget_ms=60_000)
            await relaxed.process({"x": torch.zeros(2, CHANNELS)})
            hopeless = scheduler.open_stream("lane", budget_ms=0, max_pending=4)
            await hopeless.process({"x": torch.zeros(2, CHANNELS)})
            assert scheduler.open_streams == 3 and lane.streams == 3
            await hopeless.push({"x": torch.zeros(2, CHANNELS)})
            assert lane.queue_depth == 1  # queued until the lane's task runs
            await hopeless.get()
            assert lane.queue_depth == 0
            for stream in (late, relaxed, hopeless):
                await stream.close()
            assert scheduler.open_streams == 0 and lane.streams == 0
            return lane.stats

    stats = asyncio.run(main())
    assert stats.deadline_misses == 3 and stats.chunks == 4
    assert len(stats.latencies) == 4 and all(latency >= 0 for latency in stats.latencies)
    assert 0 < stats.step_seconds <= stats.run_seconds <= stats.busy_seconds


class ViewRecordingStep(ReferenceStep):
    """The reference step, noting whether each batch's state is a view of the pool or a gathered copy."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.views: list[bool] = []

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        self.views.append(state["conv0"]._is_view())
        return super().step(inputs, state)


def test_a_views_only_lane_never_copies_state_and_still_batches():
    """Streams whose slots are not consecutive run as runs of consecutive slots: every state a step sees is
    a view of the pool, outputs equal solo runs, and streams are still batched."""
    step = ViewRecordingStep(channels=CHANNELS, layers=2).eval()  # eval: the lane shares it, not a copy
    chunks = {i: make_chunks(100 + i, n_chunks=random.Random(i).randint(4, 12)) for i in range(12)}

    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            lane = scheduler.add_lane("lane", step, max_batch=12, max_wait_ms=1.0, views_only=True)
            results = await asyncio.gather(*(drive(scheduler, "lane", chunks[i], seed=i) for i in range(12)))
            return results, lane

    results, lane = asyncio.run(main())
    assert step.views and all(step.views), "a views-only lane gathered a copy of the state"
    assert max(lane.stats.batch_sizes) > 1
    plain = ReferenceStep(channels=CHANNELS, layers=2)
    for i, outputs in enumerate(results):
        for got, want in zip(outputs, asyncio.run(solo(chunks[i], plain)), strict=True):
            assert torch.equal(got, want), f"stream {i} differs from its solo run"


class ThreadRecordingStep(ReferenceStep):
    """The reference step, noting which thread runs each batch."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threads: set[str] = set()

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        import threading

        self.threads.add(threading.current_thread().name)
        return super().step(inputs, state)


def test_a_lane_can_have_its_own_step_thread_beside_inline_lanes():
    """A lane given an executor runs there (ONNX Runtime lanes in the server); the scheduler's other lanes stay
    inline on the event loop; a pipeline across both equals the offline run."""
    from concurrent.futures import ThreadPoolExecutor

    first = ThreadRecordingStep(channels=CHANNELS, seed=1).eval()
    second = ThreadRecordingStep(channels=CHANNELS, seed=2).eval()
    chunks = make_chunks(11, 12)

    async def main():
        with ThreadPoolExecutor(1, thread_name_prefix="own-steps") as own:
            async with ChunkScheduler(TorchBackend()) as scheduler:
                scheduler.add_lane("first", first, executor=own)
                scheduler.add_lane("second", second)
                scheduler.add_pipeline("both", ["first", Stage("second", adapt=lambda out: {"x": out["y"]})])
                return await asyncio.gather(*(drive(scheduler, "both", chunks, seed=s) for s in range(6)))

    results = asyncio.run(main())
    assert {name.split("_")[0] for name in first.threads} == {"own-steps"}
    assert second.threads == {"MainThread"}
    offline = second.offline(first.offline(torch.cat(chunks)[None]))[0]
    for outputs in results:
        torch.testing.assert_close(torch.cat(outputs), offline, atol=1e-4, rtol=0)  # DESIGN.md parity bound; float order differs by CPU


def test_a_stream_can_start_from_a_given_state_and_its_slot_is_fresh_again_after():
    """A stream opened with ``initial_states`` continues exactly where a stream holding that state would (what
    a VC session's voice prompt needs); other streams, and the slot's next user, start from ``init``."""
    from streaming.inline import InlineSteps

    step = ReferenceStep(channels=CHANNELS, layers=3)
    chunks = make_chunks(11, 10)
    inline = InlineSteps({"lane": step}, TorchBackend())
    head = [inline("lane", {"x": c})["y"] for c in chunks[:4]]
    resumed_from = {name: value[0].clone() for name, value in inline.states["lane"].items()}
    tail_inline = [inline("lane", {"x": c})["y"] for c in chunks[4:]]

    restarted = InlineSteps({"lane": step}, TorchBackend(), start_from={"lane": resumed_from})
    for got, want in zip([restarted("lane", {"x": c})["y"] for c in chunks[4:]], tail_inline):
        assert torch.equal(got, want)

    async def main():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            lane = scheduler.add_lane("lane", step, max_batch=4, max_streams=2)
            with pytest.raises(ValueError, match="no state 'nope'"):
                scheduler.open_stream("lane", initial_states={"lane": {"nope": torch.zeros(1)}})
            name, value = next(iter(resumed_from.items()))
            with pytest.raises(ValueError, match="expected one stream's"):
                scheduler.open_stream("lane", initial_states={"lane": {name: value[None]}})
            assert lane.pool.in_use == 0, "a refused start must not keep a slot"
            resumed = scheduler.open_stream("lane", initial_states={"lane": resumed_from})
            fresh = scheduler.open_stream("lane")
            tail = [(await resumed.process({"x": c}))["y"].clone() for c in chunks[4:]]
            again = [(await fresh.process({"x": c}))["y"].clone() for c in chunks[:4]]
            await resumed.close()
            reused = scheduler.open_stream("lane")  # the resumed stream's slot, wiped
            first = [(await reused.process({"x": c}))["y"].clone() for c in chunks[:4]]
            return tail, again, first

    tail, again, first = asyncio.run(main())
    for got, want in zip(tail, tail_inline):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    for got, want in zip(again + first, head + head):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
