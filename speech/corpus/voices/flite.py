"""flite voices (kal16 diphone, awb/rms/slt clustergen) through libflite; word times from its segments."""

from __future__ import annotations

import ctypes
from functools import cache, lru_cache

import numpy as np

from ...audio import pcm16_to_float32
from .base import Engine, EngineUnavailable, Rendered, Voice, word_spans

VOICES = ("kal16", "awb", "rms", "slt")
LICENCE = "BSD-style (flite and CMU ARCTIC voices)"
# a token's words: start = end of the segment before its first phone, end = end of its last phone
_START = b"daughter1.R:SylStructure.daughter1.daughter1.R:Segment.p.end"
_END = b"daughtern.R:SylStructure.daughtern.daughtern.end"


class _Wave(ctypes.Structure):
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


@lru_cache(maxsize=1)
def _flite():
    try:
        lib = ctypes.CDLL("libflite.so.1")
    except OSError as e:
        raise EngineUnavailable("libflite is missing (Debian package flite)") from e
    signatures = {
        "flite_synth_text": (ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]),
        "utt_wave": (ctypes.c_void_p, [ctypes.c_void_p]),
        "utt_relation": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
        "relation_head": (ctypes.c_void_p, [ctypes.c_void_p]),
        "item_next": (ctypes.c_void_p, [ctypes.c_void_p]),
        "ffeature_float": (ctypes.c_float, [ctypes.c_void_p, ctypes.c_char_p]),
        "ffeature_string": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_char_p]),
        "delete_utterance": (None, [ctypes.c_void_p]),
    }
    for name, (restype, argtypes) in signatures.items():
        getattr(lib, name).restype = restype
        getattr(lib, name).argtypes = argtypes
    lib.flite_init()
    return lib


@cache
def _voice(name: str):
    try:
        lib = ctypes.CDLL(f"libflite_cmu_us_{name}.so.1")
    except OSError as e:
        raise EngineUnavailable(f"flite voice {name} is missing (Debian package flite)") from e
    register = getattr(lib, f"register_cmu_us_{name}")
    register.restype = ctypes.c_void_p
    register.argtypes = [ctypes.c_char_p]
    return lib, register(None)  # keep the library loaded with the voice


class FliteEngine(Engine):
    name = "flite"
    debian_packages = ("flite",)

    def voices(self) -> list[Voice]:
        return [Voice(f"flite/{v}", self.name, LICENCE, True, 16000, "engine", (("voice", v),)) for v in VOICES]

    def check(self) -> None:
        _flite()
        for v in VOICES:
            _voice(v)

    def render(self, voice: Voice, text: str) -> Rendered:
        lib = _flite()
        utt = lib.flite_synth_text(text.encode("utf-8"), _voice(dict(voice.options)["voice"])[1])
        try:
            wave = _Wave.from_address(lib.utt_wave(utt))
            rate = wave.sample_rate
            audio = pcm16_to_float32(np.ctypeslib.as_array(wave.samples, (wave.num_samples,)).copy())
            timed, k, token = {}, 0, lib.relation_head(lib.utt_relation(utt, b"Token"))
            while token:
                if lib.ffeature_string(token, b"daughter1.name") != b"0":  # tokens of punctuation only
                    timed[k] = (float(lib.ffeature_float(token, _START)), float(lib.ffeature_float(token, _END)))
                    k += 1
                token = lib.item_next(token)
        finally:
            lib.delete_utterance(utt)
        return Rendered(audio, rate, word_spans(text, timed, len(audio) / rate))
