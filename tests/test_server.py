"""`speech serve` end to end over real WebSocket connections on loopback: transcripts identical to the
in-process streaming run (1 and 32 concurrent sessions), every kind of bad input, admission, auth, health,
metrics, cancel, keep-alive, backpressure and graceful shutdown."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
import urllib.error
import urllib.request

import numpy as np
import pytest
from real_audio import real_recordings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from asr.fastconformer.recognizer import Recognizer
from asr.fastconformer.scheduled import transcribe_many
from speech.asr_models import load_fastconformer
from speech.client import ServerError, SpeechClient, hypotheses
from speech.engines import onnx_backend
from speech.protocol import ProtocolError, encode_audio, parse_start
from speech.server import SpeechServer
from speech.server_config import load_server_config

FC_ONLY = [{"name": "fastconformer", "family": "fastconformer", "default_lookahead_ms": 80, "max_wait_ms": 5}]


def server_config(**overrides):
    return load_server_config(None, **{"port": 0, "models": FC_ONLY, **overrides})


async def with_server(body, **overrides):
    async with SpeechServer(server_config(**overrides)) as server:
        return await body(server)


def run(body, **overrides):
    return asyncio.run(with_server(body, **overrides))


def comparable(events) -> list[tuple]:
    """What a transcript message carries (word times to the millisecond the protocol sends)."""
    return [(e.final, e.segment, e.text, e.stable, tuple((w.text, round(w.start, 3), round(w.end, 3)) for w in e.words))
            for e in events]


@pytest.fixture(scope="module")
def recordings():
    return real_recordings(32)


def _in_process_run(recordings, backend=None):
    """The same model and settings in-process: the streaming run the server must reproduce exactly."""
    recognizer = Recognizer(load_fastconformer(None), 80.0, backend=backend)
    return asyncio.run(transcribe_many(recognizer, [a for _, a in recordings], concurrency=32))


@pytest.fixture(scope="module")
def in_process(recordings):
    return _in_process_run(recordings)


@pytest.fixture(scope="module")
def in_process_onnx(recordings):
    """The in-process run on ONNX Runtime, from the same cached files a ``backend: onnx`` server uses."""
    return _in_process_run(recordings, onnx_backend({"backend": "onnx"}))


async def _stream_in_random_frames(url: str, audio: np.ndarray, seed: int, **start) -> list:
    """One session whose frames have random sizes (odd sample counts included), as real clients send them."""
    rng = np.random.default_rng(seed)
    async with await SpeechClient.connect(url) as client:
        ready = await client.start(sample_rate=16000, **start)
        assert ready["chunk_ms"] == 160 and ready["model_sample_rate"] == 16000

        async def send() -> None:
            at = 0
            while at < len(audio):
                size = int(rng.integers(1, 8000))
                await client.send_audio(audio[at : at + size])
                at += size
            await client.send({"type": "end"})

        sender = asyncio.create_task(send())
        messages = []
        while not messages or messages[-1]["type"] != "done":
            messages.append(await client.receive())
        await sender
    assert messages[-1]["audio_s"] == round(len(audio) / 16000, 3)
    return hypotheses(messages)


@pytest.mark.parametrize("sessions", [1, 32])
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_server_transcripts_equal_the_in_process_streaming_run(recordings, request, backend, sessions):
    """ONNX Runtime lanes run on the service's step thread, torch lanes on the event loop: both are exact."""
    in_process = request.getfixturevalue("in_process" if backend == "torch" else "in_process_onnx")

    async def body(server):
        return await asyncio.gather(*(_stream_in_random_frames(server.ws_url, audio, seed)
                                      for seed, (_, audio) in enumerate(recordings[:sessions])))

    remote = run(body, models=[{**FC_ONLY[0], "backend": backend}])
    for (name, _), got, want in zip(recordings, remote, in_process, strict=False):
        assert comparable(got) == comparable(want), name
    assert any(e.final and e.text for events in remote for e in events)


def test_f32le_at_another_rate_is_resampled_in_the_session(recordings):
    """44.1 kHz f32le in: the session resamples to 16 kHz; the words are those of the 16 kHz run."""
    from speech.audio import resample

    _name, audio = recordings[0]

    async def body(server):
        async with await SpeechClient.connect(server.ws_url) as client:
            ready = await client.start(sample_rate=44100, encoding="f32le")
            assert ready["input"] == {"sample_rate": 44100, "encoding": "f32le"}
            return hypotheses(await client.stream(resample(audio, 16000, 44100), 44100, frame_s=0.05))

    finals = [e.text for e in run(body) if e.final]
    reference = Recognizer(load_fastconformer(None), 80.0).transcribe(audio)
    assert finals == [e.text for e in reference if e.final]


# ---- bad input -----------------------------------------------------------------------------------------
async def _expect_error(ws, code: str, fatal: bool) -> dict:
    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "error" and message["code"] == code, message
    assert message["fatal"] is fatal and message["message"]
    return message


async def _start(ws, **fields) -> dict:
    await ws.send(json.dumps({"type": "start", "task": "asr", "sample_rate": 16000, **fields}))
    reply = json.loads(await ws.recv())
    assert reply["type"] == "ready", reply
    return reply


async def _closed_with(ws, code: int) -> None:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == code, (ws.close_code, ws.close_reason)


async def _bad_inputs(url: str) -> None:
    """Every bad input of the issue, one connection each; recoverable ones leave the connection usable."""
    async with connect(url) as ws:  # malformed JSON, unknown type/task/model, unknown fields, audio before start
        await ws.send("{not json")
        await _expect_error(ws, "bad_json", False)
        await ws.send('{"type": "ping", "n": ' + "9" * 5000 + "}")  # too long an integer for Python's json
        await _expect_error(ws, "bad_json", False)
        await ws.send(json.dumps({"type": "hello"}))
        await _expect_error(ws, "bad_message", False)
        await ws.send(json.dumps({"type": "start", "task": "dance", "sample_rate": 16000}))
        await _expect_error(ws, "unknown_task", False)
        await ws.send(json.dumps({"type": "start", "task": "asr", "model": "nope", "sample_rate": 16000}))
        await _expect_error(ws, "unknown_model", False)
        await ws.send(json.dumps({"type": "start", "task": "tts", "sample_rate": 16000}))
        await _expect_error(ws, "task_unavailable", False)
        await ws.send(json.dumps({"type": "start", "task": "asr", "sample_rate": 16000, "lookahed_ms": 80}))
        await _expect_error(ws, "bad_parameter", False)
        await ws.send(b"\x00\x01" * 800)
        await _expect_error(ws, "no_session", False)
        await ws.send(json.dumps({"type": "end"}))
        await _expect_error(ws, "no_session", False)
        for bad in ({"sample_rate": 1000}, {"sample_rate": "16k"}, {"encoding": "mp3"}, {"lookahead_ms": 33}):
            await ws.send(json.dumps({"type": "start", "task": "asr", "sample_rate": 16000, **bad}))
            await _expect_error(ws, "bad_parameter", False)
        await _start(ws)  # still usable after all of that
        await ws.send(json.dumps({"type": "start", "task": "asr", "sample_rate": 16000}))
        await _expect_error(ws, "session_open", False)
    async with connect(url) as ws:  # odd-length PCM16 frame: the session's audio is corrupt -> fatal
        await _start(ws)
        await ws.send(b"\x00" * 321)
        await _expect_error(ws, "bad_audio", True)
        await _closed_with(ws, 1008)
    async with connect(url) as ws:  # NaN in f32le
        await _start(ws, encoding="f32le")
        await ws.send(np.array([0.0, np.nan], "<f4").tobytes())
        await _expect_error(ws, "bad_audio", True)
        await _closed_with(ws, 1008)
    async with connect(url) as ws:  # a text frame inside an audio stream
        await _start(ws)
        await ws.send(encode_audio(np.zeros(1600), "pcm_s16le"))
        await ws.send("AAAA//8=")
        await _expect_error(ws, "bad_json", True)
        await _closed_with(ws, 1008)
    async with connect(url, max_size=None) as ws:  # a frame over max_frame_bytes
        await _start(ws)
        await ws.send(b"\x00" * 300_000)
        await _closed_with(ws, 1009)
    async with connect(url) as ws:  # abrupt disconnect mid-stream (TCP reset, no close frame)
        await _start(ws)
        await ws.send(encode_audio(np.zeros(8000), "pcm_s16le"))
        ws.transport.abort()
    await _client_that_never_reads(url)


async def _client_that_never_reads(url: str) -> None:
    """Completes the handshake, starts a session, streams audio and never reads another byte (so it never
    answers a ping either): the server's keep-alive drops it. Its socket is left open on purpose."""
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    uri = parse_uri(url)
    protocol = ClientProtocol(uri)
    reader, writer = await asyncio.open_connection(uri.host, uri.port)
    protocol.send_request(protocol.connect())
    writer.write(b"".join(protocol.data_to_send()))
    protocol.receive_data(await reader.readuntil(b"\r\n\r\n"))
    protocol.send_text(json.dumps({"type": "start", "task": "asr", "sample_rate": 16000}).encode())
    for _ in range(50):
        protocol.send_binary(encode_audio(np.full(1600, 0.1), "pcm_s16le"))
    writer.write(b"".join(protocol.data_to_send()))
    await writer.drain()
    _NEVER_READ.append(writer)


_NEVER_READ: list = []  # kept referenced (not garbage-collected, so not closed) until the test ends


async def _wait_until_idle(server: SpeechServer, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while loop.time() < until:
        lanes = server.service.scheduler.lanes.values()
        if not server.service.sessions and not server._connections and all(lane.streams == 0 for lane in lanes):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still open: sessions {list(server.service.sessions)}, "
                         f"connections {len(server._connections)}")


def test_bad_input_gets_structured_errors_others_keep_being_served_and_memory_returns(recordings, in_process):
    name, audio = recordings[1]

    async def body(server):
        url = server.ws_url
        # a good session streams in real time through all of the bad ones
        good = asyncio.create_task(_realtime_session(url, audio))
        await _bad_inputs(url)
        got = await good
        assert comparable(got) == comparable(in_process[1]), name
        await _wait_until_idle(server)
        await _bad_inputs(url)  # warm-up done: now measure
        await _wait_until_idle(server)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for _ in range(3):
            await _bad_inputs(url)
            await _wait_until_idle(server)
        gc.collect()
        growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
        tracemalloc.stop()
        metrics = server.service.metrics
        assert metrics.inbound_queue._value.get() == 0
        assert all(lane.pool.in_use == 0 for lane in server.service.scheduler.lanes.values())
        errors = {s.labels["code"] for s in metrics.errors.collect()[0].samples if s.value}
        assert {"bad_json", "bad_message", "unknown_task", "unknown_model", "task_unavailable", "bad_parameter",
                "no_session", "session_open", "bad_audio"} <= errors
        return growth

    growth = run(body, ping_interval_s=0.3, ping_timeout_s=0.3)
    assert growth < 1_000_000, f"Python memory grew by {growth} bytes over 3 rounds of bad input"


async def _realtime_session(url: str, audio: np.ndarray) -> list:
    async with await SpeechClient.connect(url) as client:
        await client.start(sample_rate=16000)
        return hypotheses(await client.stream(audio, 16000, frame_s=0.1, realtime=True))


def test_start_is_checked_field_by_field():
    with pytest.raises(ProtocolError, match="sample_rate must be an integer"):
        parse_start({"type": "start", "task": "asr", "sample_rate": True})
    with pytest.raises(ProtocolError, match="partials must be true or false"):
        parse_start({"type": "start", "task": "asr", "sample_rate": 16000, "partials": "yes"})
    request = parse_start({"type": "start", "task": "asr", "sample_rate": 48000, "encoding": "f32le",
                           "lookahead_ms": 480})
    assert (request.sample_rate, request.encoding, request.options) == (48000, "f32le", {"lookahead_ms": 480.0})


def test_model_entries_name_what_they_accept():
    from speech.engines import load_engine

    with pytest.raises(ValueError, match=r"backend must be one of \['torch', 'onnx'\].*'tensorrt'"):
        onnx_backend({"name": "fc", "backend": "tensorrt"})
    with pytest.raises(ValueError, match="precision goes with backend: onnx"):
        onnx_backend({"name": "fc", "precision": "int8"})
    with pytest.raises(ValueError, match="unknown keys \\['threads'\\]"):
        load_engine({"family": "fastconformer", "threads": 2}, scheduler=None)
    shipped = load_server_config(None).models[0]
    assert (shipped["family"], shipped["backend"]) == ("fastconformer", "onnx")  # what `speech bench serve` measured


# ---- service behaviour ---------------------------------------------------------------------------------
def _http(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_admission_control_busy_error_and_503_at_capacity():
    async def body(server):
        first, second = await SpeechClient.connect(server.ws_url), await SpeechClient.connect(server.ws_url)
        await first.start(sample_rate=16000)
        status, _ = await asyncio.to_thread(_http, server.url + "readyz")
        assert status == 200
        await second.start(sample_rate=16000)
        async with await SpeechClient.connect(server.ws_url) as third:
            with pytest.raises(ServerError) as refused:
                await third.start(sample_rate=16000)
            assert refused.value.code == "busy"
            for path in ("readyz", "ws"):
                status, text = await asyncio.to_thread(_http, server.url + path)
                assert status == 503 and b"capacity" in text, (path, status, text)
            await first.send({"type": "cancel"})
            assert (await first.receive())["type"] == "cancelled"
            await third.start(sample_rate=16000)  # a slot is free again
        await first.close()
        await second.close()

    run(body, max_sessions=2)


def test_token_authentication_health_metrics_and_models():
    async def body(server):
        with pytest.raises(Exception, match="401"):
            await SpeechClient.connect(server.ws_url)
        async with await SpeechClient.connect(server.ws_url, token="s3cret") as client:
            await client.start(sample_rate=16000)
            assert (await client.stream(np.zeros(16000), 16000))[-1]["type"] == "done"
        async with connect(server.ws_url + "?token=s3cret") as ws:
            await _start(ws)
        status, _body_bytes = await asyncio.to_thread(_http, server.url + "healthz")
        assert status == 200
        status, models = await asyncio.to_thread(_http, server.url + "v1/models")
        described = json.loads(models)
        assert described["models"][0]["lookaheads_ms"] == [0.0, 80.0, 480.0, 1040.0]
        assert described["tasks"]["duplex"].startswith("arrives with issue")
        assert described["tasks"]["tts"] == described["tasks"]["vc"] == "no model for it is loaded here"  # ASR only
        status, page = await asyncio.to_thread(_http, server.url)
        assert status == 200 and b"<html" in page.lower()
        status, text = await asyncio.to_thread(_http, server.url + "metrics")
        for name in ("speech_sessions_active", "speech_chunk_latency_seconds_bucket", "speech_lane_queue_depth",
                     "speech_chunk_deadline_misses_total", "speech_bytes_in_total", "speech_bytes_out_total"):
            assert name.encode() in text, name

    run(body, token="s3cret")


def test_cancel_ping_and_idle_timeout():
    async def body(server):
        async with await SpeechClient.connect(server.ws_url) as client:
            await client.send({"type": "ping"})
            assert await client.receive() == {"type": "pong"}
            ready = await client.start(sample_rate=16000)
            for _ in range(20):
                await client.send_audio(np.full(1600, 0.05))
            await client.send({"type": "cancel"})
            while (message := await client.receive())["type"] != "cancelled":
                assert message["type"] in ("partial", "final")
            assert message["session"] == ready["session"]
            assert (await client.start(sample_rate=16000))["session"] != ready["session"]
            for _ in range(30):  # end then cancel: the end still hears all of its audio
                await client.send_audio(np.full(1600, 0.05))
            await client.send({"type": "end"})
            await client.send({"type": "cancel"})
            while (message := await client.receive())["type"] != "done":
                assert message["type"] in ("partial", "final")
            assert message["audio_s"] == 3.0
            assert (await client.receive())["code"] == "no_session"
        async with connect(server.ws_url) as ws:
            await _expect_error(ws, "idle_timeout", True)
            await _closed_with(ws, 1000)

    run(body, idle_timeout_s=1.0)


def test_backpressure_bounds_the_queue_of_a_fast_sender(recordings, in_process):
    """A client sending 32 files' worth of audio as fast as it can: the server reads at most queue_frames
    ahead, and every sample is still transcribed in order."""
    name, audio = recordings[2]

    async def body(server):
        high = 0

        async def watch() -> None:
            nonlocal high
            while True:
                high = max(high, server.service.metrics.inbound_queue._value.get())
                await asyncio.sleep(0.001)

        watcher = asyncio.create_task(watch())
        async with await SpeechClient.connect(server.ws_url) as client:
            await client.start(sample_rate=16000)
            got = hypotheses(await client.stream(audio, 16000, frame_s=0.01))
        watcher.cancel()
        return got, high

    got, high = run(body, queue_frames=3)
    assert comparable(got) == comparable(in_process[2]), name
    assert 1 <= high <= 3


def test_a_fast_sender_is_not_dropped_while_its_pongs_wait_behind_its_audio(recordings):
    """Keep-alive pings every 0.2 s on both sides, 1 s timeouts, while a client sends 8 utterances as fast as it
    can: the server reads 3 frames ahead, so each side's pong waits behind seconds of queued audio (loopback
    socket buffers hold megabytes), longer than the ping timeout. Traffic still moving counts as alive
    (``speech.keepalive``): the session completes, exact.

    The steps run on ONNX Runtime's step thread, as shipped. With torch lanes they would run inline on the
    event loop that this test's client shares with the server, and a step longer than the timeout would stop
    both sides' traffic at once: a drop that separate processes would not see. With 0.2 s timeouts a loaded
    CI machine still paused traffic that long now and then, hence 1 s."""
    audio = np.concatenate([a for _, a in recordings[:8]])

    async def body(server):
        client = await SpeechClient.connect(server.ws_url, ping_interval_s=0.2, ping_timeout_s=1.0)
        async with client:
            await client.start(sample_rate=16000)
            return await client.stream(audio, 16000, frame_s=0.01)

    messages = run(body, models=[{**FC_ONLY[0], "backend": "onnx"}], queue_frames=3, ping_interval_s=0.2,
                   ping_timeout_s=1.0)
    assert messages[-1]["audio_s"] == round(len(audio) / 16000, 3)
    backend = onnx_backend({"backend": "onnx"})
    assert comparable(hypotheses(messages)) == comparable(
        Recognizer(load_fastconformer(None), 80.0, backend=backend).transcribe(audio))


def test_graceful_shutdown_drains_open_sessions(recordings, in_process):
    name, audio = recordings[3]

    async def body(server):
        client = await SpeechClient.connect(server.ws_url)
        await client.start(sample_rate=16000)
        half = len(audio) // 2 // 1600 * 1600
        for at in range(0, half, 1600):
            await client.send_audio(audio[at : at + 1600])
        stopping = asyncio.create_task(server.shutdown(drain_s=30))
        await asyncio.sleep(0.2)
        status, _ = await asyncio.to_thread(_http, server.url + "readyz")
        assert status == 503
        rest = await client.stream(audio[half:], 16000)
        await stopping
        await _closed_with(client.ws, 1001)
        return rest

    async def main():
        server = SpeechServer(server_config())
        await server.__aenter__()
        return await body(server)

    finals = [h.text for h in hypotheses(asyncio.run(main())) if h.final]
    assert finals == [e.text for e in in_process[3] if e.final], name
