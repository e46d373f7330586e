"""`speech export`: every streaming step of a model as ONNX files (or TensorRT engines), and
`speech export check DIR`: the files against torch over a long chained stream."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from exports.onnx_export import DEFAULT_OPSET

from .asr_models import ModelNotFound
from .whisper_models import WhisperNotFound

USAGE = """speech export MODEL [--format onnx|tensorrt] [--precision fp32|fp16|int8] [--opset N] -o DIR
       speech export check DIR --audio FILE [FILE ...] [--voice REF]   (a tts directory needs no audio)"""


def add_export(subparsers) -> None:
    p = subparsers.add_parser("export", help="ONNX / TensorRT export of the streaming steps; `export check DIR`",
                              description=__doc__.split("\n\n")[0], usage=USAGE)
    p.add_argument("model", help="fastconformer (default model), a model directory or .nemo, whisper-causal, tts, "
                   "vc; or `check` followed by an export directory")
    p.add_argument("directory", nargs="?", help="with check: the directory `speech export` wrote")
    p.add_argument("--format", choices=["onnx", "tensorrt"], default="onnx")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                   help="weights and states (int8: 8-bit MatMul weights in blocks of 32, activations quantised per call in "
                   "the same blocks; states stay fp32)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("-o", "--out", help="output directory")
    p.add_argument("--whisper", default="base", help="whisper-causal: base (default), tiny.en or a directory")
    p.add_argument("--chunk", type=int, default=300, help="whisper-causal: chunk in ms (100, 200, 300)")
    p.add_argument("--adapter", default="shipped", help="whisper-causal: 'shipped', a directory, or 'none'")
    p.add_argument("--vocoder", help="tts, vc: a vocoder directory or 'universal' (default: the shipped causal "
                   "student)")
    p.add_argument("--steps", type=int, help="tts, vc: flow-matching solver steps, Euler (tts: 4, 16-frame chunks; "
                   "vc: 1, as the server runs it)")
    p.add_argument("--max-batch", type=int, default=16, help="tensorrt: the profile's largest batch")
    p.add_argument("--audio", nargs="+", help="check: audio files, streamed one after another as one signal")
    p.add_argument("--voice", help="check, vc: the reference recording (default: the first 10 s of the audio)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="check: largest difference for fp32 files")
    p.add_argument("--json", help="check: also write the results here")
    p.set_defaults(func=run)


def _source(args: argparse.Namespace) -> dict[str, object]:
    if (args.vocoder or args.steps) and args.model not in ("tts", "vc"):
        raise ValueError(f"--vocoder and --steps go with tts and vc, not {args.model!r}")
    if args.model in ("tts", "vc"):
        steps = args.steps or {"tts": 4, "vc": 1}[args.model]
        return {"model": args.model, "steps": steps, **({"vocoder": args.vocoder} if args.vocoder else {})}
    if args.model == "whisper-causal":
        return {"model": "whisper-causal", "whisper": args.whisper, "chunk_ms": args.chunk,
                "adapter": None if args.adapter == "none" else args.adapter}
    path = Path(args.model)
    return {"model": str(path.resolve()) if path.exists() else args.model}


def run(args: argparse.Namespace) -> int:
    try:
        if args.model == "check":
            return _check(args)
        if args.directory:
            raise ValueError(f"unexpected argument {args.directory!r}; the output directory goes after -o")
        if not args.out:
            raise ValueError("say where to write the files: -o DIR")
        return _export(args)
    except (ModelNotFound, WhisperNotFound, ValueError, OSError, RuntimeError) as error:
        print(f"speech export: {error}", file=sys.stderr)
        return 2


def _export(args: argparse.Namespace) -> int:
    from .exporting import export_model, load_exportable

    if args.format == "tensorrt":
        from exports.tensorrt import tensorrt_module

        tensorrt_module()  # says what is missing before anything is exported
        if args.precision == "int8":
            raise ValueError("TensorRT engines build from fp32 or fp16 files (int8 needs calibrated Q/DQ, not "
                             "ONNX Runtime's MatMulNBits)")
    model = load_exportable(_source(args))
    manifest_path = export_model(model, args.out, args.precision, args.opset)
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["steps"]:  # export_model ran the static check on every file
        checks = entry["checks"]
        trt = "yes" if not checks["non_tensorrt_ops"] else f"no ({', '.join(checks['non_tensorrt_ops'])})"
        print(f"{entry['file']}: {'ok' if checks['ok'] else '; '.join(checks['problems'])}; TensorRT ops: {trt}")
    if args.format == "tensorrt":
        from exports.tensorrt import build_engine

        for entry in manifest["steps"]:
            onnx_path = Path(args.out) / entry["file"]
            engine = build_engine(onnx_path, onnx_path.with_suffix(".plan"), max_batch=args.max_batch,
                                  fp16=args.precision == "fp16")
            print(f"{engine}: TensorRT engine, batch 1..{args.max_batch}")
    print(f"wrote {manifest_path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from .audio import read_audio
    from .bench.report import table, write_json
    from .export_check import check
    from .exporting import read_manifest

    if not args.directory:
        raise ValueError("usage: speech export check DIR --audio FILE [FILE ...]")
    speaks = read_manifest(args.directory)["source"]["model"] == "tts"  # TTS streams its own text
    if not args.audio and not speaks:
        raise ValueError("give the audio to stream: --audio FILE [FILE ...] (at least 50 chunks' worth)")
    audio = np.zeros(0, np.float32) if speaks else np.concatenate(
        [read_audio(path, sample_rate=16000)[0] for path in args.audio])
    voice = read_audio(args.voice, sample_rate=22050)[0] if args.voice else None
    results = check(args.directory, audio, args.tolerance, voice=voice)
    rows = [[r.label, sum(r.calls.values()), f"{r.worst:.1e}", f"{r.bar:.1e}", "identical" if r.same_text else "DIFFERS",
             "pass" if r.passed else "FAIL"] for r in results]
    print(f"{args.directory}: " + ("a paragraph of text as one stream" if speaks
                                   else f"{len(audio) / 16000:.1f} s of audio as one stream"))
    print(table(["run", "step calls", "max |onnx - torch|", "bar", "text", "result"], rows))
    worst = {}
    for r in results:
        for key, diff in r.max_abs.items():
            worst[key] = max(worst.get(key, 0.0), diff)
    print(table(["step/tensor", "max |onnx - torch|"], [[k, f"{v:.1e}"] for k, v in sorted(worst.items())]))
    if args.json:
        write_json(args.json, "export-check", {"directory": args.directory, "audio": args.audio},
                   {"runs": [vars(r) | {"passed": r.passed} for r in results]})
    return 0 if all(r.passed for r in results) else 1
