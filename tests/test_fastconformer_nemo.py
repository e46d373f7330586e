"""Parity with NVIDIA NeMo 3.0: our import of a `.nemo` against NeMo's own offline and streaming steps.

Small randomly initialised CTC, RNNT and hybrid models are built from NeMo's streaming configs
(speech/bench/nemo_reference.py), saved with NeMo's `save_to`, imported without NeMo, and compared on the same
audio: features, encoder outputs (1e-4) and decoded tokens, offline and through
`cache_aware_stream_step` / `conformer_stream_step`, for every lookahead of a multi-lookahead model.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("nemo.collections.asr", reason="nemo_toolkit[asr] is the reference (the `nemo` extra)")
from asr.fastconformer.recognizer import EndpointConfig, Recognizer
from asr.nemo_import import UnsupportedCheckpoint, load_nemo
from speech.bench import nemo_reference as nemo_models

TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return nemo_models.train_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def audio():
    # 3.29 s: 329 feature frames, a whole number of NeMo chunks for every lookahead (NeMo's buffer
    # drops a last chunk shorter than 8 frames, which would make its streaming shorter than offline)
    return torch.from_numpy(nemo_models.random_speechlike(3.29, seed=1))[None]


@pytest.fixture(scope="module", params=nemo_models.KINDS)
def pair(request, tokenizer_dir, tmp_path_factory):
    nemo = nemo_models.build(request.param, tokenizer_dir, nemo_models.MULTI_CONTEXT)
    path = tmp_path_factory.mktemp(request.param) / f"{request.param}.nemo"
    nemo.save_to(str(path))
    return request.param, nemo, load_nemo(path)


def test_features_match(pair, audio):
    _, nemo, ours = pair
    length = torch.tensor([audio.shape[1]])
    with torch.no_grad():
        theirs, their_len = nemo.preprocessor(input_signal=audio, length=length)
        mine, my_len = ours.features(audio)
    assert int(their_len) == int(my_len)
    assert (theirs[..., : int(my_len)] - mine[..., : int(my_len)]).abs().max() < TOL


@pytest.mark.parametrize("context", nemo_models.MULTI_CONTEXT, ids=lambda c: f"{c[1] * 80}ms")
def test_encoder_and_tokens_match_offline_and_streaming(pair, audio, context):
    kind, nemo, ours = pair
    with torch.no_grad():
        mel, mel_len = nemo.preprocessor(input_signal=audio, length=torch.tensor([audio.shape[1]]))
        ours_offline, ours_len = ours.encoder(*ours.features(audio), tuple(context))
    for decoder in ours.decoders:
        nemo_offline, nemo_tokens = nemo_models.offline_tokens(nemo, mel, mel_len, context, decoder)
        assert int(ours_len) == nemo_offline.shape[0]
        assert (ours_offline[0, : int(ours_len)] - nemo_offline).abs().max() < TOL
        nemo_stream, _ = nemo_models.stream_encoder(nemo, mel, mel_len, context)
        nemo_stream_tokens = nemo_models.stream_tokens(nemo, mel, mel_len, context, decoder)

        recognizer = Recognizer(ours, context[1] * 80, decoder, EndpointConfig(enabled=False))
        offline = recognizer.transcribe_offline([audio[0].numpy()])[0]
        assert _ids(ours, offline) == nemo_tokens, f"{kind}/{decoder}: offline tokens differ"

        session = recognizer.session()
        encoded = _stream_encoder(ours, audio, context)
        assert encoded.shape == nemo_stream.shape
        assert (encoded - nemo_stream).abs().max() < TOL
        events = session.accept(audio[0].numpy()) + session.finish()
        assert _ids(ours, events[-1]) == nemo_stream_tokens, f"{kind}/{decoder}: streaming tokens differ"


def _ids(model, hypothesis) -> list[int]:
    return list(hypothesis.tokens)


def _stream_encoder(model, audio, context) -> torch.Tensor:
    mel, frames = model.features(audio)
    with torch.no_grad():
        return model.encoder.stream_features(mel[0, :, : int(frames)], tuple(context))


def test_refuses_what_it_cannot_stream(tokenizer_dir, tmp_path):
    from nemo.collections.asr.models import EncDecCTCModelBPE
    from omegaconf import OmegaConf

    cfg = nemo_models.streaming_config("ctc", tokenizer_dir, [[70, 13]])
    cfg["preprocessor"]["normalize"] = "per_feature"
    path = tmp_path / "per_feature.nemo"
    EncDecCTCModelBPE(cfg=OmegaConf.create(cfg)).save_to(str(path))
    with pytest.raises(UnsupportedCheckpoint, match="normalize"):
        load_nemo(path)
    (tmp_path / "junk.nemo").write_bytes(b"not a tar")
    with pytest.raises(UnsupportedCheckpoint, match="not a .nemo archive"):
        load_nemo(tmp_path / "junk.nemo")
