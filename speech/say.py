"""`speech say`: text to speech through the streaming path (the same steps the server runs).

Three ways in: a text argument (``-o out.wav``), ``--text-file LINES.txt --out-dir DIR`` (one WAV per
line, the model loaded once) and ``--stream`` (standard input read as it arrives, e.g. piped from an LLM
or typed; audio is written, or played, chunk by chunk while the text is still coming).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

DEFAULT_TTS = Path(__file__).parent / "models" / "tts"
DEFAULT_VOCODER = Path(__file__).parent / "models" / "vocoder"
UNIVERSAL_VOCODER = "universal"
SAMPLE_RATE = 22050


def load_tts(model_dir: str | Path | None = None, vocoder: str | Path | None = None):
    """``(acoustic model, vocoder)``: the shipped model unless ``model_dir`` names another, with the shipped
    causal vocoder unless ``vocoder`` names another directory or ``universal`` (HiFi-GAN V1: exact, 148 ms
    later, several times the compute)."""
    from tts.acoustic import load_acoustic

    directory = Path(model_dir or DEFAULT_TTS)
    if not (directory / "config.json").exists():
        raise FileNotFoundError(f"{directory}: not a TTS model directory (config.json + model.safetensors)")
    return load_acoustic(directory), load_tts_vocoder(vocoder)


def load_tts_vocoder(vocoder: str | Path | None = None):
    """The shipped causal vocoder (None), another directory, or ``universal`` (HiFi-GAN V1); TTS and VC share it."""
    from tts.hifigan import load_vocoder

    vocoder = DEFAULT_VOCODER if vocoder is None else vocoder
    return load_vocoder(None if vocoder == UNIVERSAL_VOCODER else vocoder)


def tts_backend(name: str, threads: int | None = None):
    """``torch`` (None) or ``onnx``: ONNX Runtime on the steps exported to the cache (fp32), each session
    using ``threads`` (None: ONNX Runtime's default, every core)."""
    from .engines import onnx_backend

    try:
        backend = onnx_backend({"name": "tts", "backend": name})
    except ModuleNotFoundError as error:
        raise ValueError(f"--backend onnx needs onnxruntime and onnx (pip install -e .[export]): {error}") from error
    if backend is not None and threads:
        backend.threads = threads
    return backend


def add_say(subparsers) -> None:
    p = subparsers.add_parser("say", help="text to speech (streaming flow matching + HiFi-GAN), into WAV files")
    p.add_argument("text", nargs="?", help="the text to say (or --text-file, or --stream)")
    p.add_argument("-o", "--out", help="output WAV (22.05 kHz); with --stream, written as audio is made")
    p.add_argument("--text-file", help="one utterance per line -> DIR/0001.wav, ... (with --out-dir)")
    p.add_argument("--out-dir", help="folder for --text-file outputs")
    p.add_argument("--stream", action="store_true", help="read standard input as it arrives")
    p.add_argument("--play", action="store_true", help="play through the sound card (sounddevice)")
    p.add_argument("--voice", default=None, help="a built-in voice (default: the model's first)")
    p.add_argument("--steps", type=int, default=4, help="ODE solver steps, 1-10")
    p.add_argument("--solver", default="euler", choices=["euler", "midpoint"])
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight (0: off)")
    p.add_argument("--chunk", type=int, default=16, help="mel frames per acoustic step (11.6 ms each)")
    p.add_argument("--length-scale", type=float, default=1.0, help="> 1 speaks slower")
    p.add_argument("--model", default=None, help="a TTS model directory (default: the shipped one)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: run the steps on ONNX Runtime (exported to the cache on first use; ~2x faster on CPU)")
    p.add_argument("--vocoder", default=None, help="a vocoder directory, or 'universal' (HiFi-GAN V1, exact but "
                   "148 ms later and ~4x the compute); default: the shipped causal student")
    p.set_defaults(func=run_say)


def _settings(args: argparse.Namespace):
    from tts.flow_step import SolverSettings

    return SolverSettings(steps=args.steps, solver=args.solver, guidance=args.guidance, chunk=args.chunk)


def run_say(args: argparse.Namespace) -> int:
    modes = [bool(args.text), bool(args.text_file), bool(args.stream)]
    try:
        if sum(modes) != 1:
            raise ValueError("give exactly one of: TEXT, --text-file LINES.txt, --stream")
        if args.text_file and not args.out_dir:
            raise ValueError("--text-file needs --out-dir DIR")
        if args.text and not (args.out or args.play):
            raise ValueError("say where the audio goes: -o out.wav or --play")
        settings = _settings(args)
        model, vocoder = load_tts(args.model, args.vocoder)
        backend = tts_backend(args.backend)
        voice = args.voice or model.cfg.speaking_voice
        from tts.synthesizer import voice_index

        voice_index(model, voice)
    except (ValueError, FileNotFoundError) as error:
        print(f"speech say: {error}", file=sys.stderr)
        return 2
    from tts.synthesizer import StreamingSynthesizer, synthesize

    def synthesizer() -> StreamingSynthesizer:
        return StreamingSynthesizer(model, vocoder, settings, voice, length_scale=args.length_scale, backend=backend)

    if args.text_file:
        lines = [line.strip() for line in Path(args.text_file).read_text().splitlines()]
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        width = max(4, len(str(len(lines))))
        written = 0
        for i, line in enumerate(lines, 1):
            if line:
                _write(out_dir / f"{i:0{width}d}.wav", synthesize(synthesizer(), line))
                written += 1
        print(f"wrote {written} files to {out_dir}", file=sys.stderr)
        return 0
    sink = Sink(args.out, args.play)
    try:
        speak_pieces(synthesizer(), [args.text] if args.text else stdin_pieces(), sink)
    finally:
        sink.close()
    return 0


def speak_pieces(synthesizer, pieces, sink: Sink) -> None:
    """Text pieces as they arrive through one stream; each piece's audio goes to ``sink`` as soon as it is made."""
    for piece in pieces:
        for audio in synthesizer.push(piece):
            sink.write(audio)
    for audio in synthesizer.finish():
        sink.write(audio)


def stdin_pieces():
    """Standard input as it arrives: whatever one read returns (a typed line, a piped token burst)."""
    fd = sys.stdin.fileno()
    while piece := os.read(fd, 4096):
        yield piece.decode("utf-8", errors="replace")


def _write(path: Path, audio: np.ndarray) -> None:
    import soundfile

    soundfile.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")


class Sink:
    """Where audio goes as it is made: a WAV file written incrementally and/or the sound card."""

    def __init__(self, out: str | None, play: bool, rate: int = SAMPLE_RATE) -> None:
        import soundfile

        self.file = soundfile.SoundFile(out, "w", rate, 1, subtype="PCM_16") if out else None
        self.stream = None
        if play:
            import sounddevice

            self.stream = sounddevice.OutputStream(samplerate=rate, channels=1, dtype="float32")
            self.stream.start()

    def write(self, audio: np.ndarray) -> None:
        if self.file is not None:
            self.file.write(audio)
            self.file.flush()
        if self.stream is not None:
            self.stream.write(audio.astype(np.float32)[:, None])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.stream is not None:
            self.stream.stop()
            self.stream.close()
