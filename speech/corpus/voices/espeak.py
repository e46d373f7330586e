"""espeak-ng voices (formant synthesis, several accents and variants); word times from its word events."""

from __future__ import annotations

import bisect
import re

from ...audio import pcm16_to_float32
from .base import Engine, Rendered, Voice, word_spans
from .espeak_lib import EVENT_END, EVENT_MSG_TERMINATED, EVENT_PHONEME, EVENT_WORD, espeak

# (espeak voice+variant, words per minute): accents x variants, chosen to spread pitch and formants
ESPEAK_VOICES = (
    ("en-us+m3", 170), ("en-us+f2", 165), ("en+m1", 175), ("en-gb-scotland+m5", 160), ("en-gb-x-rp+f4", 160),
    ("en-029+m2", 165), ("en-gb-x-gbclan+f3", 170), ("en-us+klatt2", 175),
)
LICENCE = "GPL-3.0-or-later (espeak-ng)"
_PAUSES = (b"_", b"_:", b"_!", b"_;")


class EspeakEngine(Engine):
    name = "espeak"
    debian_packages = ("espeak-ng",)

    def voices(self) -> list[Voice]:
        return [Voice(f"espeak/{v}", self.name, LICENCE, True, 22050, "engine", (("voice", v), ("wpm", wpm)))
                for v, wpm in ESPEAK_VOICES]

    def check(self) -> None:
        espeak()

    def render(self, voice: Voice, text: str) -> Rendered:
        opts = dict(voice.options)
        lib = espeak()
        data, events = lib.synthesize(text, opts["voice"], opts["wpm"])
        audio = pcm16_to_float32(data)
        rate = lib.sample_rate
        offsets = [m.start() + 1 for m in re.finditer(r"\S+", text)]  # espeak positions are 1-based
        timed: dict[int, list[int]] = {}
        current = None
        for n, ev in enumerate(events):
            if ev.kind == EVENT_WORD:
                current = max(bisect.bisect_right(offsets, ev.text_position) - 1, 0)
                timed.setdefault(current, [ev.sample, ev.sample])
            elif ev.kind == EVENT_PHONEME and current is not None and ev.phoneme.rstrip(b"\0") not in _PAUSES:
                after = next((e.sample for e in events[n + 1:]
                              if e.kind in (EVENT_WORD, EVENT_PHONEME, EVENT_END, EVENT_MSG_TERMINATED)), len(audio))
                timed[current][1] = max(timed[current][1], after)
        spans = {k: (s / rate, e / rate) for k, (s, e) in timed.items()}
        return Rendered(audio, rate, word_spans(text, spans, len(audio) / rate))
