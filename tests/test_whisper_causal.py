"""Parity of the causal streaming Whisper: streaming == full-sequence under the same block-causal mask.

Whisper tiny.en (packaged, converted on first use). Features: the causal front end streamed in odd-sized
pieces equals its offline form. Encoder: chunk-by-chunk with the K/V cache equals the offline forward
with the block-causal mask within 1e-4, for 100, 200 and 300 ms chunks, on synthetic and real audio, also
with streams at different positions in one batch. Decoder: the cached step equals teacher forcing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the whisper extra (transformers) holds the converted model")
from asr.whisper.encoder import EncoderState
from asr.whisper.features import StreamingFeatures, causal_features, offline_features
from asr.whisper.model import CausalWhisper
from speech.audio import read_audio
from speech.bench.nemo_reference import random_speechlike
from speech.whisper_models import whisper_directory

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOL = 1e-4


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEECH_CACHE", str(tmp_path_factory.mktemp("speech-cache")))
        return CausalWhisper.load(whisper_directory("tiny.en"))


@pytest.fixture(scope="module")
def model64(model):
    """The same weights in float64: the parity bound then measures the algorithm, not float32 summation order."""
    return CausalWhisper.load(whisper_directory("tiny.en"), dtype=torch.float64)


@pytest.fixture(scope="module", params=["synthetic", "jfk"])
def audio(request) -> np.ndarray:
    if request.param == "synthetic":
        return random_speechlike(4.3, seed=3)
    path = DATA / "jfk" / "audio" / "jfk.flac"
    if not path.is_file():
        pytest.skip(f"needs ../shared/data (jfk) at {path}")
    return read_audio(path, sample_rate=16000)[0]


def _stream_features(audio: np.ndarray, piece: int) -> torch.Tensor:
    stream = StreamingFeatures()
    out = [stream.process(torch.from_numpy(audio[i : i + piece])) for i in range(0, len(audio), piece)]
    return torch.cat([*out, stream.flush()], dim=-1)


@pytest.mark.parametrize("piece", [160, 1234, 16000])
def test_causal_features_stream_exactly_and_stay_close_to_whisper(audio, piece):
    offline = causal_features(torch.from_numpy(audio)[None])[0]
    assert offline.shape[-1] == len(audio) // 160
    torch.testing.assert_close(_stream_features(audio, piece), offline, atol=1e-5, rtol=0)
    whisper = offline_features(torch.from_numpy(audio)[None], pad_to_window=False)[0]
    assert (offline - whisper).abs().mean() < 0.02  # the causal floor moves only near-silent frames


def test_full_attention_is_whisper(model, audio):
    features = offline_features(torch.from_numpy(audio)[None])
    with torch.inference_mode():
        ours = model.encoder(features)
        theirs = model.hf.model.encoder(features).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def _stream(model: CausalWhisper, features: torch.Tensor, chunk: int) -> tuple[torch.Tensor, EncoderState]:
    state, outs = model.encoder.initial_state(1, dtype=features.dtype), []
    with torch.inference_mode():
        for start in range(0, features.shape[-1], 2 * chunk):
            out, state, _ = model.encoder.stream(features[..., start : start + 2 * chunk], state)
            outs.append(out)
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("chunk", [5, 10, 15])
def test_streaming_encoder_equals_block_causal_offline(model, model64, audio, chunk):
    features = causal_features(torch.from_numpy(audio)[None])
    usable = features.shape[-1] // (2 * chunk) * 2 * chunk
    features = features[..., :usable]
    with torch.inference_mode():
        offline = model.encoder(features, chunk)
        offline64 = model64.encoder(features.double(), chunk)
    streamed64, state = _stream(model64, features.double(), chunk)
    assert (streamed64 - offline64).abs().max() < TOL
    assert int(state.length) == usable // 2
    streamed, _ = _stream(model, features, chunk)  # float32: the same within float32 summation order
    assert (streamed - offline).abs().max() < TOL * offline.abs().max()
    # the mask matters: a frame's output must not depend on later chunks
    with torch.inference_mode():
        future_changed = model.encoder(torch.cat([features[..., : 2 * chunk], -features[..., 2 * chunk :]], -1), chunk)
    assert (future_changed[:, :chunk] - offline[:, :chunk]).abs().max() < TOL
    assert (future_changed[:, chunk:] - offline[:, chunk:]).abs().max() > 1e-2


def test_streams_at_different_positions_share_a_batch(model, audio):
    chunk = 10
    features = causal_features(torch.from_numpy(audio)[None])[..., : 6 * chunk]
    with torch.inference_mode():
        ahead = model.encoder.initial_state(1)
        first, ahead, _ = model.encoder.stream(features[..., : 2 * chunk], ahead)
        second, _, _ = model.encoder.stream(features[..., 2 * chunk : 4 * chunk], ahead)
        fresh = model.encoder.initial_state(1)
        joined = EncoderState(*(torch.cat([a, b]) for a, b in zip(
            (ahead.mel_tail, ahead.keys, ahead.values, ahead.length),
            (fresh.mel_tail, fresh.keys, fresh.values, fresh.length), strict=True)))
        both, _, _ = model.encoder.stream(torch.cat([features[..., 2 * chunk : 4 * chunk], features[..., : 2 * chunk]]),
                                          joined)
    assert (both[0] - second[0]).abs().max() < TOL
    assert (both[1] - first[0]).abs().max() < TOL


def test_encoder_refuses_more_than_30_seconds(model):
    state = model.encoder.initial_state(1)
    state.length[:] = model.encoder.capacity - 5
    with pytest.raises(ValueError, match="30 s"):
        model.encoder.stream(torch.zeros(1, 80, 20), state)


def test_decoder_step_equals_teacher_forcing(model, audio):
    """Tokens in pieces over cross-attention K/V appended chunk by chunk equal teacher forcing; a rewind is
    a smaller ``start``; beam rows share the cached prefix and see only their own tokens."""
    features = causal_features(torch.from_numpy(audio)[None])[..., :120]
    tokens = torch.tensor([model.tokens.prompt() + model.tokens.encode(" and so my fellow Americans")])
    dec = model.decoder
    with torch.inference_mode():
        encoded = model.encoder(features, 15)
        reference = dec.logits(tokens, encoded)
        cache = dec.initial_cache(1)
        for start in range(0, encoded.shape[1], 15):  # cross-attention K/V appended chunk by chunk
            for rows, part in zip((cache.cross_keys, cache.cross_values), dec.project_audio(encoded[:, start : start + 15])):
                dec.write_rows(rows, part, torch.tensor([start]))
        frames = torch.tensor([encoded.shape[1]])

        def run(first: int, last: int, rows=None) -> torch.Tensor:
            piece = tokens[:, None, first:last] if rows is None else rows
            return dec.output(dec.forward_tokens(piece, torch.tensor([first]), frames, cache)[0])[:, 0]

        stepped = [run(0, 3)] + [run(i, i + 1) for i in range(3, tokens.shape[1])]
        assert (torch.cat(stepped, 1) - reference).abs().max() < TOL
        again = run(5, tokens.shape[1])  # rewound to 5
        assert (again - reference[:, 5:]).abs().max() < TOL
        beams = torch.stack([tokens[0, 5:], tokens[0, 5:].flip(0)])[None]  # two rows after the shared prefix
        both = dec.output(dec.forward_tokens(beams, torch.tensor([5]), frames, cache)[0])[0]
        flipped = dec.logits(torch.cat([tokens[:, :5], beams[:, 1]], 1), encoded)[0, 5:]
    assert (both[0] - reference[0, 5:]).abs().max() < TOL
    assert (both[1] - flipped).abs().max() < TOL
