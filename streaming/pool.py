"""The slot pool: preallocated per-stream state (the activation cache) for one step function.

Every state tensor is allocated once as ``[max_streams, *per_stream_shape]``; a batch gathers its slots,
runs, and scatters the next state back with ``index_copy_``. Memory per stream is known before the first
stream opens, and a full pool says so instead of growing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .contract import StateSpec, Tensors


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

    def open(self) -> int:
        """Take a slot, reset to the initial state."""
        if not self._free:
            raise PoolFull(
                f"{self.name}: all {self.max_streams} stream slots are in use "
                f"({self.bytes_per_stream} bytes each); close a stream or raise max_streams"
            )
        slot = self._free.pop()
        self._reset(slot)
        self._used.add(slot)
        return slot

    def close(self, slot: int) -> None:
        """Give a slot back, zeroed so that nothing of the stream survives it."""
        if slot not in self._used:
            raise KeyError(f"{self.name}: slot {slot} is not open")
        self._used.remove(slot)
        self._reset(slot)
        self._free.append(slot)

    def _reset(self, slot: int) -> None:
        for spec in self.specs:
            self.tensors[spec.name][slot].fill_(spec.init)

    def index(self, slots: Sequence[int]) -> Tensor:
        return torch.tensor(list(slots), dtype=torch.long, device=self.device)

    def gather(self, index: Tensor) -> Tensors:
        """The states of the given slots, batched in the order of ``index``."""
        return {name: t.index_select(0, index) for name, t in self.tensors.items()}

    def scatter(self, index: Tensor, state: Tensors) -> None:
        """Write a batch's next state back to its slots."""
        for name, t in self.tensors.items():
            t.index_copy_(0, index, state[name].to(dtype=t.dtype))
