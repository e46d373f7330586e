"""`speech corpus build`: render the synthetic multi-voice corpus, deterministically for a seed.

Each voice renders in a fresh worker process (espeak-ng keeps hidden state between calls, so a voice's
audio only repeats when its calls run in the same order from a fresh start). Every voice first passes
the intelligibility gate (Whisper base, WER <= 15% on 20 fixed sentences); failing voices are excluded
and reported. Test voices render only test-split text and never appear in training.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from ..audio import resample
from ..judges.speaker import count_speakers
from .align import trim_to_speech, whisper_align
from .debian import ensure_packages
from .manifest import Utterance, write_manifest
from .text import TextGenerator, normalise, training_transcripts
from .voices import ENGINES, Engine, EngineUnavailable, Voice, catalogue, engine_of, speakable

MAX_WER = 0.15
GATE_SENTENCES = 20
GATE_CATEGORIES = ("names", "places", "commands", "questions", "compound")  # no digits for Whisper to write
# test voices, in order of preference: the first TEST_VOICE_COUNT that pass the gate never train
# (chosen among voices the d-vector judge finds distinct from every other voice of the default build)
TEST_VOICES = ("festival/ked", "flite/rms", "kokoro/jm_kumo", "kokoro/jf_alpha", "espeak/en+m1")
TEST_VOICE_COUNT = 2
PARALLEL_SENTENCES = 30  # the first sentences of every training voice are the same text (parallel data for VC)
ENGINE_WEIGHT = {"kokoro": 0.15}  # share of the hours relative to other voices: Kokoro runs at ~2.5x real time
EXPECTED_SPEED = {"kokoro": 2.5, "piper": 15.0, "rhvoice": 20.0, "festival": 40.0, "flite": 60.0}  # audio s/wall s
MAX_RATE = 24000
BATCH = 16


@dataclass
class BuildConfig:
    out: str = "corpora/synth"
    hours: float = 20.0
    seed: int = 0
    non_free: bool = False
    commercial_safe: bool = False
    workers: int = 2
    voices: tuple[str, ...] = ()  # glob patterns; empty = all
    data_dir: str = "../shared/data"
    install: bool = True


@dataclass
class VoiceResult:
    voice: str
    split: str = "train"
    utterances: int = 0
    seconds: float = 0.0
    wall_s: float = 0.0
    gate_wer: float | None = None
    gate_examples: list = field(default_factory=list)
    excluded: str = ""


def _derived_seed(seed: int, *parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()[:8], "big")


def gate_sentences() -> list[str]:
    """20 fixed test-split sentences without digits-prone categories (independent of the build seed)."""
    out = []
    for s in TextGenerator(seed=20261121, split="test"):
        if s.category in GATE_CATEGORIES:
            out.append(speakable(s.spoken, s.written))
        if len(out) == GATE_SENTENCES:
            return out
    raise AssertionError("unreachable: the generator is endless")


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    return float(jiwer.wer([normalise(r) for r in references], [normalise(h) or "<empty>" for h in hypotheses]))


def _gate(voice: Voice) -> tuple[float, list]:
    from ..judges.whisper import WHISPER_SAMPLE_RATE, transcribe

    engine = engine_of(voice)
    sentences = gate_sentences()
    heard = []
    for r in engine.render_many(voice, sentences):
        heard.append(transcribe(resample(r.audio, r.sample_rate, WHISPER_SAMPLE_RATE))[0])
    worst = sorted(zip(sentences, heard), key=lambda p: -word_error_rate([p[0]], [p[1]]))[:3]
    return word_error_rate(sentences, heard), [list(p) for p in worst]


def _sentences(voice: Voice, split: str, seed: int, data_dir: str):
    extra = training_transcripts(Path(data_dir)) if split == "train" and Path(data_dir).exists() else ()
    if split == "train":
        yield from TextGenerator(seed, "train", extra).sentences(PARALLEL_SENTENCES)
    yield from TextGenerator(_derived_seed(seed, voice.name), split, extra)


def _prepare(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """At most 24 kHz, peak at most 0.95 (some engines clip), float32."""
    if rate > MAX_RATE:
        audio, rate = resample(audio, rate, MAX_RATE), MAX_RATE
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak > 0.95:
        audio = audio * (0.95 / peak)
    return audio.astype(np.float32), rate


def render_voice(voice: Voice, split: str, seconds: float, cfg: BuildConfig) -> tuple[list[Utterance], VoiceResult]:
    """Render `seconds` of audio with one voice into cfg.out/audio/<voice>/ (run in a fresh process)."""
    import soundfile as sf

    engine = engine_of(voice)
    result = VoiceResult(voice.name, split)
    t0 = time.perf_counter()
    folder = Path(cfg.out) / "audio" / voice.name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    stream = _sentences(voice, split, cfg.seed, cfg.data_dir)
    utts: list[Utterance] = []
    while result.seconds < seconds:
        batch = [next(stream) for _ in range(BATCH)]
        texts = [speakable(s.spoken, s.written) for s in batch]
        for sentence, text, rendered in zip(batch, texts, engine.render_many(voice, texts)):
            if result.seconds >= seconds:
                break
            words = (trim_to_speech(rendered.words, rendered.audio, rendered.sample_rate) if rendered.words is not None
                     else whisper_align(text, rendered.audio, rendered.sample_rate))
            audio, rate = _prepare(rendered.audio, rendered.sample_rate)
            idx = len(utts)
            rel = f"audio/{folder.name}/{idx:06d}.flac"
            sf.write(Path(cfg.out) / rel, audio, rate, format="FLAC", subtype="PCM_16")
            words = [(w.lower(), s, e) for w, s, e in words]
            utts.append(Utterance(
                utt_id=f"{voice.name}/{idx:06d}", path=rel, speaker=voice.name, text=sentence.spoken,
                duration_s=len(audio) / rate, sample_rate=rate, voice=voice.name, engine=voice.engine,
                licence=voice.licence, split=split, words=words,
                extra={"written": sentence.written, "category": sentence.category, "timing": voice.timing}))
            result.seconds += len(audio) / rate
    result.utterances = len(utts)
    result.wall_s = time.perf_counter() - t0
    return utts, result


def _render_task(args):
    return render_voice(*args)


def _gate_task(voice: Voice) -> tuple[float, list, float]:
    t0 = time.perf_counter()
    wer, examples = _gate(voice)
    return wer, examples, time.perf_counter() - t0


def available_voices(cfg: BuildConfig) -> tuple[list[Voice], dict[str, str]]:
    """The voices the flags select that can render here, and why the others cannot."""
    wanted = [v for v in catalogue(cfg.non_free, cfg.commercial_safe)
              if not cfg.voices or any(fnmatch(v.name, p) for p in cfg.voices)]
    engines: list[Engine] = [e for e in ENGINES if any(v.engine == e.name for v in wanted)]
    if cfg.install:
        packages = sorted({p for e in engines for p in e.debian_packages})
        ensure_packages(packages, non_free=any(e.non_free for e in engines))
    missing: dict[str, str] = {}
    for e in engines:
        try:
            e.check()
        except EngineUnavailable as err:
            missing[e.name] = str(err)
    return [v for v in wanted if v.engine not in missing], missing


def plan(voices: list[Voice], hours: float) -> dict[str, float]:
    """Seconds per voice: equal shares, scaled by ENGINE_WEIGHT for slow engines."""
    weights = {v.name: ENGINE_WEIGHT.get(v.engine, 1.0) for v in voices}
    total = sum(weights.values())
    return {name: hours * 3600 * w / total for name, w in weights.items()}


def distinct_speakers(out: Path, utts: list[Utterance], per_voice: int = 6) -> list[list[str]]:
    """Voices grouped by the d-vector judge (DESIGN.md section 4): one group per distinct speaker."""
    import soundfile as sf

    from ..judges.speaker import DVECTOR_SAMPLE_RATE, dvector

    embeddings = {}
    for voice in sorted({u.voice for u in utts}):
        chosen = [u for u in utts if u.voice == voice][:per_voice]
        clips = []
        for u in chosen:
            audio, rate = sf.read(out / u.path, dtype="float32")
            clips.append(resample(audio, rate, DVECTOR_SAMPLE_RATE))
        embeddings[voice] = dvector(np.concatenate(clips))
    return count_speakers(embeddings)


def build(cfg: BuildConfig) -> dict:
    voices, missing = available_voices(cfg)
    if not voices:
        raise SystemExit(f"no voice can render here: {missing or 'no voice matches ' + str(cfg.voices)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # a fresh process per task: see the module docstring
    with context.Pool(cfg.workers, maxtasksperchild=1) as pool:
        gates = dict(zip([v.name for v in voices], pool.map(_gate_task, voices, chunksize=1)))
        passed = [v for v in voices if gates[v.name][0] <= MAX_WER]
        if not passed:
            raise SystemExit("no voice passed the intelligibility gate: " + ", ".join(
                f"{name} WER {g[0]:.1%}" for name, g in gates.items()))
        passing = {v.name for v in passed}
        tests = [name for name in TEST_VOICES if name in passing][:TEST_VOICE_COUNT]
        seconds = plan(passed, cfg.hours)
        tasks = [(v, "test" if v.name in tests else "train", seconds[v.name], cfg) for v in passed]
        # slowest voices first, so that the workers finish together
        slowest_first = sorted(tasks, key=lambda t: -t[2] / EXPECTED_SPEED.get(t[0].engine, 100.0))
        results = pool.map(_render_task, slowest_first, chunksize=1)
    wall = time.perf_counter() - t0
    for v in voices:
        if v not in passed:
            results.append(([], VoiceResult(v.name, excluded=f"intelligibility: WER {gates[v.name][0]:.1%} > "
                                                             f"{MAX_WER:.0%} on {GATE_SENTENCES} sentences")))
    for _, r in results:
        r.gate_wer, r.gate_examples = gates[r.voice][:2]
    results.sort(key=lambda r: r[1].voice)
    utts = [u for batch, _ in results for u in batch]
    write_manifest(out / "manifest.jsonl", utts)
    speakers = distinct_speakers(out, utts)
    report = {
        "seed": cfg.seed, "hours_requested": cfg.hours, "non_free": cfg.non_free,
        "commercial_safe": cfg.commercial_safe,
        "hours": sum(u.duration_s for u in utts) / 3600,
        "voices": [asdict(r) | {"wall_s": None} for _, r in results],
        "voices_used": sum(1 for _, r in results if not r.excluded),
        "test_voices": tests,
        "unavailable_engines": missing,
        "distinct_speakers": len(speakers), "speaker_groups": speakers,
        # a test voice is speaker-disjoint when the judge groups it with no training voice
        "test_voices_speaker_disjoint": {t: all(v in tests for g in speakers if t in g for v in g) for t in tests},
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    timing = {"wall_s": wall, "voices": {r.voice: r.wall_s for _, r in results},
              "gates": {name: g[2] for name, g in gates.items()}}
    (out / "timing.json").write_text(json.dumps(timing, indent=1, sort_keys=True) + "\n")
    report["timing"] = timing
    return report
