"""Voice engines for the synthetic corpus: `catalogue()` lists every voice with its licence and timing."""

from __future__ import annotations

from .base import Engine, EngineUnavailable, Rendered, Voice, speakable, words_of
from .espeak import EspeakEngine
from .festival import FestivalEngine
from .flite import FliteEngine
from .kokoro import KokoroEngine
from .nonfree import MbrolaEngine, PicoEngine, RhvoiceEngine
from .piper import PiperEngine

ENGINES: tuple[Engine, ...] = (EspeakEngine(), FestivalEngine(), FliteEngine(), PiperEngine(), KokoroEngine(),
                               MbrolaEngine(), RhvoiceEngine(), PicoEngine())


def engine_of(voice: Voice) -> Engine:
    return next(e for e in ENGINES if e.name == voice.engine)


def catalogue(non_free: bool = False, commercial_safe: bool = False) -> list[Voice]:
    """Every voice the flags allow, installed or not."""
    return [v for e in ENGINES if non_free or not e.non_free for v in e.voices()
            if v.commercial or not commercial_safe]


__all__ = ["ENGINES", "Engine", "EngineUnavailable", "Rendered", "Voice", "catalogue", "engine_of", "speakable",
           "words_of"]
