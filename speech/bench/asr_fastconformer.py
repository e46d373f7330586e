"""`speech bench asr-fastconformer`: our encoder step against NeMo's ``cache_aware_stream_step``.

Both run the same randomly initialised NeMo "large" cache-aware hybrid model (17 x 512, ~114 M parameters;
NeMo builds it, saves a `.nemo`, we import it) in fp32, in bf16 (weights and activations) and in int8
(dynamically quantized linear layers, fp32 elsewhere: `speech transcribe --int8`), both implementations
alike, on this CPU, with 160 ms chunks (context
[70, 1]), for B streams in lock step. Chunks alternate between the two implementations so drift on a
shared machine hits both alike; the first ``warmup`` chunks (which also fill the caches) are not timed.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from asr.fastconformer.quantize import quantize_int8

from .report import table, write_json


@dataclass(frozen=True)
class AsrFastConformerBenchConfig:
    batches: tuple[int, ...] = (1, 16)
    dtypes: tuple[str, ...] = ("fp32", "bf16", "int8")
    chunks: int = 60
    warmup: int = 40
    context: tuple[int, int] = (70, 1)
    n_layers: int = 17
    d_model: int = 512
    n_heads: int = 8
    threads: int | None = None


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}  # int8: activations stay fp32


def _precision(module: torch.nn.Module, name: str, **int8_options) -> torch.nn.Module:
    """``module`` in the named precision: cast in place (fp32, bf16) or an int8 copy of its fp32 form."""
    if name != "int8":
        return module.to(DTYPES[name])
    return quantize_int8(copy.deepcopy(module.float()), **int8_options)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(cfg: AsrFastConformerBenchConfig, json_path: str) -> dict:
    from asr.nemo_import import load_nemo

    from . import nemo_reference

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tok = nemo_reference.train_tokenizer(Path(tmp) / "tok", vocab_size=256)
        nemo = nemo_reference.build("hybrid", tok, nemo_reference.MULTI_CONTEXT, n_layers=cfg.n_layers,
                                    d_model=cfg.d_model, n_heads=cfg.n_heads, conv_channels=256,
                                    pred_hidden=640, joint_hidden=640)
        nemo.save_to(str(Path(tmp) / "large.nemo"))
        ours = load_nemo(Path(tmp) / "large.nemo")
    params = sum(p.numel() for p in nemo.parameters())
    context = list(cfg.context)
    nemo.encoder.set_default_att_context_size(context)
    scfg = nemo.encoder.streaming_cfg
    first_len, later_len = scfg.chunk_size[0], scfg.chunk_size[1] + scfg.pre_encode_cache_size[1]
    hop = ours.encoder.hop(tuple(cfg.context))
    rows, results = [], {"parameters": params}
    for dtype_name, batch in [(d, b) for d in cfg.dtypes for b in cfg.batches]:
        dtype = DTYPES[dtype_name]
        # NeMo recomputes linear_pos every step, so it is quantized there; ours caches its output
        enc = _precision(nemo.encoder, dtype_name, keep_float=())
        ours_enc = _precision(ours.encoder, dtype_name)
        torch.manual_seed(batch)
        channel, time_cache, channel_len = (t.to(dtype) if t.is_floating_point() else t
                                            for t in enc.get_initial_cache_state(batch_size=batch))
        state = ours_enc.initial_state(batch, dtype=dtype)
        times = {"nemo": [], "ours": []}
        for step in range(cfg.warmup + cfg.chunks):
            n = first_len if step == 0 else later_len
            mel = torch.randn(batch, 80, n, dtype=dtype)
            lengths = torch.full((batch,), n, dtype=torch.int64)
            ours_in = torch.randn(batch, 80, hop, dtype=dtype)
            with torch.inference_mode():
                t0 = time.perf_counter()
                _, _, channel, time_cache, channel_len = enc.cache_aware_stream_step(
                    processed_signal=mel, processed_signal_length=lengths, cache_last_channel=channel,
                    cache_last_time=time_cache, cache_last_channel_len=channel_len, keep_all_outputs=False,
                    drop_extra_pre_encoded=0 if step == 0 else scfg.drop_extra_pre_encoded)
                t1 = time.perf_counter()
                _, _, state = ours_enc.stream(ours_in, torch.full((batch,), hop), state, tuple(cfg.context))
                t2 = time.perf_counter()
            if step >= cfg.warmup:
                times["nemo"].append(1000 * (t1 - t0))
                times["ours"].append(1000 * (t2 - t1))
        nemo_bytes = (channel.numel() * channel.element_size() + time_cache.numel() * time_cache.element_size()
                      + channel_len.numel() * channel_len.element_size()) // batch
        ours_bytes = sum(t.numel() * t.element_size() for t in asdict_tensors(state)) // batch
        stats = {impl: {"p50_ms": statistics.median(v), "p95_ms": _percentile(v, 0.95)} for impl, v in times.items()}
        ratio50 = stats["ours"]["p50_ms"] / stats["nemo"]["p50_ms"]
        ratio95 = stats["ours"]["p95_ms"] / stats["nemo"]["p95_ms"]
        results[f"{dtype_name}/batch{batch}"] = {**stats, "ratio_p50": ratio50, "ratio_p95": ratio95,
                                    "state_bytes_per_stream": {"nemo": nemo_bytes, "ours": ours_bytes}}
        rows.append([dtype_name, batch, stats["nemo"]["p50_ms"], stats["nemo"]["p95_ms"], stats["ours"]["p50_ms"],
                     stats["ours"]["p95_ms"], ratio50, ratio95, nemo_bytes, ours_bytes])
    print(f"FastConformer large ({params / 1e6:.1f} M parameters), 160 ms chunks (context {context}), "
          f"CPU threads {torch.get_num_threads()}; per-chunk encoder step latency")
    print(table(["dtype", "batch", "NeMo p50 ms", "NeMo p95 ms", "ours p50 ms", "ours p95 ms", "ratio p50", "ratio p95",
                 "NeMo state B/stream", "ours state B/stream"], rows))
    path = write_json(json_path, "asr-fastconformer", {**asdict(cfg), "context": context}, results)
    print(f"wrote {path}")
    return results


def asdict_tensors(state) -> list[torch.Tensor]:
    return [getattr(state, f) for f in state.__dataclass_fields__]
