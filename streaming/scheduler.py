"""The chunk scheduler: one lane per step function, continuous batching across streams (DESIGN.md section 3).

Streams push chunks with deadlines. A lane forms a batch from the streams that have a chunk ready,
earliest deadline first, up to ``max_batch``, waiting at most ``max_wait_ms`` for the batch to fill; it
gathers their slots, runs the backend in a worker thread, scatters the next state and hands each stream
its output. Lanes chain into pipelines. The scheduler knows nothing of any model.

Failure isolation: a chunk that does not match the step is refused at ``push`` (nothing is consumed); an
exception raised while a batch runs is narrowed down by re-running its members one by one, so only the
streams whose own chunk fails are failed, and nobody's state is touched by a failed run.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Self

import torch

from .backend import Backend
from .contract import StepFunction, StepSignature, Tensors, validate_chunk
from .inline import Requests, Result, drive_async
from .pool import PoolFull, SlotPool

Adapter = Callable[[Tensors], Tensors]


class StreamFailed(RuntimeError):
    """The stream ended with an error; ``__cause__`` holds what went wrong."""


class StreamClosed(RuntimeError):
    """The stream was closed or cancelled and takes no more chunks."""


@dataclass
class LaneStats:
    """What a lane has done; latencies are seconds from ``push`` to the lane's output.

    ``step_seconds``: the backend's step calls alone. ``run_seconds``: gather + step + scatter.
    ``busy_seconds`` (steps run inline only): the lane's whole work per batch, from choosing its chunks
    to handing out its outputs.
    """

    batches: int = 0
    chunks: int = 0
    deadline_misses: int = 0
    failed_runs: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    run_seconds: float = 0.0
    step_seconds: float = 0.0
    busy_seconds: float = 0.0
    latencies: deque = field(default_factory=lambda: deque(maxlen=200_000))



@dataclass(eq=False)
class _Request:
    stream: Stream
    inputs: Tensors
    key: tuple
    deadline: float
    seq: int
    born: float
    stage: int = 0


@dataclass(eq=False)
class _Member:
    """A stream's place in one lane: its slot and its queue of chunks waiting for this lane."""

    stream: Stream
    slot: int
    queue: deque = field(default_factory=deque)
    in_flight: int = 0
    leaving: bool = False


_ARRIVALS = itertools.count()  # one order for all streams: equal deadlines go first come, first served


def _shape_key(inputs: Tensors) -> tuple:
    return tuple((name, tuple(t.shape), t.dtype, t.device) for name, t in sorted(inputs.items()))


class Lane:
    """Batches the ready chunks of many streams through one step function.

    Where steps run: by default inline on the event-loop thread, one batch at a time, yielding to the
    loop between batches. With an ``executor`` (one thread), up to ``depth`` batches are queued on it,
    so host work overlaps device work; that pays off on CUDA. On CPU it does not for eager PyTorch, which
    takes the GIL back after every operator, so a step on another thread stalls whenever the event loop runs
    Python, and two threads calling torch get two OpenMP teams fighting for the same cores (both measured
    with ``speech bench runtime --executor thread``). ONNX Runtime holds no GIL for a whole step, so its
    lanes can gain from a step thread on CPU too (``speech bench serve --backend onnx``).
    """

    def __init__(
        self,
        name: str,
        step: StepFunction,
        backend: Backend,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        max_streams: int = 64,
        depth: int = 2,
        executor: Executor | None = None,
        views_only: bool = False,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0 or depth < 1:
            raise ValueError(f"lane {name!r}: max_batch and depth must be >= 1 and max_wait_ms >= 0")
        self.name = name
        self.backend = backend
        self.step = backend.prepare(step)
        self.signature: StepSignature = step.signature
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.executor = executor
        self.pool = self._on_step_thread(
            SlotPool, self.signature.states, max_streams, device=backend.device, dtype_of=backend.state_dtype, name=name
        )
        self.stats = LaneStats()
        self._step_seconds = 0.0  # of the batch being run, on the step thread
        self._members: set[_Member] = set()
        self._ready: set[_Member] = set()
        self._wake = asyncio.Event()
        self.depth = depth
        self.views_only = views_only
        self._depth = asyncio.Semaphore(depth)

    def _on_step_thread(self, fn, *args, **kwargs):
        """Run a tensor operation where the steps run, so only one thread ever calls torch."""
        return fn(*args, **kwargs) if self.executor is None else self.executor.submit(fn, *args, **kwargs).result()

    @property
    def queue_depth(self) -> int:
        return sum(len(m.queue) for m in self._members)

    @property
    def streams(self) -> int:
        return len(self._members)

    # membership -------------------------------------------------------------------------------------
    def join(self, stream: Stream, initial: Tensors | None = None) -> _Member:
        member = _Member(stream, self.pool.open(initial))
        self._members.add(member)
        return member

    def leave(self, member: _Member) -> None:
        """Release the slot now if idle, else as soon as its chunks in flight are done."""
        member.leaving = True
        member.queue.clear()
        self._ready.discard(member)
        self._release_if_idle(member)

    def _release_if_idle(self, member: _Member) -> None:
        if member.leaving and not member.in_flight and not member.queue and member in self._members:
            self._members.remove(member)
            self.pool.close(member.slot)
            self._wake.set()

    def enqueue(self, member: _Member, request: _Request) -> None:
        member.queue.append(request)
        self._ready.add(member)
        self._wake.set()

    # the loop ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """The lane's task; if it ever breaks, its streams fail rather than wait forever."""
        self._depth = asyncio.Semaphore(self.depth)  # asyncio primitives belong to one loop: fresh per start
        self._wake = asyncio.Event()
        try:
            await self._loop(asyncio.get_running_loop())
        except Exception as error:
            for member in list(self._members):
                member.stream._fail(error)
            raise

    async def _loop(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await self._depth.acquire()
            while not self._ready:
                self._wake.clear()
                await self._wake.wait()
            await self._fill(loop)
            if not self._ready:
                self._depth.release()
                continue
            started = time.perf_counter()
            members, requests = self._take()
            slots, inputs = [m.slot for m in members], [r.inputs for r in requests]
            if self.executor is None:
                self._finish(members, requests, self._run_batch(slots, inputs))
                self.stats.busy_seconds += time.perf_counter() - started
                await asyncio.sleep(0)  # let the streams push and take before the next batch
                continue
            try:
                future = loop.run_in_executor(self.executor, self._run_batch, slots, inputs)
            except Exception as error:  # noqa: BLE001 - e.g. the executor was shut down: fail, don't hang
                self._finish(members, requests, ([error] * len(requests), 0.0, 0.0, True))
                continue
            future.add_done_callback(partial(self._finish_future, members, requests))

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait up to ``max_wait`` for more streams to become ready, unless nobody else can."""
        until = loop.time() + self.max_wait
        while len(self._ready) < min(self.max_batch, len(self._members)):
            remaining = until - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> tuple[list[_Member], list[_Request]]:
        """Earliest deadline first; one chunk per stream; only chunks of the first one's shape.

        The chosen members are ordered by slot, so that gather and scatter are block copies."""
        ordered = sorted(self._ready, key=lambda m: (m.queue[0].deadline, m.queue[0].seq))
        key = ordered[0].queue[0].key
        chosen = [m for m in ordered if m.queue[0].key == key][: self.max_batch]
        members = sorted(chosen, key=lambda m: m.slot)
        requests = []
        for member in members:
            requests.append(member.queue.popleft())
            member.in_flight += 1
            if not member.queue:
                self._ready.discard(member)
        return members, requests

    # where the steps run -----------------------------------------------------------------------------
    def _step(self, slots: list[int], inputs: list[Tensors]) -> list[Tensors]:
        """With ``views_only``, a batch whose slots are not consecutive runs as one step per run of
        consecutive slots: each run's state is then a view of the pool, never a copy (for steps whose
        state is large caches, a copy costs more than batching saves)."""
        if not self.views_only:
            return self._step_block(slots, inputs)
        cuts = [0, *(i for i in range(1, len(slots)) if slots[i] != slots[i - 1] + 1), len(slots)]
        return [out for a, b in itertools.pairwise(cuts) for out in self._step_block(slots[a:b], inputs[a:b])]

    def _step_block(self, slots: list[int], inputs: list[Tensors]) -> list[Tensors]:
        """Gather, step, scatter; one output dict per stream. State is written only if all else worked."""
        index = self.pool.index(slots)
        batch = {name: torch.stack([x[name] for x in inputs]) for name in inputs[0]}
        state = self.pool.gather(index)
        started = time.perf_counter()
        outputs, state = self.backend.run(self.step, batch, state)
        self._step_seconds += time.perf_counter() - started
        outputs = self.pool.detach(outputs)
        per_stream = [{name: t[i] for name, t in outputs.items()} for i in range(len(slots))]
        self.pool.scatter(index, state)
        return per_stream

    def _run_batch(self, slots: list[int], inputs: list[Tensors]) -> tuple[list, float, float, bool]:
        """One result per stream: its outputs, or the exception its own chunk raised.

        If the batch fails, its members are re-run one by one right here, before any later batch, so
        the streams whose chunks are fine go on with correct state.
        """
        start, self._step_seconds = time.perf_counter(), 0.0
        try:
            results, failed = self._step(slots, inputs), False
        except Exception:  # noqa: BLE001 - narrowed down below
            failed, results = True, []
            for slot, chunk in zip(slots, inputs):
                try:
                    results.extend(self._step([slot], [chunk]))
                except Exception as error:  # noqa: BLE001 - this stream's own chunk fails it
                    results.append(error)
        return results, time.perf_counter() - start, self._step_seconds, failed

    # back on the event loop -------------------------------------------------------------------------
    def _finish_future(self, members: list[_Member], requests: list[_Request], future: asyncio.Future) -> None:
        try:
            outcome = future.result()
        except BaseException as error:  # noqa: BLE001 - the executor itself failed (e.g. shut down)
            outcome = [error] * len(requests), 0.0, 0.0, True
        self._finish(members, requests, outcome)

    def _finish(self, members: list[_Member], requests: list[_Request], outcome: tuple) -> None:
        self._depth.release()
        results, seconds, step_seconds, failed = outcome
        self.stats.step_seconds += step_seconds
        self.stats.batches += 1
        self.stats.chunks += len(requests)
        self.stats.batch_sizes[len(requests)] += 1
        self.stats.run_seconds += seconds
        self.stats.failed_runs += failed
        now = asyncio.get_running_loop().time()
        for member, request, result in zip(members, requests, results):
            member.in_flight -= 1
            if isinstance(result, BaseException):
                request.stream._fail(result)
            else:
                request.stream._advance(self, request, result, now)
            self._release_if_idle(member)


@dataclass(frozen=True)
class Stage:
    """One lane of a pipeline; ``adapt`` maps the previous stage's outputs to this lane's inputs."""

    lane: str
    adapt: Adapter | None = None


_END = object()


class Stream:
    """One client's sequence of chunks through a pipeline of lanes, in order, with bounded memory.

    ``push`` waits while ``max_pending`` chunks are pushed but not yet taken with ``get`` (backpressure:
    a producer faster than its consumer is slowed down, never buffered without bound).
    """

    def __init__(
        self,
        stream_id: int,
        stages: Sequence[tuple[Lane, Adapter | None]],
        *,
        max_pending: int,
        budget_s: float | None,
        on_finish: Callable[[Stream], None] = lambda stream: None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.id = stream_id
        self._stages = list(stages)
        self._members: list[_Member] = []
        self._max_pending = max_pending
        self._pending = asyncio.Semaphore(max_pending)
        self._outputs: asyncio.Queue = asyncio.Queue()
        self._budget = budget_s
        self._on_finish = on_finish
        self._in_pipeline = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self.state = "open"
        self.error: BaseException | None = None

    def _join(self, initial: Mapping[str, Tensors]) -> None:
        try:
            for lane, _ in self._stages:
                self._members.append(lane.join(self, initial.get(lane.name)))
        except (PoolFull, ValueError):
            self._leave_lanes()
            raise

    def _leave_lanes(self) -> None:
        for (lane, _), member in zip(self._stages, self._members):
            lane.leave(member)

    @property
    def signature(self) -> StepSignature:
        """What the first lane accepts."""
        return self._stages[0][0].signature

    def _check_open(self) -> None:
        if self.state == "failed":
            raise StreamFailed(f"stream {self.id} failed: {self.error}") from self.error
        if self.state != "open":
            raise StreamClosed(f"stream {self.id} is {self.state}")

    async def push(self, inputs: Tensors, deadline: float | None = None) -> None:
        """Queue one chunk (per-stream tensors, no batch axis). ``deadline`` is in ``loop.time()`` seconds.

        The stream takes the tensors over: the caller must not write to them afterwards (no copy is made).

        A chunk that does not match the first step raises :class:`InvalidChunk` and leaves the stream as it was.
        """
        self._check_open()
        validate_chunk(self.signature, inputs)
        await self._pending.acquire()
        try:
            self._check_open()
        except Exception:
            self._pending.release()
            raise
        now = asyncio.get_running_loop().time()
        if deadline is None:
            deadline = now + self._budget if self._budget is not None else math.inf
        lane = self._stages[0][0]
        self._in_pipeline += 1
        self._drained.clear()
        lane.enqueue(self._members[0], _Request(self, inputs, _shape_key(inputs), deadline, next(_ARRIVALS), now))

    async def get(self) -> Tensors:
        """The next output, in push order; raises when the stream has ended and nothing is left."""
        item = await self._outputs.get()
        if item is _END:
            self._outputs.put_nowait(_END)
            if self.state == "failed":
                raise StreamFailed(f"stream {self.id} failed: {self.error}") from self.error
            raise StreamClosed(f"stream {self.id} is {self.state}")
        self._pending.release()
        return item

    async def process(self, inputs: Tensors, deadline: float | None = None) -> Tensors:
        """Push one chunk and wait for its output (for callers that keep one chunk in flight)."""
        await self.push(inputs, deadline)
        return await self.get()

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Tensors:
        try:
            return await self.get()
        except StreamClosed:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """No more chunks: wait until every pushed chunk has its output, then free the slots."""
        if self.state != "open":
            return
        self.state = "closing"
        await self._drained.wait()
        if self.state == "closing":
            self._finish("closed")

    def cancel(self) -> None:
        """Drop the queued chunks and free the slots (after any chunk in flight); outputs end here."""
        if self.state in ("open", "closing"):
            self._finish("cancelled")

    def _fail(self, error: BaseException) -> None:
        if self.state in ("open", "closing"):
            self.error = error
            self._finish("failed")

    def _finish(self, state: str) -> None:
        self.state = state
        self._leave_lanes()
        self._in_pipeline = 0
        self._drained.set()
        self._outputs.put_nowait(_END)
        for _ in range(self._max_pending):  # wake producers blocked in push(); they see the state and raise
            self._pending.release()
        self._on_finish(self)

    def _advance(self, lane: Lane, request: _Request, outputs: Tensors, now: float) -> None:
        """A lane finished this stream's chunk: hand it to the next stage or to the consumer."""
        if self.state not in ("open", "closing"):
            return
        stage = request.stage
        if stage + 1 < len(self._stages):
            next_lane, adapt = self._stages[stage + 1]
            try:
                request.inputs = adapt(outputs) if adapt else outputs
                validate_chunk(next_lane.signature, request.inputs, check_finite=False, any_float=True)
            except Exception as error:  # noqa: BLE001 - a bad hand-over fails this stream only
                self._fail(error)
                return
            request.key = _shape_key(request.inputs)
            request.stage = stage + 1
            next_lane.enqueue(self._members[stage + 1], request)
            return
        lane.stats.latencies.append(now - request.born)
        if now > request.deadline:
            lane.stats.deadline_misses += 1
        self._outputs.put_nowait(outputs)
        self._in_pipeline -= 1
        if self._in_pipeline == 0:
            self._drained.set()


class ChunkScheduler:
    """Owns the lanes and the streams; use as ``async with ChunkScheduler(...)``.

    ``executor``: ``None`` runs steps inline on the event loop (best on CPU); a one-thread executor
    overlaps host and device work (for CUDA). See :class:`Lane`.
    """

    def __init__(self, backend: Backend, *, executor: Executor | None = None) -> None:
        self.backend = backend
        self.lanes: dict[str, Lane] = {}
        self.pipelines: dict[str, list[Stage]] = {}
        self._executor = executor
        self._tasks: list[asyncio.Task] = []
        self._running = False
        self._streams: set[Stream] = set()
        self._ids = itertools.count()

    def add_lane(
        self,
        name: str,
        step: StepFunction,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        max_streams: int = 64,
        depth: int = 2,
        backend: Backend | None = None,
        views_only: bool = False,
        executor: Executor | None = None,
    ) -> Lane:
        """Add a lane (also usable alone as a one-stage pipeline of the same name); ``views_only``: see
        :meth:`Lane._step`; ``executor``: this lane's step thread instead of the scheduler's (a backend that
        releases the GIL for a whole step, like ONNX Runtime, gains from one even on CPU)."""
        if name in self.lanes or name in self.pipelines:
            raise ValueError(f"a lane or pipeline named {name!r} exists already")
        lane = Lane(
            name,
            step,
            backend or self.backend,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_streams=max_streams,
            depth=depth,
            executor=executor or self._executor,
            views_only=views_only,
        )
        self.lanes[name] = lane
        if self._running:
            self._tasks.append(asyncio.get_running_loop().create_task(lane.run()))
        return lane

    def add_pipeline(self, name: str, stages: Sequence[Stage | str]) -> None:
        """Chain lanes: each stage's outputs (through its ``adapt``) become the next stage's inputs."""
        stages = [Stage(s) if isinstance(s, str) else s for s in stages]
        unknown = [s.lane for s in stages if s.lane not in self.lanes]
        if unknown or not stages:
            raise ValueError(f"pipeline {name!r}: unknown lanes {unknown} (have {sorted(self.lanes)})")
        if name in self.lanes or name in self.pipelines:
            raise ValueError(f"a lane or pipeline named {name!r} exists already")
        self.pipelines[name] = stages

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(lane.run()) for lane in self.lanes.values()]
        self._running = True

    async def stop(self) -> None:
        """Cancel every open stream and stop the lanes (drain first by closing streams, if that is wanted)."""
        for stream in list(self._streams):
            stream.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._running = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def open_stream(self, target: str, *, max_pending: int = 4, budget_ms: float | None = None,
                    initial_states: Mapping[str, Tensors] | None = None) -> Stream:
        """A new stream on a pipeline or a lane; raises :class:`PoolFull` when any of its lanes is full.
        ``initial_states``: by lane name, states the stream starts from instead of the specs' ``init`` (one
        stream's rows; e.g. a voice prompt that a VC session's decoder attends to throughout)."""
        if not self._running:
            raise RuntimeError("the scheduler is not running: use 'async with ChunkScheduler(...)' or start()")
        if target in self.pipelines:
            stages = self.pipelines[target]
        elif target in self.lanes:
            stages = [Stage(target)]
        else:
            raise KeyError(f"no lane or pipeline {target!r}; have {sorted([*self.lanes, *self.pipelines])}")
        stream = Stream(
            next(self._ids),
            [(self.lanes[s.lane], s.adapt) for s in stages],
            max_pending=max_pending,
            budget_s=None if budget_ms is None else budget_ms / 1000.0,
            on_finish=self._streams.discard,
        )
        initial_states = initial_states or {}
        unknown = sorted(set(initial_states) - {s.lane for s in stages})
        if unknown:
            raise ValueError(f"initial states for lanes {unknown}, which {target!r} does not run")
        stream._join(initial_states)
        self._streams.add(stream)
        return stream

    @property
    def open_streams(self) -> int:
        return sum(1 for s in self._streams if s.state in ("open", "closing"))


class LaneStreams:
    """One session's streams on several lanes, for host logic that asks for steps by name
    (``streaming.inline``): opened together (if a lane is full, the ones already open are cancelled),
    driven, closed and cancelled together. ``lanes`` maps the names the host logic uses to lane names;
    ``initial_states`` (by those names) what some of them start from."""

    def __init__(self, scheduler: ChunkScheduler, lanes: Mapping[str, str],
                 initial_states: Mapping[str, Tensors] | None = None) -> None:
        self.streams: dict[str, Stream] = {}
        initial_states = initial_states or {}
        try:
            for name, lane in lanes.items():
                start = {lane: initial_states[name]} if name in initial_states else None
                self.streams[name] = scheduler.open_stream(lane, initial_states=start)
        except Exception:
            self.cancel()
            raise

    async def run(self, requests: Requests[Result], deadline: float | None = None) -> Result:
        """Host logic to its end, each step request answered by its lane (``deadline`` for every chunk)."""
        return await drive_async(requests, lambda name, inputs: self.streams[name].process(inputs, deadline))

    async def close(self) -> None:
        for stream in self.streams.values():
            await stream.close()

    def cancel(self) -> None:
        for stream in self.streams.values():
            stream.cancel()

