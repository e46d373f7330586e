"""The slot pool: preallocated per-stream state (the activation cache) for one step function.

Every state tensor is allocated once as ``[max_streams, *per_stream_shape]``; a batch gathers its slots,
runs, and scatters the next state back with ``index_copy_``. Memory per stream is known before the first
stream opens, and a full pool says so instead of growing.

Opening or closing a slot only marks it; the reset to the initial state runs inside the next ``gather``
or ``scatter``,
on the thread that runs the steps, so only that thread ever calls torch (see ``streaming.scheduler``).
A slot's state is therefore always fresh the first time a batch sees it after ``open``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .contract import RowUpdate, StateSpec, Tensors


class PoolFull(RuntimeError):
    """No free slot: the service is at capacity for this step (the server answers "busy")."""


class SlotPool:
    """Fixed-capacity state storage for ``max_streams`` streams of one step function."""

    def __init__(
        self,
        specs: Sequence[StateSpec],
        max_streams: int,
        *,
        device: torch.device | str = "cpu",
        dtype_of: Callable[[StateSpec], torch.dtype] = lambda spec: spec.dtype,
        name: str = "pool",
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        self.name = name
        self.specs = tuple(specs)
        self.max_streams = max_streams
        self.device = torch.device(device)
        self._dtypes = {s.name: dtype_of(s) for s in self.specs}
        self.tensors: Tensors = {
            s.name: torch.full((max_streams, *s.shape), s.init, dtype=self._dtypes[s.name], device=self.device)
            for s in self.specs
        }
        self._free = list(range(max_streams - 1, -1, -1))
        self._used: set[int] = set()
        self._stale: set[int] = set()
        self._initial: dict[int, Tensors] = {}  # slots opened with a given state (written at the reset)
        self._stale_lock = threading.Lock()

    @property
    def bytes_per_stream(self) -> int:
        return sum(s.numel() * self._dtypes[s.name].itemsize for s in self.specs)

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_stream * self.max_streams

    @property
    def in_use(self) -> int:
        return len(self._used)

    @property
    def free(self) -> int:
        return len(self._free)

    def open(self, initial: Tensors | None = None) -> int:
        """Take a slot; it holds the initial state when a batch first gathers it: the specs' ``init``, or for
        the states named in ``initial`` (one stream's rows, no batch axis) those values (a VC voice's
        prompt)."""
        if initial:
            self._check_initial(initial)
        if not self._free:
            raise PoolFull(
                f"{self.name}: all {self.max_streams} stream slots are in use "
                f"({self.bytes_per_stream} bytes each); close a stream or raise max_streams"
            )
        slot = self._free.pop()
        with self._stale_lock:
            self._stale.add(slot)
            if initial:
                self._initial[slot] = dict(initial)  # taken over, not copied: read at the reset
        self._used.add(slot)
        return slot

    def _check_initial(self, initial: Tensors) -> None:
        specs = {s.name: s for s in self.specs}
        for name, value in initial.items():
            if name not in specs:
                raise ValueError(f"{self.name}: no state {name!r} to start from; states: {sorted(specs)}")
            if tuple(value.shape) != tuple(specs[name].shape):
                raise ValueError(f"{self.name}: a starting value of state {name!r} has shape {list(value.shape)}, "
                                 f"expected one stream's {list(specs[name].shape)}")

    def close(self, slot: int) -> None:
        """Give a slot back; it is wiped at the next gather so that nothing of the stream survives it."""
        if slot not in self._used:
            raise KeyError(f"{self.name}: slot {slot} is not open")
        self._used.remove(slot)
        with self._stale_lock:
            self._stale.add(slot)
            self._initial.pop(slot, None)
        self._free.append(slot)

    def reset_stale(self) -> None:
        """Reset every slot opened or closed since the last call (runs on the step thread)."""
        with self._stale_lock:
            stale, self._stale = self._stale, set()
            initial = {slot: self._initial.pop(slot) for slot in stale if slot in self._initial}
        for slot in stale:
            for spec in self.specs:
                self.tensors[spec.name][slot].fill_(spec.init)
            for name, value in initial.get(slot, {}).items():
                self.tensors[name][slot].copy_(value)

    def index(self, slots: Sequence[int]) -> Tensor | slice:
        """What ``gather`` and ``scatter`` take: a slice when the slots are consecutive (the common case
        once batches are ordered by slot; ``index_copy_`` is ten times slower than a block copy)."""
        first = slots[0]
        if all(slot == first + i for i, slot in enumerate(slots)):
            return slice(first, first + len(slots))
        return torch.tensor(list(slots), dtype=torch.long, device=self.device)

    def gather(self, index: Tensor | slice) -> Tensors:
        """The states of the given slots, batched in the order of ``index``.

        For a slice these are views into the pool (no copy): steps never write to their inputs, and
        :meth:`detach` copies any output that is a view of them before the next scatter.
        """
        self.reset_stale()
        if isinstance(index, slice):
            return {name: t[index] for name, t in self.tensors.items()}
        return {name: t.index_select(0, index) for name, t in self.tensors.items()}

    def detach(self, tensors: Tensors) -> Tensors:
        """Copy the tensors that share memory with the pool, so that a scatter cannot change them."""
        pool = {t.untyped_storage().data_ptr() for t in self.tensors.values()}
        return {
            name: t.clone() if t.untyped_storage().data_ptr() in pool else t for name, t in tensors.items()
        }

    def scatter(self, index: Tensor | slice, state: dict[str, Tensor | RowUpdate]) -> None:
        """Write a batch's next state back to its slots; a :class:`RowUpdate` writes only its rows, in place.

        A next state that is a view of the pool (a step passing some state through) is copied first, so
        that writing one state cannot change another before it is written.
        """
        self.reset_stale()
        updates = {name: u for name, u in state.items() if isinstance(u, RowUpdate)}
        state = self.detach({name: t for name, t in state.items() if name not in updates})
        rows = index.stop - index.start if isinstance(index, slice) else index.shape[0]
        for name, update in updates.items():
            self._check_update(name, update, rows)
            update = RowUpdate(update.positions, self.detach({name: update.values})[name], update.axis)
            if isinstance(index, slice):
                update.apply(self.tensors[name][index])
            else:  # slots apart: one stream at a time, still in place
                for i, slot in enumerate(index.tolist()):
                    RowUpdate(update.positions[i : i + 1], update.values[i : i + 1], update.axis).apply(
                        self.tensors[name][slot : slot + 1])
        for name, t in self.tensors.items():
            if name in updates:
                continue
            if state[name].shape != (rows, *t.shape[1:]):
                raise ValueError(
                    f"{self.name}: next state {name!r} has shape {list(state[name].shape)}, "
                    f"expected {[rows, *t.shape[1:]]}"
                )
            if isinstance(index, slice):
                t[index].copy_(state[name])
            else:
                t.index_copy_(0, index, state[name].to(dtype=t.dtype))

    def _check_update(self, name: str, update: RowUpdate, rows: int) -> None:
        want = list(self.tensors[name].shape[1:])
        got = list(update.values.shape[1:])
        n = update.positions.shape[1] if update.positions.ndim == 2 else -1
        if (update.positions.shape[0] != rows or update.values.shape[0] != rows or not 0 <= update.axis < len(want)
                or got[: update.axis] + got[update.axis + 1 :] != want[: update.axis] + want[update.axis + 1 :]
                or got[update.axis] != n):
            raise ValueError(f"{self.name}: an update of state {name!r} writes values {[update.values.shape[0], *got]} "
                             f"at positions {list(update.positions.shape)} along axis {update.axis}; the state is "
                             f"{[rows, *want]}")
