"""The WebSocket protocol of `speech serve`: JSON control messages (text frames) and audio (binary frames).

Pure data: parsing and checking what a client sends, and the messages the server sends back; no network.
The README's "WebSocket protocol" section is the user-facing description of the same thing.

A connection carries one session at a time: ``start`` opens it, the client streams audio (binary frames in
the declared encoding), ``end`` says it is done; the server answers ``ready``, then ``partial``/``final``
transcripts (and, for audio-out tasks, binary audio frames), then ``done`` once it has sent everything.
After ``done`` the connection may ``start`` again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asr.hypothesis import Hypothesis, Word

PROTOCOL_VERSION = 1
ENCODINGS = ("pcm_s16le", "f32le")
TASKS = ("asr", "tts", "vc", "duplex")  # audio->text, text->audio, audio->audio, ASR + TTS with barge-in
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
START_FIELDS = {"type", "task", "model", "sample_rate", "encoding", "partials", "lookahead_ms", "chunk_ms", "voice"}
MAX_TEXT_CHARS = 4096  # per ``text`` message: longer text goes in several


class ProtocolError(Exception):
    """What the client did wrong: ``code`` (machine-readable), a message that says what is accepted, and
    whether the session it happened in is lost (``fatal``: the server closes the connection after it)."""

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.fatal = code, message, fatal

    def message_json(self) -> dict[str, Any]:
        return error_message(self.code, self.message, fatal=self.fatal)


@dataclass(frozen=True)
class StartRequest:
    """A client's ``start``: what to run and how its audio arrives (ASR) or leaves (TTS: ``sample_rate`` None
    means the model's own). ``options`` are the model's settings (``lookahead_ms`` for a FastConformer,
    ``chunk_ms`` for causal Whisper); ``voice`` a TTS voice."""

    task: str
    model: str | None
    sample_rate: int | None
    encoding: str
    partials: bool = True
    options: dict[str, float] = field(default_factory=dict)
    voice: str | None = None


def parse_control(text: str) -> dict[str, Any]:
    """A text frame as a control message (a JSON object with a string ``type``)."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as error:  # ValueError: JSONDecodeError, and integers too long to convert
        raise ProtocolError("bad_json", f"text frames must be JSON control messages: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("bad_message", 'a control message is a JSON object with a string "type", '
                            'one of start, text, reference_end, end, cancel, ping')
    return message


def parse_start(message: dict[str, Any]) -> StartRequest:
    """Checks a ``start`` message field by field; the error names the field and what it accepts."""
    unknown = sorted(set(message) - START_FIELDS)
    if unknown:
        raise ProtocolError("bad_parameter", f"unknown fields {unknown} in start; accepted: {sorted(START_FIELDS)}")
    task = message.get("task")
    if task not in TASKS:
        raise ProtocolError("unknown_task", f"task {task!r} is not one of {list(TASKS)}")
    model = message.get("model")
    if model is not None and not isinstance(model, str):
        raise ProtocolError("bad_parameter", f"model must be a string, got {model!r}")
    rate = message.get("sample_rate")
    if rate is None and task == "tts":
        pass  # audio comes back at the model's rate
    elif isinstance(rate, bool) or not isinstance(rate, int) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError("bad_parameter", f"sample_rate must be an integer in Hz from {MIN_SAMPLE_RATE} to "
                            f"{MAX_SAMPLE_RATE} (the rate of the audio you send; for tts, of the audio you want "
                            f"back, default the model's), got {rate!r}")
    encoding = message.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise ProtocolError("bad_parameter", f"encoding {encoding!r} is not one of {list(ENCODINGS)} "
                            "(mono, little-endian)")
    partials = message.get("partials", True)
    if not isinstance(partials, bool):
        raise ProtocolError("bad_parameter", f"partials must be true or false, got {partials!r}")
    options = {}
    for name in ("lookahead_ms", "chunk_ms"):
        value = message.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ProtocolError("bad_parameter", f"{name} must be a number of milliseconds >= 0, got {value!r}")
        options[name] = float(value)
    voice = message.get("voice")
    if voice is not None and (task not in ("tts", "vc") or not isinstance(voice, str)):
        raise ProtocolError("bad_parameter", f"voice is a string, for tasks tts and vc only; got {voice!r} for {task}")
    return StartRequest(task, model, rate, encoding, partials, options, voice)


def parse_text(message: dict[str, Any]) -> str:
    """A ``text`` message's text: a string of at most ``MAX_TEXT_CHARS`` characters."""
    text = message.get("text")
    if not isinstance(text, str):
        raise ProtocolError("bad_parameter", f'a text message carries "text": a string, got {text!r}')
    if len(text) > MAX_TEXT_CHARS:
        raise ProtocolError("bad_parameter", f"a text message carries at most {MAX_TEXT_CHARS} characters, got "
                            f"{len(text)}: send longer text in several messages")
    return text


def decode_audio(data: bytes, encoding: str) -> np.ndarray:
    """A binary frame as float32 samples; refuses frames that cannot be whole samples or are not finite."""
    if encoding == "pcm_s16le":
        if len(data) % 2:
            raise ProtocolError("bad_audio", f"a pcm_s16le frame holds whole 2-byte samples; got {len(data)} bytes",
                                fatal=True)
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if len(data) % 4:
        raise ProtocolError("bad_audio", f"an f32le frame holds whole 4-byte samples; got {len(data)} bytes",
                            fatal=True)
    samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(samples).all():
        raise ProtocolError("bad_audio", "f32le samples must be finite (NaN or infinity received)", fatal=True)
    return samples


def encode_audio(samples: np.ndarray, encoding: str) -> bytes:
    """Float samples in [-1, 1] as a binary frame of ``encoding`` (the client side of :func:`decode_audio`)."""
    samples = np.asarray(samples, dtype=np.float32)
    if encoding == "pcm_s16le":
        return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
    if encoding == "f32le":
        return samples.astype("<f4").tobytes()
    raise ValueError(f"encoding {encoding!r} is not one of {list(ENCODINGS)}")


def error_message(code: str, message: str, *, fatal: bool = False) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "fatal": fatal}


def transcript_message(hypothesis: Hypothesis) -> dict[str, Any]:
    """A ``partial`` or ``final``: the segment's text so far, its words with times in seconds from the start of
    the session's audio, and ``stable``: how many leading words will not change any more."""
    return {
        "type": "final" if hypothesis.final else "partial",
        "segment": hypothesis.segment,
        "text": hypothesis.text,
        "words": [{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in hypothesis.words],
        "stable": hypothesis.stable,
    }


def hypothesis_from_message(message: dict[str, Any]) -> Hypothesis:
    """The client side of :func:`transcript_message`."""
    words = tuple(Word(w["word"], float(w["start"]), float(w["end"])) for w in message["words"])
    return Hypothesis(message["text"], words, message["type"] == "final", int(message["segment"]),
                      stable=int(message.get("stable", 0)))
