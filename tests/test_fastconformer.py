"""Our FastConformer on its own: streaming equals offline, decoders, loss, files, recipe and CLI."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.fastconformer.config import EncoderConfig, FastConformerConfig, HeadsConfig
from asr.fastconformer.losses import rnnt_loss_reference
from asr.fastconformer.model import FastConformer
from asr.fastconformer.recognizer import EndpointConfig, Recognizer
from asr.tokenizer import Tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONTEXTS = ((70, 13), (70, 6), (70, 1), (70, 0))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("tok")
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero", "hello", "world", "speech", "stream"]
    rng = np.random.default_rng(0)
    (d / "t.txt").write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(300)))
    spm.SentencePieceTrainer.train(input=str(d / "t.txt"), model_prefix=str(d / "m"), vocab_size=32,
                                   model_type="unigram", minloglevel=2)
    return Tokenizer.from_file(d / "m.model")


@pytest.fixture(scope="module")
def model(tokenizer) -> FastConformer:
    torch.manual_seed(0)
    cfg = FastConformerConfig(
        EncoderConfig(n_layers=2, d_model=64, n_heads=4, subsampling_conv_channels=32, att_context_size=CONTEXTS,
                      dropout=0.0, dropout_att=0.0, dropout_pre_encoder=0.0, global_cmvn=True),
        HeadsConfig(vocab_size=tokenizer.vocab_size, pred_hidden=48, joint_hidden=48, dropout=0.0),
    )
    m = FastConformer(cfg, tokenizer)
    m.encoder.set_feature_statistics(torch.randn(80) * 0.5, torch.rand(80) * 0.5 + 0.75)  # streams must normalise too
    with torch.no_grad():  # random weights that make decoders emit: no all-blank outputs
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


def _audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 2 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def _real_audio() -> np.ndarray:
    if not (DATA / "jfk" / "manifest.tsv").is_file():
        pytest.skip(f"needs ../shared/data (jfk) at {DATA}")
    from speech.audio import read_audio

    return read_audio(next((DATA / "jfk" / "audio").iterdir()), sample_rate=16000)[0][: 16000 * 6]


def _stream_encoder(model: FastConformer, audio: np.ndarray, context, piece: int) -> torch.Tensor:
    """Features from the streaming front end fed ``piece`` samples at a time, then the encoder step per chunk."""
    from streaming.blocks import StreamingLogMel

    mel_stream = StreamingLogMel(model.cfg.features)
    frames = [mel_stream.process(torch.from_numpy(audio[s : s + piece])) for s in range(0, len(audio), piece)]
    mel = torch.cat([*frames, mel_stream.flush()], dim=1)[:, : len(audio) // 160]
    with torch.no_grad():
        return model.encoder.stream_features(mel, context)


@pytest.mark.parametrize("source", ["random", "real"])
@pytest.mark.parametrize("context", CONTEXTS, ids=lambda c: f"{c[1] * 80}ms")
def test_streaming_equals_offline(model, context, source):
    audio = _audio(4.37, 3) if source == "random" else _real_audio()
    with torch.no_grad():
        offline, length = model.encode(torch.from_numpy(audio)[None], context=context)
    offline = offline[0, : int(length)]
    for piece in (160, 1234, 16000):
        streamed = _stream_encoder(model, audio, context, piece)
        assert streamed.shape == offline.shape
        diff = float((streamed - offline).abs().max())
        if context[1] >= 1:
            assert diff < 1e-4, f"{context}: streaming differs from offline by {diff}"
        else:  # lookahead 0: NeMo's pre-encode cache cannot hold the whole receptive field (reported)
            assert 1e-4 < diff < 10.0
    ms = context[1] * 80
    for decoder in model.decoders:
        rec = Recognizer(model, ms, decoder, EndpointConfig(enabled=False))
        offline_tokens = rec.transcribe_offline([audio])[0].tokens
        events = rec.transcribe(audio)
        assert len(offline_tokens) > 3, "the random model should emit tokens"
        if context[1] >= 1:
            assert events[-1].final and events[-1].tokens == offline_tokens


def test_batched_greedy_equals_one_by_one(model):
    audios = [_audio(s, i) for i, s in enumerate((1.3, 2.9, 2.1))]
    for decoder in model.decoders:
        rec = Recognizer(model, 480, decoder)
        batched = [h.tokens for h in rec.transcribe_offline(audios)]
        single = [rec.transcribe_offline([a])[0].tokens for a in audios]
        assert batched == single


def test_endpoint_finalises_and_resets(model):
    speech_like, silence = _audio(2.0, 5), np.zeros(16000 * 3, np.float32)
    rec = Recognizer(model, 480, "ctc", EndpointConfig(silence_after_speech_s=0.4, silence_without_speech_s=1.0))
    session, signal, events = rec.session(), np.concatenate([speech_like, silence, speech_like]), []
    for start in range(0, len(signal), 1600):
        events += session.accept(signal[start : start + 1600])
    events += session.finish()
    finals = [e for e in events if e.final]
    assert len(finals) >= 2, [(e.final, e.text) for e in events]
    assert [e.segment for e in finals] == list(range(len(finals)))
    assert all(w.start <= w.end for e in finals for w in e.words)
    partials = [e for e in events if not e.final]
    assert partials and all(e.segment <= finals[-1].segment for e in partials)


def test_session_rejects_bad_audio(model):
    session = Recognizer(model).session()
    with pytest.raises(ValueError, match="mono"):
        session.accept(np.zeros((10, 2), np.float32))
    session.finish()
    with pytest.raises(RuntimeError, match="finished"):
        session.accept(np.zeros(10, np.float32))


def test_unknown_lookahead_names_the_offered_ones(model):
    with pytest.raises(ValueError, match="1040ms, 480ms, 80ms, 0ms"):
        Recognizer(model, 90)


def test_rnnt_loss_equals_sum_over_alignments():
    torch.manual_seed(1)
    frames, labels, vocab, blank = 4, 2, 3, 2
    logits = torch.randn(1, frames, labels + 1, vocab)
    targets = torch.tensor([[0, 1]])
    lp = logits.log_softmax(-1)
    total = []
    for emits in itertools.combinations(range(frames + labels), labels):  # positions of label emissions
        t = u = 0
        score = 0.0
        for i in range(frames + labels):
            if i in emits:
                score += lp[0, t, u, targets[0, u]]
                u += 1
            else:
                if t == frames - 1 and u < labels:
                    score = -math.inf
                    break
                score += lp[0, t, u, blank]
                t += 1
        if t == frames and u == labels:
            total.append(score)
    expected = -torch.logsumexp(torch.tensor(total), 0)
    got = rnnt_loss_reference(logits, targets, torch.tensor([frames]), torch.tensor([labels]), blank)
    assert torch.allclose(got[0], expected, atol=1e-5)


def test_save_load_round_trip(model, tmp_path):
    model.save(tmp_path / "m")
    loaded = FastConformer.load(tmp_path / "m")
    audio = _audio(1.5, 9)
    assert Recognizer(loaded, 80).transcribe_offline([audio])[0].tokens == \
        Recognizer(model.half().float(), 80).transcribe_offline([audio])[0].tokens
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        FastConformer.load(tmp_path)


def test_default_decoder_comes_from_the_config(tokenizer):
    def model(default):
        heads = HeadsConfig(vocab_size=tokenizer.vocab_size, pred_hidden=8, joint_hidden=8, default_decoder=default)
        return FastConformer(FastConformerConfig(EncoderConfig(n_layers=1, d_model=16, n_heads=2,
                                                               subsampling_conv_channels=4), heads), tokenizer)

    assert Recognizer(model(None), 80).decoder == "rnnt"  # NeMo's hybrid default
    assert Recognizer(model("ctc"), 80).decoder == "ctc"
    assert Recognizer(model("ctc"), 80, "rnnt").decoder == "rnnt"
    with pytest.raises(ValueError, match="default_decoder 'rnnt' is not a head of this model"):
        HeadsConfig(rnnt=False, default_decoder="rnnt")
