"""`speech transcribe`: files (or a manifest) through the streaming recogniser, as live audio would arrive.

Every file is a live session fed 100 ms pieces; the sessions of up to 32 files (16 for Whisper) run together
on the chunk scheduler, whose lanes batch their steps, and each decodes its own chunks incrementally;
partial hypotheses print as they change and finals with word times when an
endpoint (or the end of the file) closes a segment. ``--offline`` runs the full-signal forward under the
same attention masks instead (the parity reference).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from asr.fastconformer.quantize import quantize_int8
from asr.fastconformer.recognizer import EndpointConfig, Recognizer
from asr.fastconformer.scheduled import transcribe_many
from asr.hypothesis import Hypothesis

from .asr_models import ModelNotFound, load_fastconformer
from .audio import AudioError, read_audio
from .whisper_models import WHISPER_MODELS, WhisperNotFound, load_causal_whisper

PIECE_S = 0.1
BATCH_FILES = 32  # files read and streamed together (memory bound: their audio is held)


def parse_ms(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"a duration like 80ms or 0.48s, got {text!r}")
    value = float(match.group(1))
    return value * 1000 if match.group(2) == "s" else value


def add_transcribe(subparsers) -> None:
    p = subparsers.add_parser("transcribe", help="speech to text for audio files, through the streaming path",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", help="audio files (any format libsndfile reads; resampled to 16 kHz)")
    p.add_argument("--model", help="fastconformer (the default), a model directory or NeMo .nemo file; "
                   "whisper-causal (streaming Whisper base + LoRA) or whisper-offline (plain Whisper base)")
    p.add_argument("--lookahead", type=parse_ms, help="e.g. 80ms; one the model was trained for (default: its first)")
    p.add_argument("--decoder", choices=["rnnt", "ctc"], help="for hybrid models (default: rnnt)")
    p.add_argument("--offline", action="store_true", help="full-signal forward instead of streaming")
    p.add_argument("--int8", action="store_true",
                   help="int8 encoder weights on CPU: about 2.5x faster per chunk, text within a WER point or so")
    p.add_argument("--format", choices=["events", "text", "json"], default="events",
                   help="events: partial and final lines with word times; text: one final line per file")
    p.add_argument("--chunk", type=parse_ms, default=300.0, help="whisper-causal: chunk of 100, 200 or 300ms")
    p.add_argument("--adapter", default="shipped",
                   help="whisper-causal: LoRA adapter directory, 'shipped' (default) or 'none' (the no-LoRA baseline)")
    p.add_argument("--whisper", default="base", help="whisper-*: base (default), tiny.en or a Hugging Face directory")
    p.add_argument("--beam", type=int, default=1, help="whisper-causal: 1 greedy (default), 2-4 beam search")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: the steps run in ONNX Runtime (exported to the cache on first use, or from --onnx)")
    p.add_argument("--onnx", metavar="DIR", help="with --backend onnx: a `speech export` directory of this model")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                   help="with --backend onnx and no --onnx: the precision to export at (default fp32)")
    p.add_argument("--server", metavar="URL",
                   help="stream the files through a running `speech serve` (ws://HOST:PORT) instead of in-process")
    p.add_argument("--token", help="with --server: the server's token (or set SPEECH_TOKEN)")
    p.add_argument("--no-endpoint", action="store_true", help="one segment per file (no endpoint rules)")
    p.add_argument("--manifest", help="TSV with utt_id and path columns (../shared/data format)")
    p.add_argument("--out", help="with --manifest: write utt_id<TAB>text lines here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        items = _inputs(args)
        if args.server:
            transcriber = _remote(args)
        else:
            transcriber = _whisper(args) if args.model in WHISPER_MODELS else _fastconformer(args)
    except (ModelNotFound, WhisperNotFound, ValueError, OSError) as error:
        print(f"speech transcribe: {error}", file=sys.stderr)
        return 2
    failures, batch = 0, []
    with open(args.out, "w", encoding="utf-8") if args.out else contextlib.nullcontext() as out:
        for name, path in items:
            try:
                batch.append((name, read_audio(path, sample_rate=16000)[0]))
            except AudioError as error:
                print(f"speech transcribe: {error}", file=sys.stderr)
                failures += 1
            if len(batch) == BATCH_FILES or (name, path) == items[-1]:
                _emit(transcriber, batch, args, out)
                batch = []
    return 1 if failures else 0


Transcriber = Callable[[list[np.ndarray]], list[list[Hypothesis]]]


def _backend(args: argparse.Namespace):
    """The backend the steps run on: torch (None: each model's default) or ONNX Runtime."""
    if args.backend == "torch":
        if args.onnx:
            raise ValueError("--onnx DIR goes with --backend onnx")
        return None
    if args.offline or args.int8:
        raise ValueError("--backend onnx runs the streaming steps; --offline and --int8 are torch's "
                         "(for int8 ONNX files use --precision int8)")
    from streaming.onnx_backend import OnnxBackend

    from .exporting import cache_locator, directory_locator

    if args.onnx:
        locate, precision = directory_locator(args.onnx)
        return OnnxBackend(locate, precision=precision)
    return OnnxBackend(cache_locator(args.precision), precision=args.precision)


def _remote(args: argparse.Namespace) -> Transcriber:
    """Each file a session of a running server; the model's settings are the server's."""
    import os

    from .client import transcribe_remote

    local_only = {"--offline": args.offline, "--int8": args.int8, "--backend onnx": args.backend != "torch",
                  "--onnx": args.onnx, "--decoder": args.decoder, "--no-endpoint": args.no_endpoint,
                  "--beam": args.beam != 1, "--adapter": args.adapter != "shipped", "--whisper": args.whisper != "base"}
    given = [flag for flag, value in local_only.items() if value]
    if given:
        raise ValueError(f"{', '.join(given)}: in-process settings; with --server the server's config decides them")
    if args.model == "whisper-offline":
        raise ValueError("whisper-offline is not a streaming model; the server runs streaming sessions")
    options = {"lookahead_ms": args.lookahead} if args.model not in WHISPER_MODELS else {"chunk_ms": args.chunk}
    token = args.token or os.environ.get("SPEECH_TOKEN")
    return lambda audios: asyncio.run(transcribe_remote(args.server, audios, 16000, model=args.model, token=token,
                                                        frame_s=PIECE_S, **options))


def _fastconformer(args: argparse.Namespace) -> Transcriber:
    """Files stream together through the scheduler (batched encoder lane), or the offline forward."""
    model = load_fastconformer(args.model)
    if args.int8:
        quantize_int8(model.encoder)
    recognizer = Recognizer(model, args.lookahead, args.decoder,
                            EndpointConfig(enabled=not (args.no_endpoint or args.offline)), _backend(args))
    if args.offline:
        return lambda audios: [[h] for h in recognizer.transcribe_offline(audios)]
    return lambda audios: asyncio.run(transcribe_many(recognizer, audios, piece_s=PIECE_S))


def _whisper(args: argparse.Namespace) -> Transcriber:
    """Causal streaming Whisper (one session per file, fed 100 ms pieces, the files' sessions batched on the
    scheduler) or plain offline Whisper."""
    from asr.whisper.offline import transcribe_offline
    from asr.whisper.scheduled import transcribe_many as whisper_many
    from asr.whisper.streaming import StreamConfig

    backend = _backend(args)
    if args.model == "whisper-offline":
        if backend is not None:
            raise ValueError("whisper-offline is plain Whisper in torch; --backend onnx runs whisper-causal")
        plain = load_causal_whisper(args.whisper, adapter=None)
        return lambda audios: [[transcribe_offline(plain, audio)] for audio in audios]
    chunk_ms = round(args.chunk)
    cfg = StreamConfig(chunk_ms=chunk_ms, endpoint_silence_s=None if args.no_endpoint else 0.8, beam=args.beam)
    model = load_causal_whisper(args.whisper, chunk_ms, None if args.adapter == "none" else args.adapter)
    if args.offline:  # the causal model's offline form: the same block mask over the whole signal
        return lambda audios: [[transcribe_offline(model, audio, cfg.frames)] for audio in audios]
    return lambda audios: asyncio.run(whisper_many(model, audios, cfg, concurrency=min(16, len(audios)),
                                                   piece_s=PIECE_S, backend=backend))


def _emit(transcriber: Transcriber, batch: list[tuple[str, np.ndarray]], args: argparse.Namespace, out) -> None:
    """Transcribes a group of files and prints in input order."""
    if not batch:
        return
    results = transcriber([audio for _, audio in batch])
    for (name, _), events in zip(batch, results, strict=True):
        text = " ".join(e.text for e in events if e.final and e.text)
        if out:
            out.write(f"{name}\t{text}\n")
        elif args.format == "text":
            print(text, flush=True)
        else:
            _print_events(name, events, args.format)


def _inputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    if args.manifest:
        if args.files:
            raise ValueError("give audio files or --manifest, not both")
        manifest = Path(args.manifest)
        with open(manifest, encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        if not rows or not {"utt_id", "path"} <= set(rows[0]):
            raise ValueError(f"{manifest}: a manifest needs a header with utt_id and path columns")
        return [(r["utt_id"], manifest.parent / r["path"]) for r in rows]
    if args.out:
        raise ValueError("--out goes with --manifest")
    if not args.files:
        raise ValueError("give one or more audio files, or --manifest M.tsv --out HYP.tsv")
    return [(f, Path(f)) for f in args.files]


def _print_events(name: str, events: list[Hypothesis], fmt: str) -> None:
    for e in events:
        if fmt == "json":
            print(json.dumps({"file": name, "final": e.final, "segment": e.segment, "text": e.text,
                              "words": [[w.text, round(w.start, 2), round(w.end, 2)] for w in e.words],
                              "stable": e.stable}), flush=True)
        elif e.final:
            words = " ".join(f"{w.text}[{w.start:.2f}-{w.end:.2f}]" for w in e.words)
            print(f"{name}\tfinal\t{e.text}\t{words}", flush=True)
        else:
            print(f"{name}\tpartial\t{e.text}", flush=True)
