"""The `speech` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _bench_runtime(args: argparse.Namespace) -> int:
    from dataclasses import fields

    import yaml

    from .bench import runtime

    names = {f.name for f in fields(runtime.RuntimeBenchConfig)}
    settings = {}
    if args.config:
        with open(args.config) as f:
            settings = yaml.safe_load(f) or {}
        unknown = sorted(set(settings) - names)
        if unknown:
            print(f"speech bench runtime: unknown keys {unknown} in {args.config}; known: {sorted(names)}",
                  file=sys.stderr)
            return 2
    settings.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    runtime.main(runtime.RuntimeBenchConfig(**settings), args.json)
    return 0


def _bench_asr_fastconformer(args: argparse.Namespace) -> int:
    try:
        import nemo.collections.asr  # noqa: F401
    except ImportError:
        print("speech bench asr-fastconformer: needs NeMo as the peer: pip install -e '.[nemo]'", file=sys.stderr)
        return 2
    from .bench import asr_fastconformer as bench

    cfg = bench.AsrFastConformerBenchConfig(batches=tuple(args.batches), dtypes=tuple(args.dtypes),
                                            chunks=args.chunks, warmup=args.warmup, threads=args.threads)
    bench.main(cfg, args.json)
    return 0


def _reported(command: str, run, *errors: type[Exception]) -> int:
    """Runs ``run()``; the expected ``errors`` become one line on stderr and exit status 2."""
    try:
        run()
    except errors as error:
        print(f"speech {command}: {error}", file=sys.stderr)
        return 2
    return 0


def _bench_asr_quality(args: argparse.Namespace) -> int:
    from .asr_models import ModelNotFound
    from .bench import asr_quality
    from .whisper_models import WhisperNotFound

    cfg = asr_quality.AsrQualityConfig(args.model, args.real, args.synth, args.max_utterances, args.decoder, args.int8,
                                       args.whisper, tuple(args.chunks), tuple(args.onnx),
                                       tuple(args.sets) if args.sets else None)
    return _reported("bench asr-quality", lambda: asr_quality.main(cfg, args.json), ModelNotFound, WhisperNotFound,
                     ValueError)


def _bench_asr_latency(args: argparse.Namespace) -> int:
    from .bench import asr_latency
    from .whisper_models import WhisperNotFound

    adapter = None if args.adapter == "none" else args.adapter
    cfg = asr_latency.AsrLatencyConfig(args.real, tuple(args.sets), args.max_utterances, args.whisper, args.chunk,
                                       adapter, args.la2_min_chunk, args.beam)
    return _reported("bench asr-latency", lambda: asr_latency.main(cfg, args.json), WhisperNotFound, ValueError,
                     RuntimeError)


def _bench_export(args: argparse.Namespace) -> int:
    from .bench import export
    from .whisper_models import WhisperNotFound

    cfg = export.ExportBenchConfig(models=tuple(args.models), batches=tuple(args.batches), chunks=args.chunks,
                                   minutes=args.minutes, threads=args.threads)
    return _reported("bench export", lambda: export.main(cfg, args.json), WhisperNotFound)


def _bench_serve(args: argparse.Namespace) -> int:
    from .bench import serve

    vc = args.task == "vc"
    sessions = args.sessions or ([1, 2, 3, 4, 6] if vc else [16, 24, 32, 40, 48])
    cfg = serve.ServeBenchConfig(sessions=tuple(sessions), seconds=args.seconds, lookahead_ms=args.lookahead,
                                 frame_ms=args.frame_ms, max_wait_ms=args.max_wait_ms or (5.0 if vc else 20.0),
                                 threads=args.threads, backends=tuple(args.backend or (["onnx"] if vc else ["onnx", "torch"])),
                                 precision=args.precision, task=args.task)
    return _reported("bench serve", lambda: serve.main(cfg, args.json), RuntimeError)


def _bench_vc(args: argparse.Namespace) -> int:
    from .bench import vc
    from .judges.whisper import JudgeUnavailable

    cfg = vc.VCBenchConfig(args.data, args.pairs, args.allison, args.steps, args.chunk, args.model, args.vocoder,
                           args.backend, args.latency_seconds, args.long_minutes, args.threads, args.json,
                           args.temperature)
    return _reported("bench vc", lambda: vc.run(cfg), ValueError, FileNotFoundError, ModuleNotFoundError,
                     JudgeUnavailable)


def _bench_vc_content(args: argparse.Namespace) -> int:
    from .bench import vc_content

    return _reported("bench vc-content", lambda: vc_content.run(args.data, args.json), FileNotFoundError,
                     ModuleNotFoundError)


def _bench_tts(args: argparse.Namespace) -> int:
    from .bench import tts
    from .corpus.voices.base import EngineUnavailable
    from .judges.whisper import JudgeUnavailable

    cfg = tts.TtsBenchConfig(args.sentences, args.model, args.vocoder, args.backend, args.voice, args.steps,
                             args.solver, args.guidance,
                             args.chunk, args.vocoder_chunk, tuple(args.peers), not args.no_judge, args.long_minutes,
                             args.device, skip=args.skip,
                             **({"threads": args.threads} if args.threads else {}))
    return _reported("bench tts", lambda: tts.main(cfg, args.json), ValueError, FileNotFoundError,
                     ModuleNotFoundError, EngineUnavailable, JudgeUnavailable)


def _add_bench(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="latency, throughput and quality benchmarks (table + JSON)")
    which = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    rt = which.add_parser(
        "runtime",
        help="scheduler overhead, latency and batching of N concurrent streams of a reference step",
        description="Flags override --config, which overrides the defaults shown.",
    )
    from .bench.runtime import RuntimeBenchConfig

    d = RuntimeBenchConfig()
    rt.add_argument("--config", help="YAML file with any of the settings below")
    rt.add_argument("--streams", type=int, help=f"concurrent streams ({d.streams})")
    rt.add_argument("--chunks", type=int, help=f"chunks per stream ({d.chunks})")
    rt.add_argument("--chunk-frames", type=int, help=f"frames per chunk ({d.chunk_frames})")
    rt.add_argument("--channels", type=int, help=f"reference step width ({d.channels})")
    rt.add_argument("--layers", type=int, help=f"reference step depth ({d.layers})")
    rt.add_argument("--groups", type=int, help=f"groups of the reference step's channel mixing ({d.groups})")
    rt.add_argument("--max-batch", type=int, help=f"({d.max_batch})")
    rt.add_argument("--max-wait-ms", type=float, help=f"({d.max_wait_ms})")
    rt.add_argument("--max-pending", type=int, help=f"chunks in flight per stream ({d.max_pending})")
    rt.add_argument("--device", help=f"cpu or cuda ({d.device})")
    rt.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help=f"({d.dtype})")
    rt.add_argument("--executor", choices=["inline", "thread"],
                    help=f"run steps on the event loop or on one step thread ({d.executor})")
    rt.add_argument("--repeats", type=int, help=f"alternating scheduled/direct runs ({d.repeats})")
    rt.add_argument("--json", default="bench-results/runtime.json", help="where to write the results")
    rt.set_defaults(func=_bench_runtime)

    fc = which.add_parser("asr-fastconformer", help="our FastConformer encoder step vs NeMo's cache_aware_stream_step",
                          description="Same random NeMo 'large' streaming model, 160 ms chunks, batch 1 and 16, on this CPU.")
    fc.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    fc.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16", "int8"], default=["fp32", "bf16", "int8"])
    fc.add_argument("--chunks", type=int, default=60, help="timed chunks per batch size (60)")
    fc.add_argument("--warmup", type=int, default=40, help="untimed chunks first; 35 fill the 70-frame cache (40)")
    fc.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    fc.add_argument("--json", default="bench-results/asr_fastconformer.json")
    fc.set_defaults(func=_bench_asr_fastconformer)

    q = which.add_parser("asr-quality", help="WER per lookahead on the ASR evaluation sets (streaming)")
    q.add_argument("--model", default="fastconformer",
                   help="fastconformer (the default), a model directory or .nemo, or whisper-causal")
    q.add_argument("--whisper", default="base", help="with whisper-causal: base (default), tiny.en or a directory")
    q.add_argument("--chunks", type=int, nargs="+", default=[300],
                   help="with whisper-causal: chunk sizes (ms) to measure without LoRA too (300)")
    q.add_argument("--decoder", choices=["rnnt", "ctc"])
    q.add_argument("--int8", action="store_true", help="int8 encoder weights (as `speech transcribe --int8`)")
    q.add_argument("--onnx", nargs="+", choices=["fp32", "fp16", "int8"], default=[],
                   help="also ONNX Runtime rows at these precisions (files exported into the cache on first use)")
    q.add_argument("--sets", nargs="+", help="only these sets (default: all)")
    q.add_argument("--real", default="corpora/real", help="manifests of `speech corpus real`")
    q.add_argument("--synth", default="corpora/synth", help="a corpus of `speech corpus build` (its test split)")
    q.add_argument("--max-utterances", type=int, default=200)
    q.add_argument("--json", default="bench-results/asr_quality.json")
    q.set_defaults(func=_bench_asr_quality)

    lat = which.add_parser("asr-latency", help="word emission latency: causal Whisper vs LocalAgreement-2")
    lat.add_argument("--sets", nargs="+", default=["jfk", "allison", "vctk13"], help="real sets (`speech corpus real`)")
    lat.add_argument("--max-utterances", type=int, default=30)
    lat.add_argument("--whisper", default="base", help="base (default), tiny.en or a Hugging Face Whisper directory")
    lat.add_argument("--chunk", type=int, default=300, help="our chunk, ms (100, 200 or 300)")
    lat.add_argument("--adapter", default="shipped", help="'shipped', a directory, or 'none' (no LoRA)")
    lat.add_argument("--la2-min-chunk", type=float, default=1.0, help="LocalAgreement-2's minimum chunk, s")
    lat.add_argument("--beam", type=int, default=1, help="ours: 1 greedy (default), 2-4 beam search")
    lat.add_argument("--real", default="corpora/real")
    lat.add_argument("--json", default="bench-results/asr_latency.json")
    lat.set_defaults(func=_bench_asr_latency)

    ex = which.add_parser("export", help="ONNX Runtime vs torch per chunk (batch 1 and 16), and a 10-minute stream")
    ex.add_argument("--models", nargs="+", choices=["fastconformer", "whisper-causal"],
                    default=["fastconformer", "whisper-causal"])
    ex.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ex.add_argument("--chunks", type=int, default=30, help="timed chunks per model, batch and backend (30)")
    ex.add_argument("--minutes", type=float, default=10.0, help="the long stream's length; 0 skips it (10)")
    ex.add_argument("--threads", type=int, help="CPU threads of both backends (default: theirs)")
    ex.add_argument("--json", default="bench-results/export.json")
    ex.set_defaults(func=_bench_export)

    sv = which.add_parser("serve", help="N concurrent real-time ASR (or VC) sessions against `speech serve` in its own "
                          "process", description="Final-result latency, deadline misses, server CPU and memory per N "
                          "(VC: also the converted audio's lag); the largest N with <= 1%% deadline misses.")
    sv.add_argument("--task", choices=["asr", "vc"], default="asr", help="asr (the FastConformer) or vc (the VC model)")
    sv.add_argument("--sessions", type=int, nargs="+", help="the N to run (asr: 16 24 32 40 48; vc: 1 2 3 4 6)")
    sv.add_argument("--seconds", type=float, default=30.0, help="how long each N runs (30)")
    sv.add_argument("--lookahead", type=float, default=80.0, help="FastConformer lookahead, ms (80: 160 ms chunks)")
    sv.add_argument("--frame-ms", type=float, default=40.0, help="audio per WebSocket frame (40)")
    sv.add_argument("--max-wait-ms", type=float, help="how long a lane waits to batch (the shipped setting: asr 20, "
                    "vc 5)")
    sv.add_argument("--threads", type=int, help="the server's torch threads (default: every core)")
    sv.add_argument("--backend", choices=["onnx", "torch"], nargs="+",
                    help="what runs the model's steps, one server each (onnx: ONNX Runtime on a step thread, the "
                    "shipped setting; torch: inline on the event loop); asr: onnx torch, vc: onnx")
    sv.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="the ONNX files' (fp32)")
    sv.add_argument("--json", default="bench-results/serve.json")
    sv.set_defaults(func=_bench_serve)

    from .bench.tts import TtsBenchConfig

    d = TtsBenchConfig()
    tt = which.add_parser("tts", help="time to first audio, RTF and WER of our streaming TTS vs Piper and Kokoro",
                          description="The same held-out sentences through each system, one stream at a time.")
    tt.add_argument("--sentences", type=int, default=d.sentences, help=f"held-out sentences ({d.sentences})")
    tt.add_argument("--skip", type=int, default=d.skip,
                    help="start after this many held-out sentences (0; e.g. 50: a set apart from the default 50)")
    tt.add_argument("--model", help="our TTS model directory (default: the shipped one)")
    tt.add_argument("--vocoder", help="our vocoder directory or 'universal' (default: the shipped causal student)")
    tt.add_argument("--backend", choices=["torch", "onnx"], default=d.backend,
                    help="ours: torch, or ONNX Runtime on the exported steps")
    tt.add_argument("--voice", help="our voice (default: the model's default voice)")
    tt.add_argument("--steps", type=int, default=d.steps, help=f"our solver steps ({d.steps})")
    tt.add_argument("--solver", choices=["euler", "midpoint"], default=d.solver)
    tt.add_argument("--guidance", type=float, default=d.guidance, help="classifier-free guidance weight (0)")
    tt.add_argument("--chunk", type=int, default=d.chunk, help=f"flow-step frames ({d.chunk})")
    tt.add_argument("--vocoder-chunk", type=int, default=d.vocoder_chunk, help=f"vocoder-step frames ({d.vocoder_chunk})")
    tt.add_argument("--peers", nargs="*", choices=["piper", "kokoro"], default=list(d.peers),
                    help="the peers to run (piper kokoro; none: ours only)")
    tt.add_argument("--no-judge", action="store_true", help="skip the Whisper judge (WER)")
    tt.add_argument("--long-minutes", type=float, default=d.long_minutes,
                    help=f"the long word-by-word stream, minutes of audio ({d.long_minutes:g}; 0 skips it)")
    tt.add_argument("--device", default="cpu", help="where ours runs (cpu; cuda for its GPU time to first audio)")
    tt.add_argument("--threads", type=int, help="torch and onnxruntime threads (default: every core)")
    tt.add_argument("--json", default="bench-results/tts.json")
    tt.set_defaults(func=_bench_tts)

    from .bench.vc import VCBenchConfig

    v = VCBenchConfig()
    vc = which.add_parser("vc", help="zero-shot VC of held-out speech into held-out voices: similarity, WER, latency",
                          description="Sources: VCTK sentences and Allison prompts VC never trained on; references: "
                          "20 held-out LibriSpeech speakers and 2 VCTK speakers.")
    vc.add_argument("--data", default=v.data, help=f"the shared real speech ({v.data})")
    vc.add_argument("--pairs", type=int, default=v.pairs, help=f"source/reference pairs ({v.pairs})")
    vc.add_argument("--allison", type=int, default=v.allison, help=f"Allison prompts among the sources ({v.allison})")
    vc.add_argument("--steps", type=int, default=v.steps, help=f"solver steps ({v.steps})")
    vc.add_argument("--chunk", type=int, default=v.chunk, help="mel frames per VC step (default: the model's)")
    vc.add_argument("--temperature", type=float, default=v.temperature,
                    help=f"scale of the fixed noise the flow starts from ({v.temperature})")
    vc.add_argument("--model", help="a VC model directory (default: the shipped one)")
    vc.add_argument("--vocoder", help="a vocoder directory or 'universal' (default: the shipped causal student)")
    vc.add_argument("--backend", choices=["torch", "onnx"], default=v.backend,
                    help="what runs the live steps: torch, or ONNX Runtime on the exported steps")
    vc.add_argument("--latency-seconds", type=float, default=v.latency_seconds,
                    help=f"source audio for the latency and compute runs ({v.latency_seconds:g})")
    vc.add_argument("--long-minutes", type=float, default=v.long_minutes,
                    help="a long synthetic session of held-out speech: compute and memory first vs last minute (0: skip)")
    vc.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    vc.add_argument("--json", default=v.json)
    vc.set_defaults(func=_bench_vc)

    vcc = which.add_parser("vc-content", help="which causal Whisper layer keeps the words and loses the speaker "
                           "(linear speaker probe, cross-speaker DTW word matching)")
    vcc.add_argument("--data", default=v.data, help=f"the shared real speech, an4 and fsdd600 ({v.data})")
    vcc.add_argument("--json", default="bench-results/vc_content.json")
    vcc.set_defaults(func=_bench_vc_content)


RECIPES = {  # speech train NAME -> (module under speech.training, help)
    "asr-fastconformer": ("fastconformer", "hybrid CTC/RNNT multi-lookahead FastConformer"),
    "whisper-causal": ("whisper_causal", "LoRA adapters for causal streaming Whisper (CarelessWhisper)"),
    "tts": ("tts", "chunk-aware flow-matching acoustic model for `speech say`"),
    "vocoder": ("vocoder", "causal HiFi-GAN student of the universal V1 (one frame of lookahead)"),
    "vc": ("vc", "zero-shot voice conversion decoder on causal Whisper content"),
}


def _add_train(subparsers) -> None:
    """Listed for ``speech train --help``; :func:`main` hands a recipe's own flags to its module."""
    train = subparsers.add_parser("train", help="training recipes of the shipped models")
    which = train.add_subparsers(dest="recipe", metavar="RECIPE", required=True)
    for name, (_, help_text) in RECIPES.items():
        which.add_parser(name, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speech",
        description="Streaming speech recognition, synthesis and voice conversion on one chunk scheduler.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_bench(subparsers)
    from .corpus.commands import add_corpus

    add_corpus(subparsers)
    from .transcribe import add_transcribe

    add_transcribe(subparsers)
    from .export_cli import add_export

    add_export(subparsers)
    from .serve_cli import add_serve

    add_serve(subparsers)
    from .say import add_say

    add_say(subparsers)
    from .mic import add_mic

    add_mic(subparsers)
    from .convert import add_convert

    add_convert(subparsers)
    _add_train(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"] and len(argv) > 1 and argv[1] in RECIPES:  # a recipe parses its own flags (and --help)
        import importlib

        return importlib.import_module(f"speech.training.{RECIPES[argv[1]][0]}").main(argv[2:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
