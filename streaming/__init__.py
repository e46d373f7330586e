"""The streaming runtime: step contract, slot pool, chunk scheduler, backends and cache-aware blocks.

Knows nothing of any particular model or of the network (DESIGN.md section 2).
"""

from .backend import Backend, TorchBackend
from .contract import (
    ChunkGeometry,
    InvalidChunk,
    RowUpdate,
    StateSpec,
    StepFunction,
    StepSignature,
    TensorSpec,
    validate_chunk,
)
from .pool import PoolFull, SlotPool
from .scheduler import ChunkScheduler, Lane, LaneStats, Stage, Stream, StreamClosed, StreamFailed

__all__ = [
    "Backend",
    "ChunkGeometry",
    "ChunkScheduler",
    "InvalidChunk",
    "Lane",
    "LaneStats",
    "PoolFull",
    "RowUpdate",
    "SlotPool",
    "Stage",
    "StateSpec",
    "StepFunction",
    "StepSignature",
    "Stream",
    "StreamClosed",
    "StreamFailed",
    "TensorSpec",
    "TorchBackend",
    "validate_chunk",
]
