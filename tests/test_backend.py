"""TorchBackend: dtypes and devices behind the same step interface, through the scheduler."""

from __future__ import annotations

import asyncio

import pytest
import torch

from streaming import ChunkScheduler, TorchBackend
from streaming.reference import ReferenceStep


async def run_through(backend: TorchBackend, chunks: list[torch.Tensor]) -> torch.Tensor:
    async with ChunkScheduler(backend) as scheduler:
        lane = scheduler.add_lane("lane", ReferenceStep(channels=16, layers=2))
        assert all(t.dtype == backend.state_dtype(s) for s, t in zip(lane.signature.states, lane.pool.tensors.values()))
        stream = scheduler.open_stream("lane")
        outs = [(await stream.process({"x": c}))["y"].float().cpu() for c in chunks]
        await stream.close()
        return torch.cat(outs)


CHUNKS = [torch.randn(n, 16, generator=torch.Generator().manual_seed(n)) for n in (3, 7, 1, 12)]


@pytest.mark.parametrize("dtype, tolerance", [("bf16", 0.1), ("fp16", 0.02)])
def test_reduced_precision_is_close_to_fp32(dtype, tolerance):
    reference = asyncio.run(run_through(TorchBackend("cpu", "fp32"), CHUNKS))
    reduced = asyncio.run(run_through(TorchBackend("cpu", dtype), CHUNKS))
    assert (reduced - reference).abs().max().item() <= tolerance * max(1.0, reference.abs().max().item())


def test_backend_rejects_unknown_dtype_and_device():
    with pytest.raises(ValueError, match=r"dtype must be one of \['bf16', 'fp16', 'fp32', 'fp64'\]"):
        TorchBackend("cpu", "int4")
    with pytest.raises(ValueError, match="cpu or cuda"):
        TorchBackend("meta")


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        TorchBackend("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype, tolerance", [("fp32", 1e-4), ("bf16", 0.1), ("fp16", 0.02)])
def test_cuda_matches_cpu(dtype, tolerance):
    reference = asyncio.run(run_through(TorchBackend("cpu", "fp32"), CHUNKS))
    on_gpu = asyncio.run(run_through(TorchBackend("cuda", dtype), CHUNKS))
    assert (on_gpu - reference).abs().max().item() <= tolerance * max(1.0, reference.abs().max().item())


def test_thread_executor_gives_the_same_outputs_as_inline():
    from concurrent.futures import ThreadPoolExecutor

    async def run(executor):
        async with ChunkScheduler(TorchBackend(), executor=executor) as scheduler:
            scheduler.add_lane("lane", ReferenceStep(channels=16, layers=2), depth=2)
            streams = [scheduler.open_stream("lane", max_pending=4) for _ in range(3)]
            for stream in streams:
                for chunk in CHUNKS:
                    await stream.push({"x": chunk})
                await stream.close()
            return [torch.cat([o["y"] async for o in s]) for s in streams]

    with ThreadPoolExecutor(1) as executor:
        threaded = asyncio.run(run(executor))
    inline = asyncio.run(run(None))
    assert all(torch.equal(a, b) for a, b in zip(threaded, inline))


def test_prepare_shares_an_evaluating_step_and_copies_one_in_training():
    """A step wrapping modules in eval mode is shared as it is (the wrapper's own flag runs nothing: a
    copy would duplicate the model per lane); one with a module in training mode is copied into eval."""
    backend = TorchBackend()
    step = ReferenceStep(channels=16, layers=2)
    for module in step.children():
        module.eval()
    assert step.training and backend.prepare(step) is step
    training = ReferenceStep(channels=16, layers=2)
    prepared = backend.prepare(training)
    assert prepared is not training and not any(m.training for m in prepared.modules())
    assert training.training, "the caller's module is left as it was"
