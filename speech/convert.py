"""`speech convert`: voice conversion of audio files, through the same live path a microphone session takes.

Each source is fed to a :class:`vc.converter.ConversionStream` in 100 ms pieces, as a live session would, so
the file written is what a listener would have heard (it equals the offline conversion: tests/test_vc_*).
Sources of any rate are resampled to 16 kHz; the reference to 22.05 kHz; the output is 22.05 kHz.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from .audio import AudioError, read_audio, write_audio

OUTPUT_RATE = 22050
PIECE_S = 0.1


def add_convert(subparsers) -> None:
    p = subparsers.add_parser("convert", help="voice conversion: the words of IN.wav in the voice of --voice REF.wav")
    p.add_argument("source", nargs="?", help="the speech to convert (any rate; mixed to mono)")
    p.add_argument("--voice", help="3-10 s of the target speaker (the first 10 s are used)")
    p.add_argument("-o", "--out", help="output WAV (22.05 kHz)")
    p.add_argument("--pairs", help="TSV with columns id, source, reference (header line); paths relative to it")
    p.add_argument("--out-dir", help="folder for --pairs outputs (ID.wav each)")
    p.add_argument("--steps", type=int, default=2, help="ODE solver steps, 1-10 (default 2)")
    p.add_argument("--chunk", type=int, default=None, help="mel frames per VC step (11.6 ms each; default 6)")
    p.add_argument("--model", default=None, help="a VC model directory (default: the shipped one)")
    p.add_argument("--vocoder", default=None, help="a vocoder directory, or 'universal' (default: the shipped "
                   "causal student)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: run the live steps on ONNX Runtime (exported to the cache on first use)")
    p.set_defaults(func=run_convert)


def read_pairs(path: Path) -> list[tuple[str, Path, Path]]:
    """``(id, source, reference)`` rows of a pairs TSV; paths relative to the TSV's folder."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    missing = {"id", "source", "reference"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise ValueError(f"{path}: expected a header with columns id, source, reference (tab-separated) and at "
                         f"least one row; missing: {', '.join(sorted(missing)) or 'rows'}")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids) or any(not i or "/" in i for i in ids):
        raise ValueError(f"{path}: ids must be unique, non-empty file names (no '/')")
    return [(r["id"], path.parent / r["source"], path.parent / r["reference"]) for r in rows]


def convert_file(converter, source: Path, reference: Path) -> np.ndarray:
    """One source in the voice of one reference, streamed in 100 ms pieces."""
    audio, _ = read_audio(source, sample_rate=16000)
    stream = converter.stream(converter.voice(read_audio(reference, sample_rate=OUTPUT_RATE)[0]))
    piece = int(PIECE_S * 16000)
    out = [stream.process(audio[i : i + piece]) for i in range(0, len(audio), piece)]
    return np.concatenate([*out, stream.finish()])


def run_convert(args: argparse.Namespace) -> int:
    try:
        if bool(args.source) == bool(args.pairs):
            raise ValueError("give exactly one of: SOURCE (with --voice and -o), --pairs PAIRS.tsv (with --out-dir)")
        if args.source and not (args.voice and args.out):
            raise ValueError("SOURCE needs --voice REF.wav and -o OUT.wav")
        if args.pairs and not args.out_dir:
            raise ValueError("--pairs needs --out-dir DIR")
        jobs = (read_pairs(Path(args.pairs)) if args.pairs
                else [(Path(args.out).stem, Path(args.source), Path(args.voice))])
        from .vc_models import load_converter

        converter = load_converter(args.model, args.vocoder, steps=args.steps, chunk=args.chunk,
                                   backend=args.backend)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"speech convert: {error}", file=sys.stderr)
        return 2
    failed = 0
    for name, source, reference in jobs:
        target = Path(args.out) if args.source else Path(args.out_dir) / f"{name}.wav"
        try:
            audio = convert_file(converter, source, reference)
        except (AudioError, ValueError) as error:  # one bad pair does not stop the others
            print(f"speech convert: {name}: {error}", file=sys.stderr)
            failed += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        write_audio(target, audio, OUTPUT_RATE)
    if args.pairs:
        print(f"wrote {len(jobs) - failed} files to {args.out_dir}" + (f"; {failed} failed" if failed else ""),
              file=sys.stderr)
    return 1 if failed else 0
