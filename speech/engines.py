"""The models a service runs (ASR, TTS, VC), each loaded once with its lanes on the one shared chunk scheduler,
so the sessions of every client are batched together (the server, and the microphone CLI in-process).

An engine turns a client's options (``lookahead_ms``, ``chunk_ms``, a voice) into a live session (for ASR an
:class:`asr.live.LiveSession`) and says what those options resolved to."""

from __future__ import annotations

import dataclasses
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from asr.live import LiveSession
from streaming.pool import PoolFull
from streaming.scheduler import ChunkScheduler

from .protocol import ProtocolError


@dataclass(frozen=True)
class LaneSettings:
    """How a model's lanes batch: at most ``max_streams`` sessions, batches up to ``max_batch``, waiting at most
    ``max_wait_ms`` for a batch to fill (live sessions' chunks arrive spread over time: a longer wait batches
    more of them, but the wait is part of every chunk's latency; `speech bench serve` measures both)."""

    max_streams: int = 64
    max_batch: int = 64
    max_wait_ms: float = 20.0


class AsrEngine(Protocol):
    name: str
    sample_rate: int

    def describe(self) -> dict[str, Any]:
        """What a client may choose (for ``/v1/models`` and the web page)."""

    def open(self, options: dict[str, float]) -> tuple[LiveSession, dict[str, float]]:
        """A new session and its resolved settings (``chunk_ms``, ``lookahead_ms``); raises
        :class:`ProtocolError` for options this model does not offer and ``PoolFull`` at capacity."""


def _refuse_unknown(options: dict[str, float], accepted: set[str], model: str) -> None:
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ProtocolError("bad_parameter", f"model {model} takes {sorted(accepted) or 'no options'}, "
                            f"not {unknown}")


class FastConformerEngine:
    """A cache-aware FastConformer with one encoder lane per lookahead it offers."""

    task = "asr"

    def __init__(self, name: str, model, scheduler: ChunkScheduler, lanes: LaneSettings, *,
                 lookaheads_ms: list[float] | None = None, default_lookahead_ms: float | None = None,
                 decoder: str | None = None, backend=None, step_thread: Executor | None = None) -> None:
        from asr.fastconformer.recognizer import Recognizer

        enc, hop_ms = model.cfg.encoder, 1000 * model.cfg.features.hop_length / model.cfg.features.sample_rate
        offered = [enc.lookahead_ms(c, hop_ms) for c in enc.att_context_size]
        chosen = offered if lookaheads_ms is None else [float(ms) for ms in lookaheads_ms]
        self.name, self.sample_rate, self.scheduler = name, model.cfg.features.sample_rate, scheduler
        self.recognizers = {ms: Recognizer(model, ms, decoder, backend=backend) for ms in chosen}
        self.default_lookahead_ms = chosen[0] if default_lookahead_ms is None else float(default_lookahead_ms)
        if self.default_lookahead_ms not in self.recognizers:
            raise ValueError(f"{name}: default lookahead {self.default_lookahead_ms:g} ms is not among {chosen}")
        self.lanes = {}
        for ms, recognizer in self.recognizers.items():
            step = recognizer.encoder_step
            lane = scheduler.add_lane(f"{name}:{step.name}", step, backend=recognizer.backend,
                                      max_batch=lanes.max_batch, max_wait_ms=lanes.max_wait_ms,
                                      max_streams=lanes.max_streams, executor=step_thread)
            self.lanes[ms] = lane.name
        self.decoder = next(iter(self.recognizers.values())).decoder

    def chunk_ms(self, lookahead_ms: float) -> float:
        recognizer = self.recognizers[lookahead_ms]
        features = recognizer.model.cfg.features
        return 1000 * recognizer.model.encoder.hop(recognizer.context) * features.hop_length / features.sample_rate

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "family": "fastconformer", "sample_rate": self.sample_rate,
                "decoder": self.decoder, "lookaheads_ms": sorted(self.recognizers),
                "default_lookahead_ms": self.default_lookahead_ms,
                "chunk_ms": {f"{ms:g}": self.chunk_ms(ms) for ms in sorted(self.recognizers)}}

    def open(self, options: dict[str, float]) -> tuple[LiveSession, dict[str, float]]:
        from asr.fastconformer.scheduled import ScheduledSession

        _refuse_unknown(options, {"lookahead_ms"}, self.name)
        lookahead = options.get("lookahead_ms", self.default_lookahead_ms)
        if lookahead not in self.recognizers:
            raise ProtocolError("bad_parameter", f"model {self.name} offers lookahead_ms "
                                f"{[f'{ms:g}' for ms in sorted(self.recognizers)]}, not {lookahead:g}")
        session = ScheduledSession(self.scheduler, self.lanes[lookahead], self.recognizers[lookahead])
        return session, {"lookahead_ms": lookahead, "chunk_ms": self.chunk_ms(lookahead)}


class WhisperEngine:
    """Causal streaming Whisper at one chunk size (its LoRA adapter is trained for it)."""

    task = "asr"

    def __init__(self, name: str, model, scheduler: ChunkScheduler, lanes: LaneSettings, cfg, backend=None,
                 step_thread: Executor | None = None) -> None:
        from asr.whisper.features import SAMPLE_RATE
        from asr.whisper.scheduled import add_whisper_lanes
        from asr.whisper.streaming import model_backend

        self.name, self.sample_rate, self.scheduler = name, SAMPLE_RATE, scheduler
        self.model, self.cfg, self.backend = model, cfg, backend or model_backend(model)
        add_whisper_lanes(scheduler, model, cfg, lanes.max_streams, max_batch=lanes.max_batch,
                          max_wait_ms=lanes.max_wait_ms, backend=self.backend, executor=step_thread)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "family": "whisper-causal", "sample_rate": self.sample_rate,
                "chunks_ms": [self.cfg.chunk_ms], "beam": self.cfg.beam}

    def open(self, options: dict[str, float]) -> tuple[LiveSession, dict[str, float]]:
        from asr.whisper.scheduled import ScheduledWhisperSession

        _refuse_unknown(options, {"chunk_ms"}, self.name)
        chunk = options.get("chunk_ms", float(self.cfg.chunk_ms))
        if chunk != self.cfg.chunk_ms:
            raise ProtocolError("bad_parameter", f"model {self.name} runs chunk_ms {self.cfg.chunk_ms} here "
                                f"(its adapter's), not {chunk:g}")
        session = ScheduledWhisperSession(self.scheduler, self.model, self.cfg, self.backend)
        return session, {"lookahead_ms": 0.0, "chunk_ms": float(self.cfg.chunk_ms)}


class TtsEngine:
    """Streaming TTS (``tts.scheduled``): a flow lane and a vocoder lane shared by every TTS session."""

    task = "tts"

    def __init__(self, name: str, model, vocoder, scheduler: ChunkScheduler, lanes: LaneSettings, settings,
                 default_voice: str | None = None, step_thread: Executor | None = None, backend=None) -> None:
        from tts.scheduled import add_tts_lanes

        self.name, self.sample_rate, self.scheduler = name, vocoder.cfg.sample_rate, scheduler
        self.model, self.vocoder, self.settings = model, vocoder, settings
        self.default_voice = default_voice or model.cfg.speaking_voice
        if self.default_voice not in model.cfg.voices:
            raise ValueError(f"{name}: default voice {self.default_voice!r} is not among {list(model.cfg.voices)}")
        self.lanes = add_tts_lanes(scheduler, name, model, vocoder, settings, max_streams=lanes.max_streams,
                                   max_batch=lanes.max_batch, max_wait_ms=lanes.max_wait_ms, executor=step_thread,
                                   backend=backend)

    @property
    def chunk_ms(self) -> float:
        return 1000 * self.settings.chunk * self.vocoder.cfg.hop_length / self.sample_rate

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "family": "tts", "sample_rate": self.sample_rate,
                "voices": list(self.model.cfg.voices), "default_voice": self.default_voice,
                "steps": self.settings.steps, "solver": self.settings.solver, "chunk_ms": self.chunk_ms}

    def open(self, voice: str | None, options: dict[str, float]):
        from tts.scheduled import ScheduledSynthesis

        _refuse_unknown(options, set(), self.name)
        voice = voice or self.default_voice
        if voice not in self.model.cfg.voices:
            raise ProtocolError("bad_parameter", f"model {self.name} has voices {list(self.model.cfg.voices)}, "
                                f"not {voice!r}")
        session = ScheduledSynthesis(self.scheduler, self.lanes, self.model, self.vocoder, self.settings, voice)
        return session, {"voice": voice, "chunk_ms": self.chunk_ms}


class VcEngine:
    """Streaming voice conversion (``vc.scheduled``): content, VC and vocoder lanes shared by every VC session.
    ``voices`` names reference recordings (the operator's) a client may pick instead of sending one."""

    task = "vc"

    def __init__(self, name: str, converter, scheduler: ChunkScheduler, lanes: LaneSettings,
                 voices: dict[str, str] | None = None, step_thread: Executor | None = None) -> None:
        from vc.converter import SOURCE_RATE
        from vc.scheduled import add_vc_lanes

        from .audio import read_audio

        self.name, self.converter, self.scheduler = name, converter, scheduler
        self.sample_rate, self.input_rate = converter.vocoder.cfg.sample_rate, SOURCE_RATE
        self.lanes = add_vc_lanes(scheduler, name, converter, max_streams=lanes.max_streams,
                                  max_batch=lanes.max_batch, max_wait_ms=lanes.max_wait_ms,
                                  executor=step_thread if converter.backend is not None else None)
        self.voices = {}
        for voice, path in (voices or {}).items():
            try:
                self.voices[voice] = converter.voice(read_audio(path, sample_rate=self.sample_rate)[0])
            except ValueError as error:
                raise ValueError(f"{name}: voice {voice!r} ({path}): {error}") from None

    @property
    def chunk_ms(self) -> float:
        return 1000 * self.converter.settings.chunk * self.converter.vocoder.cfg.hop_length / self.sample_rate

    def describe(self) -> dict[str, Any]:
        from vc.converter import MIN_REFERENCE_S

        return {"name": self.name, "task": self.task, "family": "vc", "sample_rate": self.sample_rate,
                "voices": sorted(self.voices), "steps": self.converter.settings.steps, "chunk_ms": self.chunk_ms,
                "reference_s": {"min": MIN_REFERENCE_S, "max": round(self.max_reference_s, 3)}}

    @property
    def max_reference_s(self) -> float:
        """How much of a reference the voice reads (the rest is not kept)."""
        frames = self.converter.model.cfg.max_reference_frames
        return frames * self.converter.vocoder.cfg.hop_length / self.sample_rate

    def voice(self, reference: np.ndarray) -> dict[str, Any]:
        """A target voice from reference audio at the model's rate; a :class:`ProtocolError` if it is unusable."""
        try:
            return self.converter.voice(reference)
        except ValueError as error:
            raise ProtocolError("bad_audio", f"{error}; send more reference audio, then reference_end again") from None

    def named_voice(self, voice: str) -> dict[str, Any]:
        if voice not in self.voices:
            raise ProtocolError("bad_parameter", f"model {self.name} has voices {sorted(self.voices)}, not {voice!r}; "
                                "or leave voice out and send a reference recording first")
        return self.voices[voice]

    def open(self, voice: dict[str, Any]):
        """A live conversion into ``voice``; a ``busy`` :class:`ProtocolError` when a lane is full."""
        from vc.scheduled import ScheduledConversion

        try:
            return ScheduledConversion(self.scheduler, self.lanes, self.converter, voice)
        except PoolFull:
            raise ProtocolError("busy", f"model {self.name} is at capacity; retry later") from None


LANE_KEYS = ("max_streams", "max_batch", "max_wait_ms")
BACKENDS = ("torch", "onnx")
PRECISIONS = ("fp32", "fp16", "int8")
MODEL_KEYS = {
    "fastconformer": {"name", "family", "path", "lookaheads_ms", "default_lookahead_ms", "decoder", "optional",
                      "backend", "precision", *LANE_KEYS},
    "whisper-causal": {"name", "family", "whisper", "adapter", "chunk_ms", "beam", "optional", "backend", "precision",
                       *LANE_KEYS},
    "tts": {"name", "family", "path", "vocoder", "steps", "solver", "guidance", "chunk", "default_voice", "optional",
            "backend", "precision", *LANE_KEYS},
    "vc": {"name", "family", "path", "vocoder", "steps", "chunk", "voices", "optional", "backend", "precision",
           *LANE_KEYS},
}


def onnx_backend(spec: dict[str, Any]):
    """ONNX Runtime for a model entry with ``backend: onnx`` (steps exported to the cache on first use), or
    None for torch."""
    backend, precision = spec.get("backend", "torch"), spec.get("precision", "fp32")
    if backend not in BACKENDS or precision not in PRECISIONS:
        raise ValueError(f"model entry {spec.get('name')!r}: backend must be one of {list(BACKENDS)} and precision "
                         f"one of {list(PRECISIONS)}, got {backend!r} and {precision!r}")
    if backend == "torch":
        if "precision" in spec:
            raise ValueError(f"model entry {spec.get('name')!r}: precision goes with backend: onnx")
        return None
    from streaming.onnx_backend import OnnxBackend

    from .exporting import cache_locator

    return OnnxBackend(cache_locator(precision), precision=precision)


def load_engine(spec: dict[str, Any], scheduler: ChunkScheduler, step_thread: Executor | None = None) -> AsrEngine:
    """One entry of a server config's ``models`` list, loaded and given its lanes on ``scheduler``.

    ``step_thread`` runs the steps of ONNX Runtime lanes: ORT releases the GIL for a whole step, so the
    event loop (sessions' host logic, the network) runs beside it on another core."""
    family = spec.get("family")
    if family not in MODEL_KEYS:
        raise ValueError(f"model entry {spec}: family must be one of {sorted(MODEL_KEYS)}")
    unknown = sorted(set(spec) - MODEL_KEYS[family])
    if unknown:
        raise ValueError(f"model entry {spec.get('name')!r}: unknown keys {unknown}; "
                         f"accepted: {sorted(MODEL_KEYS[family])}")
    lanes = LaneSettings(**{k: spec[k] for k in LANE_KEYS if k in spec})
    name = spec.get("name", family)
    backend = onnx_backend(spec)
    if family == "tts":
        from tts.flow_step import SolverSettings

        from .say import load_tts

        model, vocoder = load_tts(spec.get("path"), spec.get("vocoder"))
        settings = SolverSettings(steps=int(spec.get("steps", 4)), solver=spec.get("solver", "euler"),
                                  guidance=float(spec.get("guidance", 0.0)), chunk=int(spec.get("chunk", 16)))
        return TtsEngine(name, model, vocoder, scheduler, lanes, settings, spec.get("default_voice"), step_thread,
                         backend)
    if family == "vc":
        from .vc_models import load_converter

        converter = load_converter(spec.get("path"), spec.get("vocoder"), steps=int(spec.get("steps", 1)),
                                   chunk=spec.get("chunk"))
        return VcEngine(name, dataclasses.replace(converter, backend=backend), scheduler, lanes, spec.get("voices"),
                        step_thread)
    thread = step_thread if backend is not None else None
    if family == "fastconformer":
        from .asr_models import load_fastconformer

        return FastConformerEngine(name, load_fastconformer(spec.get("path")), scheduler, lanes,
                                   lookaheads_ms=spec.get("lookaheads_ms"),
                                   default_lookahead_ms=spec.get("default_lookahead_ms"), decoder=spec.get("decoder"),
                                   backend=backend, step_thread=thread)
    from asr.whisper.streaming import StreamConfig

    from .whisper_models import load_causal_whisper

    cfg = StreamConfig(chunk_ms=int(spec.get("chunk_ms", 300)), beam=int(spec.get("beam", 1)))
    adapter = spec.get("adapter", "shipped")
    model = load_causal_whisper(spec.get("whisper", "base"), cfg.chunk_ms, None if adapter == "none" else adapter)
    return WhisperEngine(name, model, scheduler, lanes, cfg, backend, step_thread=thread)
