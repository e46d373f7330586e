"""Festival voices (kal and ked diphone, cmu_us_slt_arctic_hts); word times from its Segment relation.

Festival runs as one batch process per call of render_many: starting it costs more than a sentence.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import soundfile as sf

from .base import Engine, EngineUnavailable, Rendered, Voice, word_spans

VOICES = (("kal", "voice_kal_diphone", "festvox-kallpc16k"), ("ked", "voice_ked_diphone", "festvox-kdlpc16k"),
          ("slt-hts", "voice_cmu_us_slt_arctic_hts", "festvox-us-slt-hts"))
LICENCE = "BSD-style (Festival, festvox CMU/OGI voices)"

# For each job: synthesise, save the wave, print "T<TAB>start<TAB>end" per token that has sounding words
# (start = end of the segment before its first phone, end = end of its last phone).
_SCHEME = r"""
(define (sp_sounding tok)
  (apply append (mapcar (lambda (w) (if (item.daughter1 (item.relation w 'SylStructure)) (list w) nil))
                        (item.daughters tok))))
(define (sp_run voice jobs)
  (eval (list voice))
  (mapcar
    (lambda (job)
      (let ((u (utt.synth (eval (list 'Utterance 'Text (cadr job))))))
        (utt.save.wave u (car job) 'riff)
        (format t "WAV\t%s\n" (car job))
        (mapcar (lambda (tok)
                  (let ((ws (sp_sounding tok)))
                    (if ws (format t "T\t%s\t%s\n"
                                   (item.feat (car ws) "R:SylStructure.daughter1.daughter1.R:Segment.p.end")
                                   (item.feat (car (last ws)) "R:SylStructure.daughtern.daughtern.end")))))
                (utt.relation.items u 'Token))))
    jobs)
  t)
"""


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalEngine(Engine):
    name = "festival"
    debian_packages = ("festival",) + tuple(pkg for _, _, pkg in VOICES)

    def voices(self) -> list[Voice]:
        rates = {"slt-hts": 32000}
        return [Voice(f"festival/{name}", self.name, LICENCE, True, rates.get(name, 16000), "engine",
                      (("voice", scheme),)) for name, scheme, _ in VOICES]

    def check(self) -> None:
        if not shutil.which("festival"):
            raise EngineUnavailable("festival is missing (Debian packages: " + " ".join(self.debian_packages) + ")")

    def render(self, voice: Voice, text: str) -> Rendered:
        return self.render_many(voice, [text])[0]

    def render_many(self, voice: Voice, texts: list[str]) -> list[Rendered]:
        self.check()
        with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
            wavs = [str(Path(tmp) / f"{i}.wav") for i in range(len(texts))]
            jobs = " ".join(f"({_quote(w)} {_quote(t)})" for w, t in zip(wavs, texts))
            script = Path(tmp) / "job.scm"
            script.write_text(_SCHEME + f"(sp_run '{dict(voice.options)['voice']} '({jobs}))\n", encoding="utf-8")
            res = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, timeout=3600, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"festival failed ({res.returncode}): {res.stderr.strip()[-500:]}")
            times: dict[str, list[tuple[float, float]]] = {}
            current = None
            for line in res.stdout.splitlines():
                parts = line.split("\t")
                if parts[0] == "WAV":
                    current = times.setdefault(parts[1], [])
                elif parts[0] == "T" and current is not None:
                    current.append((float(parts[1]), float(parts[2])))
            out = []
            for wav, text in zip(wavs, texts):
                audio, rate = sf.read(wav, dtype="float32")
                spans = dict(enumerate(times.get(wav, [])))
                out.append(Rendered(audio, rate, word_spans(text, spans, len(audio) / rate)))
            return out
