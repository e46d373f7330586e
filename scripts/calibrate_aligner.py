"""Sweep the constant lag added to Whisper's forced-alignment word times (speech.corpus.align.WHISPER_LAG_S).

Calibration text is the intelligibility gate's test-split sentences, which never enter the corpus, so
`speech corpus check-alignments` on corpus utterances stays an independent measurement.
"""

from __future__ import annotations

from speech.audio import resample
from speech.corpus.align import boundary_disagreement, trim_to_speech
from speech.corpus.build import gate_sentences
from speech.corpus.voices import catalogue, engine_of
from speech.judges.whisper import WHISPER_SAMPLE_RATE, force_align

VOICES = {"espeak/en+m1", "espeak/en-us+m3", "festival/kal", "festival/slt-hts", "flite/awb", "flite/slt",
          "piper/joe", "kokoro/jf_alpha", "kokoro/jm_kumo", "kokoro/jf_nezumi"}


def main() -> None:
    sentences = gate_sentences()[:6]
    cases = []
    for voice in [v for v in catalogue() if v.name in VOICES]:
        for r in engine_of(voice).render_many(voice, sentences):
            heard = force_align([w for w, _, _ in r.words], resample(r.audio, r.sample_rate, WHISPER_SAMPLE_RATE))
            cases.append((trim_to_speech(r.words, r.audio, r.sample_rate), heard, r.audio, r.sample_rate))
    print("lag_ms  median_ms  p90_ms  share<=40ms")
    for lag_ms in range(0, 130, 10):
        lag = lag_ms / 1000
        pairs = [(engine, trim_to_speech([(w.word, w.start + lag, w.end + lag) for w in heard], audio, rate))
                 for engine, heard, audio, rate in cases]
        d = boundary_disagreement(pairs)
        print(f"{lag_ms:6d}  {d.median_ms:9.1f}  {d.p90_ms:6.1f}  {d.within_40ms:11.3f}")


if __name__ == "__main__":
    main()
