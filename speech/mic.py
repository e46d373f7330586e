"""`speech mic`: live captions from a microphone, recognised in-process (the same sessions and shared scheduler
as the server) or by a running server (``--server ws://HOST:PORT``); with ``--say`` typed text spoken, with
``--vc`` the microphone converted into another voice, each in-process or as a session of the server.

The sound card is read with ``sounddevice`` (PortAudio) in blocks; its callback thread hands each block to
the event loop, which runs the session. Captions: finals as lines with their time span, partials rewritten in
place on a terminal (``--format json``: every protocol message as a JSON line)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Self

import numpy as np

from .transcribe import parse_ms

BACKLOG_S = 10.0  # audio the recogniser may fall behind by before blocks are dropped (and said to be)


class NoInputDevice(RuntimeError):
    pass


def add_mic(subparsers) -> None:
    p = subparsers.add_parser("mic", help="live captions from the microphone (in-process or via a server)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    p.add_argument("--device", help="input device: its number or part of its name (default: the system's)")
    p.add_argument("--sample-rate", type=int, help="capture rate (default: the device's); resampled for the model")
    p.add_argument("--server", metavar="URL", help="recognise on a running `speech serve` (ws://HOST:PORT)")
    p.add_argument("--token", help="with --server: the server's token (or set SPEECH_TOKEN)")
    p.add_argument("--model", help="fastconformer (default), a model directory or .nemo file, or whisper-causal; "
                   "with --vc: a VC model directory (default: the shipped one)")
    p.add_argument("--lookahead", type=parse_ms, help="FastConformer lookahead, e.g. 80ms (default: 80ms)")
    p.add_argument("--chunk", type=parse_ms, help="whisper-causal chunk (default 300ms)")
    p.add_argument("--seconds", type=float, help="stop after this much audio (default: until Ctrl-C)")
    p.add_argument("--format", choices=["captions", "json"], default="captions",
                   help="captions: final lines (partials live on a terminal); json: every message as a JSON line")
    p.add_argument("--vc", action="store_true", help="live voice conversion: the microphone in the voice of --voice "
                   "REF.wav, to the speakers (in-process, or as a VC session of --server)")
    p.add_argument("--say", action="store_true", help="type to speak: standard input, as it is typed or piped, "
                   "spoken through the sound card (in-process, or as a TTS session of --server)")
    p.add_argument("--voice", help="with --say: a TTS voice (default the model's first); with --vc: reference "
                   "recording of the target voice (with --server also the name of a server voice)")
    p.add_argument("--vocoder", help="with --say or --vc, in-process: a vocoder directory or 'universal' (default: "
                   "the shipped causal student)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="with --say or --vc, in-process: where the steps run (onnx: ONNX Runtime, ~2x faster on CPU)")
    p.add_argument("--steps", type=int, default=1, help="with --vc, in-process: solver steps of the VC decoder (1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.say:
        return _say(args)
    if args.vc:
        return _vc(args)
    if args.vocoder or args.backend != "torch":
        print("speech mic: --vocoder and --backend choose the TTS of --say or the VC of --vc; captions take --model",
              file=sys.stderr)
        return 2
    try:
        import sounddevice
    except OSError as error:  # PortAudio itself is missing
        print(f"speech mic: cannot use the sound system ({error}); install PortAudio (Debian: libportaudio2)",
              file=sys.stderr)
        return 2
    if args.list_devices:
        inputs = input_devices(sounddevice)
        for index, device in inputs:
            print(f"{index}\t{device['name']}\t{device['max_input_channels']} ch\t{device['default_samplerate']:g} Hz")
        if not inputs:
            print("speech mic: no input devices found (no sound card, or PortAudio cannot see it)", file=sys.stderr)
        return 0 if inputs else 1
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    from .client import ServerError

    try:
        index, device = choose_device(sounddevice, args.device)
        rate = args.sample_rate or int(device["default_samplerate"])
        return asyncio.run(_live(args, sounddevice, index, rate))
    except (NoInputDevice, ValueError, OSError, ServerError, ConnectionClosed, InvalidHandshake) as error:
        print(f"speech mic: {error}", file=sys.stderr)
        return 2


def _say(args: argparse.Namespace) -> int:
    """Type to speak: standard input through a TTS stream to the sound card, as it arrives."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    from .client import ServerError
    from .say import Sink, load_tts, speak_pieces, stdin_pieces, tts_backend

    try:
        sink = Sink(None, play=True)
    except OSError as error:  # PortAudio missing, or no output device
        print(f"speech mic --say: cannot play audio here ({error})", file=sys.stderr)
        return 2
    try:
        if args.server:
            if args.vocoder or args.backend != "torch":
                raise ValueError("--vocoder and --backend choose the in-process TTS; with --server the server's "
                                 "models and backends speak")
            return asyncio.run(_say_remote(args, sink))
        from tts.flow_step import SolverSettings
        from tts.synthesizer import StreamingSynthesizer

        model, vocoder = load_tts(None if args.model in (None, "tts") else args.model, args.vocoder)
        synthesizer = StreamingSynthesizer(model, vocoder, SolverSettings(), args.voice or model.cfg.speaking_voice,
                                           backend=tts_backend(args.backend))
        speak_pieces(synthesizer, stdin_pieces(), sink)
        return 0
    except (ValueError, FileNotFoundError, ServerError, ConnectionClosed, InvalidHandshake) as error:
        print(f"speech mic --say: {error}", file=sys.stderr)
        return 2
    finally:
        sink.close()


def _vc(args: argparse.Namespace) -> int:
    """Live voice conversion: microphone blocks through one conversion stream, in-process (resampled to 16 kHz)
    or as a VC session of ``--server``; its audio to the speakers as it is made."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    from .audio import AudioError, read_audio
    from .client import ServerError
    from .say import Sink
    from .vc_models import load_converter

    try:
        if not args.voice:
            raise ValueError("--vc needs --voice REF.wav: 3-10 s of the target speaker (with --server also the "
                             "name of a server voice)")
        if args.server and (args.vocoder or args.backend != "torch" or args.steps != 1):
            raise ValueError("--vocoder, --backend and --steps choose the in-process conversion; with --server the "
                             "server's model converts")
        import sounddevice

        index, device = choose_device(sounddevice, args.device)
        rate = args.sample_rate or int(device["default_samplerate"])
        if args.server:
            reference = read_audio(args.voice, sample_rate=rate)[0] if Path(args.voice).is_file() else None
            convert, out_rate = _convert_remote(args, reference, rate), rate
        else:
            converter = load_converter(args.model, args.vocoder, steps=args.steps, backend=args.backend)
            stream = converter.stream(converter.voice(read_audio(args.voice, sample_rate=22050)[0]))
            convert, out_rate = _convert_in_process(stream, rate), 22050
        sink = Sink(None, play=True, rate=out_rate)
    except (NoInputDevice, ValueError, FileNotFoundError, AudioError, OSError) as error:
        print(f"speech mic --vc: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_vc_live(args, sounddevice, index, rate, convert, sink))
    except (ServerError, ConnectionClosed, InvalidHandshake) as error:
        print(f"speech mic --vc: {error}", file=sys.stderr)
        return 2
    finally:
        sink.close()


Play = Callable[[np.ndarray], None]
Convert = Callable[[AsyncIterator[np.ndarray], Play], Awaitable[None]]


async def _vc_live(args: argparse.Namespace, sd, device: int, rate: int, convert: Convert, sink) -> int:
    """The microphone's blocks through ``convert``, what it makes to the speakers as it comes."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)

    def play(audio: np.ndarray) -> None:
        if len(audio):
            sink.write(audio)

    with MicBlocks(sd, device, rate) as mic:
        print(f"speech mic --vc: converting {sd.query_devices(device)['name']} at {rate} Hz; Ctrl-C to stop",
              file=sys.stderr)
        await convert(_blocks(mic, rate, args.seconds, stop), play)
    if mic.dropped_s:
        print(f"speech mic --vc: conversion fell behind; {mic.dropped_s:.1f} s of audio were dropped", file=sys.stderr)
    return 0


def _convert_in_process(stream, rate: int) -> Convert:
    """One conversion stream (``vc.converter.ConversionStream``) fed blocks resampled to 16 kHz; plays 22.05 kHz."""
    from streaming.blocks.resample import StreamingResampler

    async def convert(blocks: AsyncIterator[np.ndarray], play: Play) -> None:
        resampler = StreamingResampler(rate, 16000)
        async for block in blocks:
            play(stream.process(resampler.process(block)))
        play(stream.process(resampler.process(np.zeros(0, np.float32), last=True)))
        play(stream.finish())

    return convert


def _convert_remote(args: argparse.Namespace, reference: np.ndarray | None, rate: int) -> Convert:
    """A VC session of ``--server`` at the microphone's rate: the reference recording first (or, where
    ``--voice`` is no file, the server voice of that name), then the blocks; plays the frames that come back."""
    from .client import SpeechClient

    async def convert(blocks: AsyncIterator[np.ndarray], play: Play) -> None:
        token = args.token or os.environ.get("SPEECH_TOKEN")
        async with await SpeechClient.connect(args.server, token=token) as client:
            await client.start("vc", sample_rate=rate, model=args.model, encoding="f32le",
                               voice=None if reference is not None else args.voice)
            if reference is not None:
                await client.send_reference(reference, rate)

            def heard(message: dict[str, Any]) -> None:
                if message["type"] == "audio":
                    play(np.frombuffer(message["data"], "<f4"))

            await _send_while_receiving(client, blocks, heard)

    return convert


async def _say_remote(args: argparse.Namespace, sink) -> int:
    """Standard input as the text messages of a TTS session; its audio frames to ``sink`` as they come."""
    from .client import ServerError, SpeechClient
    from .say import SAMPLE_RATE, stdin_pieces

    token = args.token or os.environ.get("SPEECH_TOKEN")
    loop = asyncio.get_running_loop()
    async with await SpeechClient.connect(args.server, token=token) as client:
        await client.start("tts", sample_rate=SAMPLE_RATE, model=args.model, encoding="f32le", voice=args.voice)

        async def receive() -> None:
            while True:
                message = await client.receive()
                if message["type"] == "audio":
                    sink.write(np.frombuffer(message["data"], "<f4"))
                elif message["type"] == "error":
                    raise ServerError(message["code"], message["message"])
                elif message["type"] == "done":
                    return

        receiver = asyncio.create_task(receive())
        pieces = stdin_pieces()
        while (piece := await loop.run_in_executor(None, next, pieces, None)) is not None:
            await client.send({"type": "text", "text": piece})
        await client.send({"type": "end"})
        await receiver
    return 0


def input_devices(sd) -> list[tuple[int, dict]]:
    try:
        devices = sd.query_devices()
    except sd.PortAudioError:
        return []
    return [(i, d) for i, d in enumerate(devices) if d["max_input_channels"] > 0]


def choose_device(sd, wanted: str | None) -> tuple[int, dict]:
    """The device by number or name fragment, else the default input; :class:`NoInputDevice` if none."""
    inputs = input_devices(sd)
    if not inputs:
        raise NoInputDevice("no input device: PortAudio sees no microphone on this machine (connect one, or "
                            "check that your user may use the sound card); `speech mic --list-devices` lists them")
    if wanted is None:
        default = sd.default.device[0] if isinstance(sd.default.device, list | tuple) else sd.default.device
        return next(((i, d) for i, d in inputs if i == default), inputs[0])
    matches = [(i, d) for i, d in inputs if wanted == str(i) or wanted.lower() in d["name"].lower()]
    if not matches:
        names = ", ".join(f"{i}: {d['name']}" for i, d in inputs)
        raise NoInputDevice(f"no input device matches {wanted!r}; inputs are {names}")
    return matches[0]


class MicBlocks:
    """The sound card's blocks as an async iterator of float32 mono arrays; ends when the stream finishes."""

    def __init__(self, sd, device: int, rate: int, block_s: float = 0.04) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, int(BACKLOG_S / block_s)))
        self.dropped_s = 0.0
        self.stream = sd.InputStream(device=device, channels=1, samplerate=rate, dtype="float32",
                                     blocksize=round(block_s * rate), callback=self._callback,
                                     finished_callback=lambda: self.loop.call_soon_threadsafe(self._put, None))

    def _callback(self, indata, frames, time, status) -> None:  # PortAudio's thread
        self.loop.call_soon_threadsafe(self._put, indata[:, 0].copy())

    def _put(self, block) -> None:
        try:
            self.queue.put_nowait(block)
        except asyncio.QueueFull:
            self.dropped_s += len(block) / self.stream.samplerate

    def __enter__(self) -> Self:
        self.stream.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stream.stop()
        self.stream.close()

    def __aiter__(self) -> MicBlocks:
        return self

    async def __anext__(self) -> np.ndarray:
        block = await self.queue.get()
        if block is None:
            raise StopAsyncIteration
        return block


class Captions:
    def __init__(self, fmt: str) -> None:
        self.fmt, self.tty = fmt, sys.stdout.isatty()

    def show(self, message: dict[str, Any]) -> None:
        if self.fmt == "json":
            print(json.dumps(message), flush=True)
        elif message["type"] == "final" and message["text"]:
            words = message["words"]
            span = f"[{words[0]['start']:7.2f} - {words[-1]['end']:7.2f}]" if words else ""
            print(f"\r\033[K{span} {message['text']}" if self.tty else f"{span} {message['text']}", flush=True)
        elif message["type"] == "partial" and self.tty:
            print(f"\r\033[K... {message['text']}", end="", flush=True)
        elif message["type"] == "error":
            print(f"speech mic: {message['code']}: {message['message']}", file=sys.stderr)


async def _live(args: argparse.Namespace, sd, device: int, rate: int) -> int:
    captions, stop = Captions(args.format), asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    options = {k: v for k, v in (("lookahead_ms", args.lookahead), ("chunk_ms", args.chunk)) if v is not None}
    with MicBlocks(sd, device, rate) as mic:
        print(f"speech mic: listening on {sd.query_devices(device)['name']} at {rate} Hz; Ctrl-C to stop",
              file=sys.stderr)
        if args.server:
            await _remote(args, mic, rate, options, captions, stop)
        else:
            await _in_process(args, mic, rate, options, captions, stop)
    if mic.dropped_s:
        print(f"speech mic: the recogniser fell behind; {mic.dropped_s:.1f} s of audio were dropped", file=sys.stderr)
    return 0


async def _blocks(mic: MicBlocks, rate: int, seconds: float | None, stop: asyncio.Event):
    """The microphone's blocks until it ends, ``seconds`` of audio have come, or Ctrl-C."""
    taken = 0
    async for block in mic:
        if seconds is not None:
            block = block[: max(0, round(seconds * rate) - taken)]
        taken += len(block)
        if len(block):
            yield block
        if stop.is_set() or (seconds is not None and taken >= seconds * rate):
            return


async def _in_process(args, mic: MicBlocks, rate: int, options: dict, captions: Captions, stop) -> None:
    from streaming.backend import TorchBackend
    from streaming.scheduler import ChunkScheduler

    from .asr_session import AsrSession
    from .engines import load_engine
    from .protocol import StartRequest

    model = args.model or "fastconformer"
    family = "whisper-causal" if model == "whisper-causal" else "fastconformer"
    spec = {"name": model, "family": family, "max_streams": 1, "max_wait_ms": 0}
    if family == "fastconformer":
        spec.update(path=None if model == "fastconformer" else model, default_lookahead_ms=80)
    elif "chunk_ms" in options:
        spec["chunk_ms"] = options["chunk_ms"]
    async with ChunkScheduler(TorchBackend("cpu")) as scheduler:
        engine = load_engine(spec, scheduler)
        session = AsrSession(StartRequest("asr", model, rate, "f32le", True, options), engine)
        async for block in _blocks(mic, rate, args.seconds, stop):
            for message in await session.audio(block):
                captions.show(message)
        for message in await session.end():
            captions.show(message)


async def _remote(args, mic: MicBlocks, rate: int, options: dict, captions: Captions, stop) -> None:
    from .client import SpeechClient

    token = args.token or os.environ.get("SPEECH_TOKEN")
    async with await SpeechClient.connect(args.server, token=token) as client:
        await client.start(sample_rate=rate, model=args.model, encoding="f32le", **options)
        await _send_while_receiving(client, _blocks(mic, rate, args.seconds, stop), captions.show)


async def _send_while_receiving(client, blocks: AsyncIterator[np.ndarray], on_message: Callable[[dict], None]) -> None:
    """The microphone's blocks to an open session, then ``end``, while its messages go to ``on_message`` until
    ``done``; an error message stops both and is raised (the server's own words)."""
    from .client import ServerError

    async def receive() -> None:
        while True:
            message = await client.receive()
            on_message(message)
            if message["type"] == "error":
                raise ServerError(message["code"], message["message"])
            if message["type"] == "done":
                return

    receiver = asyncio.create_task(receive())
    try:
        async for block in blocks:
            if receiver.done():
                break
            await client.send_audio(block)
        if not receiver.done():
            await client.send({"type": "end"})
    finally:
        await receiver  # its error is the one to report
