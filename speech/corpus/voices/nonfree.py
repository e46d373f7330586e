"""Voices from Debian contrib/non-free (behind --non-free): MBROLA through espeak-ng, RHVoice, SVOX Pico.

MBROLA us1/us2/us3 and RHVoice evgeniy-eng/lyubov forbid commercial use; --commercial-safe drops them.
None of them gives usable word timing, so their words come from the forced aligner.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import soundfile as sf

from .base import Engine, EngineUnavailable, Rendered, Voice

MBROLA = (("mb-us1", "mbrola-us1", False), ("mb-us2", "mbrola-us2", False), ("mb-us3", "mbrola-us3", False),
          ("mb-en1", "mbrola-en1", True))
MBROLA_LICENCE = {False: "Babel/OGI MBROLA database licence: non-commercial, MBROLA program only",
                  True: "Edinburgh ROGER MBROLA licence: any purpose without fee, MBROLA program only"}
RHVOICE = (("alan", True), ("bdl", True), ("clb", True), ("slt", True), ("evgeniy-eng", False), ("lyubov", False))
RHVOICE_LICENCE = {True: "LGPL-2.1-or-later (RHVoice voice data)", False: "CC BY-NC-ND 4.0 (non-commercial)"}
PICO_LICENCE = "Apache-2.0 (SVOX Pico; language files without source)"


class _CommandEngine(Engine):
    """An engine that is a program writing a wav file; words come from the aligner."""

    program: str

    def check(self) -> None:
        if not shutil.which(self.program):
            raise EngineUnavailable(f"{self.program} is missing (Debian non-free: {' '.join(self.debian_packages)})")

    def command(self, voice: Voice, text: str, wav: str) -> tuple[list[str], str | None]:
        raise NotImplementedError

    def render(self, voice: Voice, text: str) -> Rendered:
        with tempfile.TemporaryDirectory(prefix=f"{self.name}-") as tmp:
            wav = str(Path(tmp) / "out.wav")
            cmd, stdin = self.command(voice, text, wav)
            res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=600, check=False)
            if res.returncode != 0 or not Path(wav).exists():
                raise RuntimeError(f"{' '.join(cmd[:3])} failed ({res.returncode}): {res.stderr.strip()[-300:]}")
            audio, rate = sf.read(wav, dtype="float32")
        return Rendered(audio if audio.ndim == 1 else audio.mean(1), rate, None)


class MbrolaEngine(_CommandEngine):
    """Through the espeak-ng program: the library's callback reports MBROLA audio at the wrong rate and
    spreads its word events evenly, so words come from the aligner."""

    name = "mbrola"
    program = "espeak-ng"
    debian_packages = ("espeak-ng", "mbrola") + tuple(pkg for _, pkg, _ in MBROLA)
    non_free = True

    def voices(self) -> list[Voice]:
        return [Voice(f"mbrola/{v}", self.name, MBROLA_LICENCE[ok], ok, 16000, "aligner", (("voice", v),))
                for v, _, ok in MBROLA]

    def check(self) -> None:
        super().check()
        if not shutil.which("mbrola"):
            raise EngineUnavailable("mbrola is missing (Debian contrib/non-free: " + " ".join(self.debian_packages) + ")")

    def command(self, voice: Voice, text: str, wav: str) -> tuple[list[str], str | None]:
        return [self.program, "-v", dict(voice.options)["voice"], "-s", "165", "-w", wav, text], None


class RhvoiceEngine(_CommandEngine):
    name = "rhvoice"
    program = "RHVoice-test"
    debian_packages = ("rhvoice", "rhvoice-english")
    non_free = True

    def voices(self) -> list[Voice]:
        return [Voice(f"rhvoice/{v}", self.name, RHVOICE_LICENCE[ok], ok, 24000, "aligner", (("voice", v),))
                for v, ok in RHVOICE]

    def command(self, voice: Voice, text: str, wav: str) -> tuple[list[str], str | None]:
        return [self.program, "-p", dict(voice.options)["voice"], "-o", wav], text


class PicoEngine(_CommandEngine):
    name = "pico"
    program = "pico2wave"
    debian_packages = ("libttspico-utils",)
    non_free = True

    def voices(self) -> list[Voice]:
        return [Voice(f"pico/{lang}", self.name, PICO_LICENCE, True, 16000, "aligner", (("lang", lang),))
                for lang in ("en-US", "en-GB")]

    def command(self, voice: Voice, text: str, wav: str) -> tuple[list[str], str | None]:
        return [self.program, "-l", dict(voice.options)["lang"], "-w", wav, text], None
