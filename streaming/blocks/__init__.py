"""Cache-aware building blocks shared by every model; each has an offline form and a streaming form."""

from .attention import ChunkLimitedAttention
from .causal_conv import CausalConv1d
from .mel import LogMelConfig, LogMelStep, StreamingLogMel, log_mel_offline
from .resample import StreamingResampler
from .state_bank import StateBank
from .upsample import StreamingConvTranspose1d

__all__ = [
    "CausalConv1d",
    "ChunkLimitedAttention",
    "LogMelConfig",
    "LogMelStep",
    "StateBank",
    "StreamingConvTranspose1d",
    "StreamingLogMel",
    "StreamingResampler",
    "log_mel_offline",
]
