"""The `speech corpus ...` subcommands: build, real, check-alignments, pack."""

from __future__ import annotations

import argparse
import json
import sys

from ..bench.report import table


def _clear_errors(run):
    """Missing or malformed inputs end in one line saying what was wrong, not a traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (FileNotFoundError, ValueError) as e:
            print(f"speech corpus {args.corpus}: {e}", file=sys.stderr)
            return 2

    return wrapped


def _build(args: argparse.Namespace) -> int:
    from .build import BuildConfig, build

    cfg = BuildConfig(out=args.out, hours=args.hours, seed=args.seed, non_free=args.non_free,
                      commercial_safe=args.commercial_safe, workers=args.workers, voices=tuple(args.voices or ()),
                      data_dir=args.data, install=not args.no_install)
    report = build(cfg)
    wall = report["timing"]["voices"]
    rows = []
    for v in report["voices"]:
        speed = v["seconds"] / wall[v["voice"]] if wall[v["voice"]] else 0.0
        rows.append([v["voice"], v["split"], v["seconds"] / 3600, v["utterances"], speed,
                     f"{v['gate_wer']:.1%}", v["excluded"] or "used"])
    print(table(["voice", "split", "hours", "utts", "audio s / wall s", "gate WER", "status"], rows))
    print(f"\n{report['hours']:.2f} h from {report['voices_used']} voices "
          f"({report['distinct_speakers']} distinct speakers by the d-vector judge), test voices "
          f"{report['test_voices']} (speaker-disjoint by the judge: {report['test_voices_speaker_disjoint']}); "
          f"{report['hours'] * 3600 / report['timing']['wall_s']:.1f} audio s per wall s "
          f"overall ({report['timing']['wall_s'] / 60:.1f} min)")
    for engine, why in report["unavailable_engines"].items():
        print(f"unavailable: {engine}: {why}")
    print("speaker groups: " + "; ".join(", ".join(g) for g in report["speaker_groups"] if len(g) > 1))
    print(f"wrote {cfg.out}/manifest.jsonl, report.json, timing.json")
    return 0


def _real(args: argparse.Namespace) -> int:
    from .real import build_real

    summary = build_real(args.data, args.out, install=not args.no_install)
    print(table(["set", "utterances", "hours"], [[k, n, h] for k, (n, h) in summary.items()]))
    return 0


def _tts_pack(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .tts_pack import build_tts_pack

    info = build_tts_pack(Path(args.out), seed=args.seed)
    rows = [[name, v["source"], v["hours"], v["utterances"]] for name, v in info["summary"].items()]
    print(table(["voice", "source", "hours", "utts"], rows))
    print(f"{info['hours']:.2f} h, {info['bytes'] / 2**20:.1f} MiB of mels, wrote {args.out}")
    return 0


def _check_alignments(args: argparse.Namespace) -> int:
    from .align import check_alignments

    overall, per_engine = check_alignments(args.manifest, args.utterances)
    rows = [[e, d.utterances, d.boundaries, d.median_ms, d.p90_ms, d.within_40ms] for e, d in per_engine.items()]
    rows.append(["all", overall.utterances, overall.boundaries, overall.median_ms, overall.p90_ms, overall.within_40ms])
    print("engine word times vs forced aligner (Whisper base alignment heads + DTW, trimmed to speech)")
    print(table(["engine", "utts", "boundaries", "median ms", "p90 ms", "share <= 40 ms"], rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"overall": vars(overall), "per_engine": {e: vars(d) for e, d in per_engine.items()}}, f, indent=1)
    print(f"target median <= 40 ms: {'met' if overall.median_ms <= 40 else 'NOT met'}")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from .pack import pack

    report = pack(args.manifests, args.out, args.hours, args.max_mib, tuple(args.splits), args.seed)
    print(f"{report.utterances} utterances, {report.hours:.2f} h in {len(report.shards)} shard(s), "
          f"{report.bytes / 2**20:.1f} MiB -> {args.out}")
    return 0


def _vc_pack(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .vc_split import build_vc_pack

    synth = Path(args.synth_manifest) if args.synth_manifest else None
    info = build_vc_pack(Path(args.out), Path(args.real), synth, args.max_mib, args.seed)
    print(f"{info['utterances']} utterances of {info['speakers']} speakers, {info['hours']:.2f} h in "
          f"{len(info['shards'])} shard(s), {info['bytes'] / 2**20:.1f} MiB -> {args.out}")
    return 0


def _whisper_labels(args: argparse.Namespace) -> int:
    from .whisper_labels import relabel_pack

    counts = relabel_pack(args.pack, args.out, args.synth_manifest)
    print(", ".join(f"{what}: {n}" for what, n in sorted(counts.items())) + f" -> {args.out}")
    return 0


def add_corpus(subparsers) -> None:
    corpus = subparsers.add_parser("corpus", help="build the training and evaluation corpora")
    which = corpus.add_subparsers(dest="corpus", metavar="STEP", required=True)

    b = which.add_parser("build", help="render the synthetic multi-voice corpus (deterministic for a seed)")
    b.add_argument("--hours", type=float, default=20.0)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", default="corpora/synth")
    b.add_argument("--workers", type=int, default=2, help="voices rendered in parallel (processes)")
    b.add_argument("--voices", nargs="*", help="glob patterns of voice names (e.g. 'espeak/*'); default all")
    b.add_argument("--non-free", action="store_true", help="add Debian contrib/non-free voices (MBROLA, RHVoice, Pico)")
    b.add_argument("--commercial-safe", action="store_true", help="leave out voices whose licence forbids commercial use")
    b.add_argument("--data", default="../shared/data", help="real speech whose transcripts join the training text")
    b.add_argument("--no-install", action="store_true", help="do not install missing Debian packages")
    b.set_defaults(func=_clear_errors(_build))

    r = which.add_parser("real", help="manifests of ../shared/data and the Asterisk prompts (decoded to 16 kHz)")
    r.add_argument("--data", default="../shared/data")
    r.add_argument("--out", default="corpora/real")
    r.add_argument("--no-install", action="store_true")
    r.set_defaults(func=_clear_errors(_real))

    c = which.add_parser("check-alignments", help="engine word times vs the forced aligner (median, p90)")
    c.add_argument("--manifest", default="corpora/synth/manifest.jsonl")
    c.add_argument("--utterances", type=int, default=200)
    c.add_argument("--json", help="also write the numbers here")
    c.set_defaults(func=_clear_errors(_check_alignments))

    p = which.add_parser("pack", help="shards (Opus + index) that fit one device call")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--out", default="corpora/pack")
    p.add_argument("--hours", type=float, default=5.0)
    p.add_argument("--max-mib", type=float, default=60.0, help="size limit of one shard with its index")
    p.add_argument("--splits", nargs="+", default=["train"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_clear_errors(_pack))

    w = which.add_parser("whisper-labels", help="a pack relabelled in Whisper's written style, with word times")
    w.add_argument("pack")
    w.add_argument("--out", required=True)
    w.add_argument("--synth-manifest", default="corpora/synth/manifest.jsonl",
                   help="where the synthetic utterances' written text is (extra.written)")
    w.set_defaults(func=_clear_errors(_whisper_labels))

    v = which.add_parser("vc-pack", help="the VC training set (held-out benchmark speakers and prompts left out)")
    v.add_argument("--out", default="corpora/vcpack")
    v.add_argument("--real", default="corpora/real", help="`speech corpus real`'s manifests")
    v.add_argument("--synth-manifest", default="corpora/synth/manifest.jsonl", help="'' to leave synthetic voices out")
    v.add_argument("--max-mib", type=float, default=11.0, help="size limit of one shard (one device call each)")
    v.add_argument("--seed", type=int, default=0)
    v.set_defaults(func=_clear_errors(_vc_pack))

    t = which.add_parser("tts-pack", help="the TTS training set: phoneme ids + 8-bit HiFi-GAN mels per voice")
    t.add_argument("--out", default="corpora/ttspack")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_clear_errors(_tts_pack))


