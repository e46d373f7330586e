"""The step contract (validation, purity) and the slot pool (reset, capacity, gather/scatter)."""

from __future__ import annotations

import pytest
import torch

from streaming import ChunkGeometry, InvalidChunk, PoolFull, RowUpdate, SlotPool, StateSpec, validate_chunk
from streaming.reference import ReferenceStep

SPECS = (StateSpec("cache", (4, 3), init=-1.0), StateSpec("length", (), torch.int64))


def test_pool_reports_bytes_and_refuses_when_full():
    pool = SlotPool(SPECS, max_streams=2, name="encoder")
    assert pool.bytes_per_stream == 4 * 3 * 4 + 8
    assert pool.total_bytes == 2 * pool.bytes_per_stream
    pool.open(), pool.open()
    with pytest.raises(PoolFull, match=r"encoder: all 2 stream slots are in use \(56 bytes each\)"):
        pool.open()


def test_pool_slot_is_fresh_after_reopen_and_wiped_after_close():
    pool = SlotPool(SPECS, max_streams=3)
    a, b = pool.open(), pool.open()
    index = pool.index([a, b])
    assert isinstance(index, slice)
    state = pool.gather(index)
    assert torch.equal(state["cache"], torch.full((2, 4, 3), -1.0))
    pool.scatter(index, {"cache": torch.ones(2, 4, 3), "length": torch.tensor([5, 6])})
    pool.close(a)
    pool.reset_stale()
    assert torch.equal(pool.tensors["cache"][a], torch.full((4, 3), -1.0)), "a closed slot keeps no data"
    assert torch.equal(pool.tensors["cache"][b], torch.ones(4, 3)), "closing one slot leaves the others"
    c = pool.open()
    assert int(pool.gather(pool.index([c]))["length"][0]) == 0
    with pytest.raises(KeyError, match="not open"):
        pool.close(a if c != a else 2)


def test_pool_scattered_order_equals_slice_order():
    pool = SlotPool(SPECS, max_streams=4)
    slots = [pool.open() for _ in range(4)]
    new = {"cache": torch.arange(48.0).view(4, 4, 3), "length": torch.arange(4)}
    pool.scatter(pool.index([slots[2], slots[0], slots[3], slots[1]]), new)
    picked = pool.gather(pool.index([slots[3], slots[2]]))
    assert torch.equal(picked["cache"], new["cache"][[2, 0]])
    assert torch.equal(picked["length"], torch.tensor([2, 0]))


def test_pool_outputs_that_view_the_state_are_copied():
    pool = SlotPool(SPECS, max_streams=2)
    slots = [pool.open(), pool.open()]
    state = pool.gather(pool.index(slots))
    outputs = pool.detach({"echo": state["cache"][:, 0], "fresh": torch.zeros(2)})
    pool.scatter(pool.index(slots), {"cache": torch.zeros(2, 4, 3), "length": torch.zeros(2, dtype=torch.long)})
    assert torch.equal(outputs["echo"], torch.full((2, 3), -1.0))


@pytest.mark.parametrize("slots", [[0, 1], [2, 0]], ids=["consecutive", "apart"])
def test_row_updates_write_only_their_rows_in_place(slots):
    """A step that returns the rows it wrote (a K/V cache) changes those rows of each slot and nothing else."""
    pool = SlotPool(SPECS, max_streams=3)
    for _ in range(3):
        pool.open()
    pool.scatter(pool.index([0, 1, 2]), {"cache": torch.arange(36.0).view(3, 4, 3), "length": torch.zeros(3, dtype=torch.int64)})
    before = pool.tensors["cache"].clone()
    storage = pool.tensors["cache"].data_ptr()
    index = pool.index(slots)
    rows = torch.tensor([[1, 3], [0, 0]])  # the second stream writes row 0 twice (equal values)
    values = torch.stack([torch.full((2, 3), 100.0), torch.full((2, 3), 200.0)])
    pool.scatter(index, {"cache": RowUpdate(rows, values, axis=0), "length": torch.tensor([2, 1])})
    expected = before.clone()
    expected[slots[0], [1, 3]] = 100.0
    expected[slots[1], 0] = 200.0
    assert torch.equal(pool.tensors["cache"], expected) and pool.tensors["cache"].data_ptr() == storage
    with pytest.raises(ValueError, match="writes values"):
        pool.scatter(index, {"cache": RowUpdate(rows, torch.zeros(2, 2, 4), axis=0), "length": torch.tensor([2, 1])})


def test_state_and_geometry_specs_reject_nonsense():
    with pytest.raises(ValueError, match="static shape"):
        StateSpec("bad", (None, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid chunk geometry"):
        ChunkGeometry(hop=0, frames_out=1)


@pytest.mark.parametrize(
    "chunk, problem",
    [
        ({"y": torch.zeros(4, 8)}, r"chunk has inputs \['y'\], expected \['x'\]"),
        ({"x": torch.zeros(4, 8, dtype=torch.float64)}, "has dtype torch.float64"),
        ({"x": torch.zeros(4, 9)}, r"has shape \[4, 9\]"),
        ({"x": torch.zeros(8)}, r"has shape \[8\]"),
        ({"x": [0.0] * 8}, "is list, not a tensor"),
        ([torch.zeros(4, 8)], "a chunk is a dict"),
    ],
)
def test_invalid_chunks_say_what_is_wrong_and_what_is_accepted(chunk, problem):
    signature = ReferenceStep(channels=8).signature
    with pytest.raises(InvalidChunk, match=problem) as error:
        validate_chunk(signature, chunk)
    assert "accepted: x: [*, 8] float32" in str(error.value)


def test_non_finite_chunks_are_refused():
    signature = ReferenceStep(channels=8).signature
    bad = torch.zeros(4, 8)
    bad[1, 2] = float("nan")
    with pytest.raises(InvalidChunk, match="NaN or infinite"):
        validate_chunk(signature, {"x": bad})


def test_chunk_length_must_be_a_multiple_of_the_hop():
    from streaming.blocks import LogMelStep

    signature = LogMelStep().signature
    validate_chunk(signature, {"audio": torch.zeros(320)})
    with pytest.raises(InvalidChunk, match="not a multiple of the hop 160"):
        validate_chunk(signature, {"audio": torch.zeros(321)})


def test_steps_are_pure():
    step = ReferenceStep(channels=8)
    state = {k: torch.randn_like(v) for k, v in step.initial_state(2).items()}
    before = {k: v.clone() for k, v in state.items()}
    x = torch.randn(2, 5, 8)
    first, _ = step.step({"x": x}, state)
    second, _ = step.step({"x": x}, state)
    assert all(torch.equal(state[k], before[k]) for k in state), "a step wrote to its input state"
    assert torch.equal(first["y"], second["y"])


def test_scatter_of_states_that_view_the_pool_swaps_correctly():
    specs = (StateSpec("a", (2,)), StateSpec("b", (2,)))
    pool = SlotPool(specs, max_streams=2)
    slots = [pool.open(), pool.open()]
    index = pool.index(slots)
    assert isinstance(index, slice)
    pool.scatter(index, {"a": torch.ones(2, 2), "b": torch.full((2, 2), 2.0)})
    state = pool.gather(index)
    pool.scatter(index, {"a": state["b"], "b": state["a"]})  # a step that swaps two states
    assert torch.equal(pool.tensors["a"], torch.full((2, 2), 2.0))
    assert torch.equal(pool.tensors["b"], torch.ones(2, 2))


def test_scatter_refuses_a_next_state_of_the_wrong_shape():
    pool = SlotPool(SPECS, max_streams=2)
    slots = [pool.open(), pool.open()]
    with pytest.raises(ValueError, match=r"next state 'cache' has shape \[4, 3\], expected \[2, 4, 3\]"):
        pool.scatter(pool.index(slots), {"cache": torch.zeros(4, 3), "length": torch.zeros(2, dtype=torch.long)})


def test_validation_accepts_tensors_that_require_grad():
    signature = ReferenceStep(channels=8).signature
    validate_chunk(signature, {"x": torch.zeros(4, 8, requires_grad=True)})
