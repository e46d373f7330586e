"""`speech export check DIR`: torch and the exported files side by side over one long chained stream.

Both backends run the same host logic (decoding, endpointing) over the same signal, each chaining its own
state; every step call's outputs and next state are compared (``exports.parity``) and so is the text (a
TTS directory streams a fixed paragraph of text instead of audio, a VC directory converts the audio into a
reference voice; their "text" is the output's length).
fp32 files pass when the text is identical and no tensor differs by more than the tolerance (1e-4), or, for
a model whose torch fp32 run itself is further than that from exact arithmetic (Whisper: large activations),
by more than twice what torch fp32 differs from a float64 run of the same stream (two fp32 computations,
each as far from exact as torch is, can be that far apart). fp16 and int8 files are reported.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exports.parity import RecordingBackend, compare
from streaming.backend import Backend, TorchBackend
from streaming.onnx_backend import OnnxBackend

from .exporting import Exportable, directory_locator, load_exportable, read_manifest

TOLERANCE = 1e-4

Transcribe = Callable[[Backend, np.ndarray], str]  # streams a signal on a backend; the final text


@dataclass
class RunCheck:
    label: str
    calls: dict[str, int]
    worst: float
    bar: float
    torch_text: str
    onnx_text: str
    max_abs: dict[str, float] = field(default_factory=dict)  # "step/tensor" -> difference
    diverged: str = ""
    rounding: float | None = None  # torch fp32 against float64, where measured

    @property
    def same_text(self) -> bool:
        return self.torch_text == self.onnx_text

    @property
    def passed(self) -> bool:
        return self.same_text and not self.diverged and self.worst <= self.bar


TTS_TEXT = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. It is easy "
            "to tell the depth of a well. These days a chicken leg is a rare dish. Rice is often served in round "
            "bowls.")  # Harvard sentences: about 60 flow chunks and 30 vocoder chunks


def _runs(model: Exportable, voice: np.ndarray | None) -> list[tuple[str, Transcribe]]:
    """One run per way the model streams: each lookahead and decoder of a FastConformer; Whisper's chunk;
    TTS: ``TTS_TEXT`` through the flow and vocoder steps (its "text" is the length of the audio); VC: the
    audio converted into ``voice`` (22.05 kHz; None: the audio's first 10 s) through all four steps."""
    if model.source["model"] == "tts":
        return [(f"tts, {model.config.chunk}-frame flow chunks", functools.partial(_speak, model))]
    if model.source["model"] == "vc":
        return [(f"vc, {model.config.chunk}-frame chunks", functools.partial(_convert, model, voice))]
    if model.source["model"] == "whisper-causal":
        from asr.whisper.streaming import stream_signal

        def whisper(backend: Backend, audio: np.ndarray) -> str:
            return " ".join(e.text for e in stream_signal(_on(model.model, backend), audio, model.config, backend=backend)
                            if e.final)

        return [(f"{model.config.chunk_ms} ms chunks", whisper)]
    from asr.fastconformer.recognizer import Recognizer

    def fastconformer(ms: float, decoder: str, backend: Backend, audio: np.ndarray) -> str:
        recognizer = Recognizer(_on(model.model, backend), ms, decoder, backend=backend)
        return " ".join(e.text for e in recognizer.transcribe(audio) if e.final)

    enc = model.model.cfg.encoder
    return [(f"lookahead {enc.lookahead_ms(context):g} ms, {decoder}",
             functools.partial(fastconformer, enc.lookahead_ms(context), decoder))
            for context in enc.att_context_size for decoder in model.model.decoders]


def _speak(model: Exportable, backend: Backend, _audio: np.ndarray) -> str:
    import torch

    from streaming.inline import InlineSteps, drive
    from tts.scheduled import synthesis_requests
    from tts.synthesizer import TextFeed
    from tts.vocoder import VocoderFeed

    flow, vocoder = model.steps
    steps = InlineSteps({"flow": flow, "vocoder": vocoder}, backend)
    text, audio = TextFeed(model.model, model.model.cfg.speaking_voice, model.config.chunk), VocoderFeed(vocoder, 32)
    speaker = torch.tensor(text.speaker)
    pieces = [drive(synthesis_requests(text.chunks_for(TTS_TEXT), audio, speaker, False), steps),
              drive(synthesis_requests(text.chunks_at_end(), audio, speaker, True), steps)]
    return f"{sum(len(p) for p in pieces)} samples of audio"


def _convert(model: Exportable, voice: np.ndarray | None, backend: Backend, audio: np.ndarray) -> str:
    """The voice step once, then the source in 100 ms pieces, every step on ``backend``."""
    import torch

    from streaming.inline import InlineSteps, drive
    from vc.converter import ConversionFeed
    from vc.flow_step import VoiceStep

    from .audio import resample

    converter = dataclasses.replace(model.model, content=_on(model.model.content, backend),
                                    model=_on(model.model.model, backend), vocoder=_on(model.model.vocoder, backend))
    voice_step = VoiceStep(converter.model)
    if voice is None:
        voice = resample(audio[: 10 * 16000], 16000, 22050)
    mel = converter.reference_mel(voice)
    reference = {"reference": voice_step.padded(mel, converter.model.cfg.max_reference_frames),
                 "frames": torch.tensor(mel.shape[-1])}
    voice_rows = InlineSteps({"voice": voice_step}, backend)("voice", reference)
    steps = InlineSteps(converter.steps, backend, start_from={"vc": voice_rows})
    feed = ConversionFeed(converter, converter.settings.chunk, fixed_end=False)
    pieces = [drive(feed.requests(audio[i : i + 1600]), steps) for i in range(0, len(audio), 1600)]
    pieces.append(drive(feed.requests(None), steps))
    return f"{sum(len(p) for p in pieces)} samples of audio"


def _on(model, backend: Backend):
    """The torch model in the backend's dtype (float64 references); the model as it is otherwise."""
    inner = getattr(backend, "inner", backend)
    if isinstance(inner, TorchBackend) and inner.dtype != next(model.parameters()).dtype:
        import copy

        return copy.deepcopy(model).to(inner.dtype)
    return model


def check(directory: str | Path, audio: np.ndarray | None, tolerance: float = TOLERANCE, log=print,
          voice: np.ndarray | None = None) -> list[RunCheck]:
    manifest = read_manifest(directory)
    model = load_exportable(manifest["source"])
    locate, precision = directory_locator(directory)
    results = []
    for label, run in _runs(model, voice):
        recorded = {}
        texts = {}
        for name, backend in (("torch", TorchBackend()), ("onnx", OnnxBackend(locate, precision=precision))):
            recorder = RecordingBackend(backend)
            texts[name] = run(recorder, audio)
            recorded[name] = recorder.calls
        report = compare(recorded["torch"], recorded["onnx"])
        result = RunCheck(label, report.calls, report.worst, tolerance if precision == "fp32" else float("inf"),
                          texts["torch"], texts["onnx"], {f"{s}/{t}": d for (s, t), d in report.max_abs.items()},
                          report.divergence)
        if precision == "fp32" and result.worst > tolerance:  # is torch itself that far from exact arithmetic?
            exact = RecordingBackend(TorchBackend("cpu", "fp64"))
            run(exact, audio)
            result.rounding = compare(exact.calls, recorded["torch"]).worst
            result.bar = max(tolerance, 2 * result.rounding)  # two fp32 runs, each that far from exact
        log(f"{label}: {sum(result.calls.values())} calls, worst {result.worst:.2e}"
            f"{'' if result.rounding is None else f' (torch fp32 vs float64: {result.rounding:.2e})'}, "
            f"text {'identical' if result.same_text else 'DIFFERS'}")
        results.append(result)
    return results
