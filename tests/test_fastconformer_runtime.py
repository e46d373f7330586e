"""The FastConformer encoder step on the chunk scheduler: concurrent streams batched in one lane equal
each stream run alone, chunk by chunk."""

from __future__ import annotations

import asyncio

import torch

from asr.fastconformer.config import EncoderConfig
from asr.fastconformer.encoder import FastConformerEncoder
from asr.fastconformer.steps import EncoderStep
from streaming.backend import TorchBackend
from streaming.contract import validate_chunk
from streaming.scheduler import ChunkScheduler


def test_scheduled_streams_equal_solo_streams():
    torch.manual_seed(0)
    enc = FastConformerEncoder(EncoderConfig(n_layers=2, d_model=64, n_heads=4, subsampling_conv_channels=16,
                                             att_context_size=((70, 6), (70, 1)))).eval()
    step = EncoderStep(enc, (70, 1))
    hop = step.signature.geometry.hop
    streams = [[torch.randn(80, hop) for _ in range(n)] for n in (5, 9, 7)]
    for chunk in streams[0]:
        validate_chunk(step.signature, {"features": chunk, "valid": torch.tensor(hop)})

    def solo(chunks):
        state, out = step.initial_state(1), []
        with torch.inference_mode():
            for chunk in chunks:
                o, state = step.step({"features": chunk[None], "valid": torch.tensor([hop])}, state)
                out.append(o["encoded"][0])
        return out

    async def scheduled():
        async with ChunkScheduler(TorchBackend()) as scheduler:
            scheduler.add_lane(step.name, step, max_batch=8, max_wait_ms=5.0, max_streams=4)

            async def run(chunks):
                stream = scheduler.open_stream(step.name)
                outs = []
                for chunk in chunks:
                    outs.append((await stream.process({"features": chunk, "valid": torch.tensor(hop)}))["encoded"])
                await stream.close()
                return outs

            return await asyncio.gather(*(run(c) for c in streams))

    for alone, batched in zip((solo(c) for c in streams), asyncio.run(scheduled())):
        assert len(alone) == len(batched)
        for a, b in zip(alone, batched):
            assert torch.allclose(a, b, atol=1e-5)
