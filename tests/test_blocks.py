"""Every cache-aware building block: chunked output equals offline output for random chunkings.

Each block also has a deliberately broken variant (its cache dropped between chunks) that must fail the
same comparison, so these tests cannot pass by accident.
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.blocks import (
    CausalConv1d,
    ChunkLimitedAttention,
    LogMelConfig,
    LogMelStep,
    StateBank,
    StreamingConvTranspose1d,
    StreamingLogMel,
    StreamingResampler,
    log_mel_offline,
)

TOLERANCE = 1e-5
PARITY = settings(deadline=None)


def split(total: int, sizes: list[int]) -> list[tuple[int, int]]:
    """Cut ``[0, total)`` into consecutive pieces with the given sizes (cycled), the last one shorter."""
    bounds, start, i = [], 0, 0
    while start < total:
        end = min(total, start + sizes[i % len(sizes)])
        bounds.append((start, end))
        start, i = end, i + 1
    return bounds


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def seeded(seed: int) -> None:
    torch.manual_seed(seed)


# ---- causal conv1d -------------------------------------------------------------------------------------


def stream_conv(conv: CausalConv1d, x: torch.Tensor, sizes: list[int], keep_cache: bool = True) -> torch.Tensor:
    fresh = torch.zeros(x.shape[0], conv.in_channels, conv.context)
    cache, outs = fresh, []
    for start, end in split(x.shape[-1], sizes):
        y, cache = conv.stream(x[..., start:end], cache if keep_cache else fresh)
        outs.append(y)
    return torch.cat(outs, dim=-1)


@PARITY
@given(
    kernel=st.integers(1, 9),
    dilation=st.integers(1, 4),
    grouping=st.sampled_from(["dense", "depthwise", "grouped"]),
    length=st.integers(1, 120),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_causal_conv_chunked_equals_offline(kernel, dilation, grouping, length, sizes, seed):
    seeded(seed)
    channels = 8
    groups = {"dense": 1, "depthwise": channels, "grouped": 2}[grouping]
    conv = CausalConv1d(channels, 2 * channels, kernel, dilation=dilation, groups=groups)
    x = torch.randn(2, channels, length)
    with torch.no_grad():
        assert max_diff(stream_conv(conv, x, sizes), conv(x)) <= TOLERANCE


def test_causal_conv_without_its_cache_fails_parity():
    seeded(0)
    conv = CausalConv1d(4, 4, 5, dilation=2)
    x = torch.randn(1, 4, 60)
    with torch.no_grad():
        assert max_diff(stream_conv(conv, x, [7], keep_cache=False), conv(x)) > 1e-2


# ---- chunk-limited attention ---------------------------------------------------------------------------


def stream_attention(att: ChunkLimitedAttention, x: torch.Tensor, chunks_per_step: list[int], keep_cache=True):
    specs = att.state_specs("att")
    fresh = [torch.full((x.shape[0], *s.shape), s.init, dtype=s.dtype) for s in specs]
    k, v, n = fresh
    outs, total = [], x.shape[1]
    sizes = [c * att.chunk_size for c in chunks_per_step]
    for start, end in split(total, sizes):
        lookahead = min(att.lookahead, total - end)
        if not keep_cache:
            k, v, n = fresh
        y, k, v, n = att.stream(x[:, start : end + lookahead], k, v, n, lookahead_frames=lookahead)
        outs.append(y)
    return torch.cat(outs, dim=1)


def random_attention(chunk: int, left: int, lookahead: int, heads: int = 2, d_model: int = 16):
    att = ChunkLimitedAttention(d_model, heads, chunk, left, lookahead=lookahead).eval()
    with torch.no_grad():
        att.pos_bias_u.normal_()
        att.pos_bias_v.normal_()
    return att


@PARITY
@given(
    chunk=st.integers(1, 6),
    left=st.integers(0, 3),
    lookahead=st.integers(0, 4),
    length=st.integers(1, 60),
    chunks_per_step=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_chunk_limited_attention_chunked_equals_offline(chunk, left, lookahead, length, chunks_per_step, seed):
    seeded(seed)
    att = random_attention(chunk, left, lookahead)
    x = torch.randn(2, length, 16)
    with torch.no_grad():
        assert max_diff(stream_attention(att, x, chunks_per_step), att(x)) <= TOLERANCE


def test_attention_mask_is_nemo_chunked_limited():
    att = ChunkLimitedAttention(8, 2, chunk_size=2, left_chunks=1)
    pos = torch.arange(6)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(att.visible(pos, pos), expected)


def test_attention_offline_lengths_mask_padding():
    seeded(1)
    att = random_attention(chunk=3, left=2, lookahead=1)
    x = torch.randn(1, 20, 16)
    padded = torch.cat([x, torch.randn(1, 7, 16)], dim=1)
    with torch.no_grad():
        assert max_diff(att(padded, lengths=torch.tensor([20]))[:, :20], att(x)) <= TOLERANCE


def test_attention_without_its_cache_fails_parity():
    seeded(2)
    att = random_attention(chunk=4, left=2, lookahead=0)
    x = torch.randn(1, 48, 16)
    with torch.no_grad():
        assert max_diff(stream_attention(att, x, [1], keep_cache=False), att(x)) > 1e-2


# ---- transposed-conv upsampling ------------------------------------------------------------------------


def stream_upsample(up: StreamingConvTranspose1d, x: torch.Tensor, sizes: list[int], keep_cache=True):
    fresh = torch.zeros(x.shape[0], up.out_channels, up.overlap)
    tail, outs = fresh, []
    for start, end in split(x.shape[-1], sizes):
        y, tail = up.stream(x[..., start:end], tail if keep_cache else fresh)
        outs.append(y)
    outs.append(up.flush(tail))
    full = torch.cat(outs, dim=-1)
    p = up.output_delay
    return full[..., p : full.shape[-1] - p]


@PARITY
@given(
    stride=st.integers(1, 5),
    extra=st.integers(0, 8),
    pad_fraction=st.floats(0, 1),
    length=st.integers(1, 50),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_transposed_conv_chunked_equals_offline(stride, extra, pad_fraction, length, sizes, seed):
    seeded(seed)
    kernel = stride + extra
    padding = int(pad_fraction * (kernel - 1) // 2)
    up = StreamingConvTranspose1d(6, 3, kernel, stride, padding)
    x = torch.randn(2, 6, length)
    with torch.no_grad():
        assert max_diff(stream_upsample(up, x, sizes), up(x)) <= TOLERANCE


def test_transposed_conv_without_its_cache_fails_parity():
    seeded(3)
    up = StreamingConvTranspose1d(4, 4, 16, 8, 4)  # HiFi-GAN's first upsampling layer
    x = torch.randn(1, 4, 30)
    with torch.no_grad():
        assert max_diff(stream_upsample(up, x, [5], keep_cache=False), up(x)) > 1e-2


def test_transposed_conv_rejects_kernel_shorter_than_stride():
    with pytest.raises(ValueError, match="kernel_size 2 must be >= stride 3"):
        StreamingConvTranspose1d(1, 1, 2, 3)


# ---- state bank (several ODE solver steps per chunk) ---------------------------------------------------


class TinyVelocity(torch.nn.Module):
    """A velocity field with a causal conv and chunk attention, the shape of a flow decoder's network."""

    def __init__(self, dim: int = 8, chunk: int = 3, left: int = 2) -> None:
        super().__init__()
        self.conv = CausalConv1d(dim, dim, 3)
        self.att = random_attention(chunk, left, 0, heads=2, d_model=dim)
        self.chunk = chunk

    def specs(self):
        return (self.conv.state_spec("conv"), *self.att.state_specs("att"))

    def forward(self, x: torch.Tensor, t: float) -> torch.Tensor:
        h = torch.tanh(self.conv(x.transpose(1, 2)).transpose(1, 2) + t)
        return self.att(h)

    def stream(self, x: torch.Tensor, t: float, state):
        c, conv_cache = self.conv.stream(x.transpose(1, 2), state["conv"])
        h = torch.tanh(c.transpose(1, 2) + t)
        y, k, v, n = self.att.stream(h, state["att.k"], state["att.v"], state["att.len"])
        return y, {"conv": conv_cache, "att.k": k, "att.v": v, "att.len": n}


def euler_offline(net: TinyVelocity, noise: torch.Tensor, steps: int) -> torch.Tensor:
    x = noise
    for k in range(steps):
        x = x + net(x, k / steps) / steps
    return x


def euler_streaming(net, noise, steps, chunks_per_step, shared_cache=False):
    bank = StateBank(net.specs(), 1 if shared_cache else steps)
    state = {s.name: torch.full((noise.shape[0], *s.shape), s.init, dtype=s.dtype) for s in bank.specs}
    outs = []
    for start, end in split(noise.shape[1], [c * net.chunk for c in chunks_per_step]):
        x, next_states = noise[:, start:end], []
        for k in range(steps):
            v, inner = net.stream(x, k / steps, bank.select(state, 0 if shared_cache else k))
            x = x + v / steps
            if shared_cache:
                state = bank.stack([inner])
            else:
                next_states.append(inner)
        if not shared_cache:
            state = bank.stack(next_states)
        outs.append(x)
    return torch.cat(outs, dim=1)


@PARITY
@given(
    steps=st.integers(1, 4),
    length=st.integers(1, 40),
    chunks_per_step=st.lists(st.integers(1, 3), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_state_bank_flow_decoder_chunked_equals_offline(steps, length, chunks_per_step, seed):
    seeded(seed)
    net = TinyVelocity().eval()
    noise = torch.randn(2, length, 8)  # fixed noise indexed by absolute frame
    with torch.no_grad():
        assert max_diff(euler_streaming(net, noise, steps, chunks_per_step), euler_offline(net, noise, steps)) <= TOLERANCE


def test_state_bank_shared_across_solver_steps_fails_parity():
    seeded(4)
    net = TinyVelocity().eval()
    noise = torch.randn(1, 36, 8)
    with torch.no_grad():
        broken = euler_streaming(net, noise, 3, [1], shared_cache=True)
        assert max_diff(broken, euler_offline(net, noise, 3)) > 1e-2


def test_state_bank_specs_add_a_solver_axis():
    bank = StateBank(TinyVelocity().specs(), 5)
    assert {s.name: s.shape for s in bank.specs}["att.k"] == (5, 6, 8)
    with pytest.raises(ValueError, match="expected states for 5 solver steps"):
        bank.stack([{}])


# ---- streaming log-mel front end -----------------------------------------------------------------------

MEL_CONFIGS = {
    "nemo-16k": LogMelConfig(),
    "whisper-like": LogMelConfig(
        n_fft=400, win_length=400, hop_length=160, preemphasis=None, periodic_window=True,
        log_guard=1e-10, log_guard_type="clamp",
    ),
    "hifigan-22k": LogMelConfig(
        sample_rate=22050, n_fft=1024, win_length=1024, hop_length=256, f_max=8000.0,
        preemphasis=None, periodic_window=True, power=1.0, log_guard=1e-5, log_guard_type="clamp",
    ),
}


def stream_mel(cfg: LogMelConfig, audio: torch.Tensor, sizes: list[int], keep_cache=True) -> torch.Tensor:
    front = StreamingLogMel(cfg)
    outs = []
    for start, end in split(audio.shape[0], sizes):
        if not keep_cache:
            front.state = front.step.initial_state(1)
        outs.append(front.process(audio[start:end]))
    outs.append(front.flush())
    return torch.cat(outs, dim=1)


def tone_in_noise(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(n, generator=gen)


@PARITY
@given(
    name=st.sampled_from(sorted(MEL_CONFIGS)),
    length=st.integers(1100, 9000),
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_log_mel_chunked_equals_offline(name, length, sizes, seed):
    cfg = MEL_CONFIGS[name]
    audio = tone_in_noise(length, seed)
    offline = log_mel_offline(audio[None], cfg)[0]
    assert offline.shape[1] == 1 + length // cfg.hop_length
    assert max_diff(stream_mel(cfg, audio, sizes), offline) <= TOLERANCE


def test_log_mel_step_batches_streams_independently():
    step = LogMelStep(LogMelConfig())
    a, b = tone_in_noise(3200, 1), tone_in_noise(3200, 2)
    batched, _ = step.step({"audio": torch.stack([a, b])}, step.initial_state(2))
    alone, _ = step.step({"audio": b[None]}, step.initial_state(1))
    assert max_diff(batched["mel"][1], alone["mel"][0]) <= TOLERANCE


def test_log_mel_without_its_cache_fails_parity():
    cfg = LogMelConfig()
    audio = tone_in_noise(8000, 5)
    assert max_diff(stream_mel(cfg, audio, [800], keep_cache=False), log_mel_offline(audio[None], cfg)[0]) > 1e-2


# Values of librosa 0.11 ``filters.mel(..., norm="slaney")``, recorded once (librosa is no dependency):
# (row sums of chosen filters, then (filter, peak bin, peak weight)).
LIBROSA_MEL = {
    (16000, 512): ([0, 10, 40, 79], [0.03117227, 0.03305284, 0.0321163, 0.03193054],
                   [(0, 1, 0.022534560412168503), (10, 13, 0.02441513165831566),
                    (40, 55, 0.014444176107645035), (79, 246, 0.0032521483954042196)]),
    (22050, 1024): ([0, 40, 79], [0.04530278, 0.04654524, 0.04641479],
                    [(0, 2, 0.022651389241218567), (40, 80, 0.014895469881594181),
                     (79, 358, 0.003265992971137166)]),
}


@pytest.mark.parametrize("rate, n_fft", sorted(LIBROSA_MEL))
def test_mel_filterbank_equals_librosa_slaney(rate, n_fft):
    from streaming.blocks.mel import mel_filterbank

    rows, sums, peaks = LIBROSA_MEL[(rate, n_fft)]
    fb = mel_filterbank(LogMelConfig(sample_rate=rate, n_fft=n_fft, f_max=8000.0))
    assert fb.shape == (80, n_fft // 2 + 1)
    np.testing.assert_allclose(fb.sum(axis=1)[rows], sums, atol=1e-7)
    for row, peak_bin, peak in peaks:
        assert int(np.argmax(fb[row])) == peak_bin
        assert abs(float(fb[row].max()) - peak) < 1e-8


# ---- streaming resampler -------------------------------------------------------------------------------


@PARITY
@given(
    rates=st.sampled_from([(48000, 16000), (44100, 16000), (8000, 16000), (16000, 22050), (22050, 16000)]),
    sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_streaming_resampler_equals_one_shot(rates, sizes, seed):
    in_rate, out_rate = rates
    audio = np.random.default_rng(seed).standard_normal(in_rate).astype(np.float32) * 0.1
    resampler = StreamingResampler(in_rate, out_rate)
    chunks = [resampler.process(audio[s:e]) for s, e in split(len(audio), sizes)]
    chunks.append(resampler.process(np.zeros(0, np.float32), last=True))
    want = soxr.resample(audio, in_rate, out_rate, quality="HQ")
    got = np.concatenate(chunks)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOLERANCE


def test_resampler_restarted_per_chunk_fails_parity():
    audio = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    broken = np.concatenate(
        [StreamingResampler(48000, 16000).process(audio[s:e], last=True) for s, e in split(len(audio), [4800])]
    )
    want = soxr.resample(audio, 48000, 16000, quality="HQ")
    n = min(len(broken), len(want))
    assert len(broken) != len(want) or np.abs(broken[:n] - want[:n]).max() > 1e-2


def test_resampler_rejects_stereo_and_bad_rates():
    with pytest.raises(ValueError, match="mono audio"):
        StreamingResampler(48000, 16000).process(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="must be positive"):
        StreamingResampler(0, 16000)
