"""Small randomly initialised NeMo cache-aware models built from NeMo's own streaming configs.

The encoder, decoder, joint, preprocessor and decoding sections follow
``examples/asr/conf/fastconformer/{cache_aware_streaming,hybrid_cache_aware_streaming}/*_bpe_streaming.yaml``
at any size; everything else is NeMo's code. Only the parity tests and `speech bench asr-fastconformer`
import this (it needs the `nemo` extra).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

KINDS = ("ctc", "rnnt", "hybrid")
MULTI_CONTEXT = [[70, 13], [70, 6], [70, 1], [70, 0]]

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "bright", "stars", "shine", "above", "quiet", "hills", "and", "rivers", "flow", "toward", "distant", "cities", "where", "people", "speak", "many", "languages"]


def train_tokenizer(directory: Path, vocab_size: int = 48) -> Path:
    """A SentencePiece BPE model in NeMo's tokenizer-directory layout."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    text = directory / "text.txt"
    text.write_text("\n".join(" ".join(rng.choices(WORDS, k=12)) for _ in range(400)) + "\n")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(directory / "tokenizer"), vocab_size=vocab_size,
                                   model_type="bpe", character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    (directory / "vocab.txt").write_text("".join(sp.id_to_piece(i) + "\n" for i in range(sp.get_piece_size())))
    return directory


def streaming_config(kind: str, tokenizer_dir: Path, contexts: list, *, n_layers: int = 2, d_model: int = 64,
                     n_heads: int = 4, conv_channels: int = 32, pred_hidden: int = 48, joint_hidden: int = 48,
                     conv_norm_type: str = "layer_norm") -> dict:
    encoder = {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "feat_out": -1,
        "n_layers": n_layers, "d_model": d_model, "use_bias": True, "subsampling": "dw_striding",
        "subsampling_factor": 8, "subsampling_conv_channels": conv_channels, "causal_downsampling": True,
        "ff_expansion_factor": 4, "self_attention_model": "rel_pos", "n_heads": n_heads,
        "att_context_size": contexts, "att_context_style": "chunked_limited", "att_context_probs": None,
        "xscaling": True, "pos_emb_max_len": 5000, "conv_kernel_size": 9, "conv_norm_type": conv_norm_type,
        "conv_context_size": "causal", "dropout": 0.1, "dropout_pre_encoder": 0.1, "dropout_emb": 0.0,
        "dropout_att": 0.1,
    }
    preprocessor = {
        "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor", "sample_rate": 16000,
        "normalize": "NA", "window_size": 0.025, "window_stride": 0.01, "window": "hann", "features": 80,
        "n_fft": 512, "frame_splicing": 1, "dither": 0.00001, "pad_to": 0,
    }
    ctc_decoder = {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": None, "num_classes": -1,
                   "vocabulary": []}
    cfg = {"sample_rate": 16000, "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
           "preprocessor": preprocessor, "encoder": encoder,
           "spec_augment": None, "train_ds": None, "validation_ds": None, "test_ds": None}
    if kind == "ctc":
        cfg["decoder"] = ctc_decoder
        return cfg
    cfg["model_defaults"] = {"enc_hidden": d_model, "pred_hidden": pred_hidden, "joint_hidden": joint_hidden}
    cfg["decoder"] = {"_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
                      "random_state_sampling": False, "blank_as_pad": True,
                      "prednet": {"pred_hidden": pred_hidden, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.2}}
    cfg["joint"] = {"_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None,
                    "preserve_memory": False, "fuse_loss_wer": True, "fused_batch_size": 4,
                    "jointnet": {"joint_hidden": joint_hidden, "activation": "relu", "dropout": 0.2}}
    cfg["decoding"] = {"strategy": "greedy_batch", "greedy": {"max_symbols": 10}}
    cfg["loss"] = {"loss_name": "default", "warprnnt_numba_kwargs": {"fastemit_lambda": 5e-3, "clamp": -1.0}}
    if kind == "hybrid":
        cfg["aux_ctc"] = {"ctc_loss_weight": 0.3, "use_cer": False, "ctc_reduction": "mean_batch",
                          "decoder": ctc_decoder, "decoding": {"strategy": "greedy"}}
    return cfg


def build(kind: str, tokenizer_dir: Path, contexts: list, seed: int = 0, **sizes):
    """A NeMo model of ``kind`` with every parameter perturbed (no zero biases), in eval mode."""
    from nemo.collections.asr.models import EncDecCTCModelBPE, EncDecHybridRNNTCTCBPEModel, EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    torch.manual_seed(seed)
    cls = {"ctc": EncDecCTCModelBPE, "rnnt": EncDecRNNTBPEModel, "hybrid": EncDecHybridRNNTCTCBPEModel}[kind]
    model = cls(cfg=OmegaConf.create(streaming_config(kind, tokenizer_dir, contexts, **sizes)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "joint" in name or "decoder" in name else 0.05))
    return model.eval()


def stream_encoder(model, mel: torch.Tensor, length: torch.Tensor, context: list) -> tuple[torch.Tensor, torch.Tensor]:
    """NeMo's cache-aware streaming of features: its own buffer and ``cache_aware_stream_step``."""
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    model.encoder.set_default_att_context_size(context)
    buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False, pad_and_drop_preencoded=False)
    buffer.append_processed_signal(mel[:, :, : int(length)])
    channel, time, channel_len = model.encoder.get_initial_cache_state(batch_size=1)
    outputs = []
    for step, (chunk, chunk_len) in enumerate(buffer):
        with torch.no_grad():
            encoded, encoded_len, channel, time, channel_len = model.encoder.cache_aware_stream_step(
                processed_signal=chunk, processed_signal_length=chunk_len, cache_last_channel=channel,
                cache_last_time=time, cache_last_channel_len=channel_len, keep_all_outputs=buffer.is_buffer_empty(),
                drop_extra_pre_encoded=0 if step == 0 else model.encoder.streaming_cfg.drop_extra_pre_encoded,
            )
        outputs.append(encoded[0, :, : int(encoded_len[0])].T)
    return torch.cat(outputs), buffer


def stream_tokens(model, mel: torch.Tensor, length: torch.Tensor, context: list, decoder: str) -> list[int]:
    """Token ids from NeMo's ``conformer_stream_step`` with ``decoder`` ('rnnt' or 'ctc')."""
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    if hasattr(model, "cur_decoder"):
        model.change_decoding_strategy(decoder_type=decoder, verbose=False)
    model.encoder.set_default_att_context_size(context)
    buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False, pad_and_drop_preencoded=False)
    buffer.append_processed_signal(mel[:, :, : int(length)])
    channel, time, channel_len = model.encoder.get_initial_cache_state(batch_size=1)
    hypotheses, predictions = None, None
    for step, (chunk, chunk_len) in enumerate(buffer):
        with torch.no_grad():
            predictions, _, channel, time, channel_len, hypotheses = model.conformer_stream_step(
                processed_signal=chunk, processed_signal_length=chunk_len, cache_last_channel=channel,
                cache_last_time=time, cache_last_channel_len=channel_len, keep_all_outputs=buffer.is_buffer_empty(),
                previous_hypotheses=hypotheses, previous_pred_out=predictions,
                drop_extra_pre_encoded=0 if step == 0 else model.encoder.streaming_cfg.drop_extra_pre_encoded,
                return_transcription=True,
            )
    if decoder == "rnnt":
        return [int(t) for t in hypotheses[0].y_sequence]
    return ctc_collapse(predictions[0].tolist(), blank=model.tokenizer.vocab_size)


def offline_tokens(model, mel: torch.Tensor, length: torch.Tensor, context: list, decoder: str) -> tuple[torch.Tensor, list[int]]:
    """NeMo's full-signal encoder output ``[T, D]`` and greedy tokens for one context."""
    if hasattr(model, "cur_decoder"):
        model.change_decoding_strategy(decoder_type=decoder, verbose=False)
    model.encoder.set_default_att_context_size(context)
    with torch.no_grad():
        encoded, encoded_len = model.encoder(audio_signal=mel, length=length)
        if decoder == "rnnt":
            hyps = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=encoded, encoded_lengths=encoded_len,
                                                                   return_hypotheses=True)
            hyp = hyps[0] if isinstance(hyps, list) else hyps[0][0]
            tokens = [int(t) for t in hyp.y_sequence]
        else:
            head = model.ctc_decoder if hasattr(model, "ctc_decoder") else model.decoder
            log_probs = head(encoder_output=encoded)
            tokens = ctc_collapse(log_probs[0, : int(encoded_len[0])].argmax(-1).tolist(), model.tokenizer.vocab_size)
    return encoded[0, :, : int(encoded_len[0])].T, tokens


def ctc_collapse(frames: list[int], blank: int) -> list[int]:
    out, previous = [], None
    for t in frames:
        if t != blank and t != previous:
            out.append(int(t))
        previous = t
    return out


def random_speechlike(seconds: float, seed: int) -> np.ndarray:
    """Noise with a moving formant-like envelope: enough structure for non-trivial random-model outputs."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    carrier = np.sin(2 * np.pi * (150 + 50 * np.sin(2 * np.pi * 0.7 * t)) * t)
    return (0.3 * carrier * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(n)).astype(np.float32)
