"""Host logic written once for both ways of running steps: inline for one stream, or on the scheduler.

A model's host logic (decoding, endpointing) is a generator that yields ``(lane, inputs)`` step requests
(per-stream tensors, no batch axis), receives each request's outputs, and returns its result. ``drive``
runs it against :class:`InlineSteps` (one stream, no scheduler: a CLI on one file); ``drive_async`` against
any coroutine, e.g. the streams of a :class:`~streaming.scheduler.ChunkScheduler`, where the steps of many
streams are batched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import TypeVar

import torch
from torch import Tensor

from .backend import Backend
from .contract import RowUpdate, StepFunction, Tensors

Result = TypeVar("Result")
Requests = Generator[tuple[str, Tensors], Tensors, Result]


def drive(host: Requests[Result], run: Callable[[str, Tensors], Tensors]) -> Result:
    """Runs host logic to its end, answering every step request with ``run``."""
    try:
        request = next(host)
        while True:
            request = host.send(run(*request))
    except StopIteration as done:
        return done.value


async def drive_async(host: Requests[Result], run: Callable[[str, Tensors], Awaitable[Tensors]]) -> Result:
    """:func:`drive` with a coroutine answering the requests (a scheduler's streams)."""
    try:
        request = next(host)
        while True:
            request = host.send(await run(*request))
    except StopIteration as done:
        return done.value


class InlineSteps:
    """One stream's steps run where they are called, on ``backend``, with the state handling of the slot pool
    (a :class:`RowUpdate` writes its rows in place); ``steps`` maps lane names to step functions and
    ``start_from`` (by lane, optional) gives states to start from, as ``ChunkScheduler.open_stream`` takes them."""

    def __init__(self, steps: Mapping[str, StepFunction], backend: Backend,
                 start_from: Mapping[str, Tensors] | None = None) -> None:
        self.backend = backend
        self.steps = {lane: backend.prepare(step) for lane, step in steps.items()}
        self.states = {lane: initial_states(backend, step, 1) for lane, step in self.steps.items()}
        for lane, given in (start_from or {}).items():
            for name, value in given.items():
                state = self.states[lane][name]
                self.states[lane][name] = value[None].to(state.device, state.dtype)

    def __call__(self, lane: str, inputs: Tensors) -> Tensors:
        state = self.states[lane]
        outputs, next_state = self.backend.run(self.steps[lane], {k: v[None] for k, v in inputs.items()}, state)
        advance(state, next_state)
        return {k: v[0] for k, v in outputs.items()}


def initial_states(backend: Backend, step: StepFunction, batch: int) -> Tensors:
    """Fresh states of ``batch`` streams as ``backend`` keeps them (its device and state dtypes)."""
    specs = {spec.name: spec for spec in step.signature.states}
    return {name: value.to(backend.device, backend.state_dtype(specs[name]))
            for name, value in step.initial_state(batch).items()}


@torch.inference_mode()
def advance(state: Tensors, next_state: dict[str, Tensor | RowUpdate]) -> None:
    """Makes ``state`` the next state in place: whole tensors replace, :class:`RowUpdate` rows are written."""
    for name, value in next_state.items():
        if isinstance(value, RowUpdate):
            value.apply(state[name])
        else:
            state[name] = value
