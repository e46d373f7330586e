"""The web page of `speech serve` in headless Chromium, a real recording as the microphone: live partial
captions appear, then finals close to the in-process streaming run's. The browser resamples the recording
to its audio rate and the server back to 16 kHz, so the audio is not bit-identical: on an4 the text comes
out the same; on the Asterisk prompts (CI, no ../shared/data), where the small default model is weak, a
letter or two of its guesses can change; the bar is a character error rate, which also catches lost audio."""

from __future__ import annotations

import asyncio

import jiwer
import numpy as np
import pytest
import soundfile as sf
from browser import Browser, chromium
from real_audio import real_recordings

from asr.fastconformer.recognizer import Recognizer
from speech.asr_models import load_fastconformer
from speech.server import SpeechServer
from speech.server_config import load_server_config

pytestmark = pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian package chromium)")


def test_page_shows_live_captions_from_the_microphone(tmp_path):
    recordings = real_recordings(3)
    pause = np.zeros(24000, np.float32)  # 1.5 s: each utterance ends its own segment
    signal = np.concatenate([x for _, audio in recordings for x in (audio, pause)])
    wav = tmp_path / "microphone.wav"
    sf.write(wav, signal, 16000, subtype="PCM_16")
    expected = " ".join(e.text for e in Recognizer(load_fastconformer(None), 80.0).transcribe(signal) if e.final)

    async def body():
        config = load_server_config(None, port=0, models=[{"name": "fastconformer", "family": "fastconformer",
                                                           "default_lookahead_ms": 80}])
        async with SpeechServer(config) as server, Browser(server.url, wav) as page:
            await page.wait_for("document.getElementById('status').textContent === 'ready'")
            assert await page.evaluate("document.getElementById('model').value") == "fastconformer"
            await page.evaluate("document.getElementById('start').click()")
            await page.wait_for("window.speechLog.some(m => m.type === 'ready')")
            await asyncio.sleep(len(signal) / 16000 + 1.0)  # the recording plays in real time
            await page.evaluate("document.getElementById('stop').click()")
            await page.wait_for("document.getElementById('status').textContent === 'done'", timeout=30)
            log = await page.evaluate("window.speechLog")
            shown = await page.evaluate("[...document.querySelectorAll('#finals p')].map(p => p.lastChild.textContent)")
            return log, shown

    log, shown = asyncio.run(body())
    finals = [m["text"] for m in log if m["type"] == "final" and m["text"]]
    assert any(m["type"] == "partial" for m in log), "no partial captions"
    assert shown == finals
    assert [m for m in log if m["type"] == "error"] == []
    print("in-process:", expected, "| page:", finals)
    assert jiwer.cer(expected, " ".join(finals)) <= 0.15, (expected, finals)
