"""ctypes binding of libespeak-ng: synthesis with word events, and IPA phonemisation (for Kokoro).

One initialisation per process (the library is global state); calls are not thread-safe, which is fine
because corpus workers are processes.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache

from .base import EngineUnavailable

_SYNCHRONOUS = 2
_PHONEME_EVENTS = 0x0001
_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_END, EVENT_MSG_TERMINATED, EVENT_PHONEME = 0, 1, 5, 6, 7


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Event:
    kind: int
    text_position: int  # 1-based character offset in the input
    sample: int  # audio sample where the event happens
    phoneme: bytes


class _Espeak:
    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libespeak-ng.so.1")
        except OSError as e:
            raise EngineUnavailable("libespeak-ng is missing (Debian package espeak-ng)") from e
        self.sample_rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, None, _PHONEME_EVENTS | _DONT_EXIT)
        if self.sample_rate <= 0:
            raise EngineUnavailable("espeak_Initialize failed (espeak-ng-data missing?)")
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        self._chunks: list[bytes] = []
        self._events: list[Event] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: the library holds a raw pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            e = events[i]
            self._events.append(Event(e.type, e.text_position, e.sample, bytes(e.id)))
            i += 1
        return 0

    def set_voice(self, name: str) -> None:
        if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {name!r} (see `espeak-ng --voices=en`)")

    def synthesize(self, text: str, voice: str, rate_wpm: int = 175) -> tuple[bytes, list[Event]]:
        self.set_voice(voice)
        self.lib.espeak_SetParameter(1, rate_wpm, 0)  # espeakRATE
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        self.lib.espeak_Synchronize()
        return b"".join(self._chunks), self._events

    def phonemize(self, text: str, voice: str = "en-us") -> str:
        """IPA, clause by clause, with '^' between the letters of one phoneme (affricates, diphthongs)."""
        self.set_voice(voice)
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        clauses = []
        while ptr.value:
            ipa = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, 0x02 | 0x80 | (ord("^") << 8))
            clauses.append(ipa.decode("utf-8").strip())
        return " ".join(c for c in clauses if c)


@lru_cache(maxsize=1)
def espeak() -> _Espeak:
    return _Espeak()
