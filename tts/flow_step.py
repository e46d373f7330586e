"""The flow decoder as a streaming step: one chunk of frame conditions -> its mel, every ODE step unrolled inside.

Each solver evaluation sees a different signal (x at its own time t), so each keeps its own conv and
attention history: the state is a bank (``streaming.blocks.StateBank``) with one slot per evaluation
(``steps`` for Euler, ``2 * steps`` for midpoint, twice that with classifier-free guidance, whose
conditional and unconditional passes run as one batched call). The starting noise of frame ``f`` is row
``f % NOISE_FRAMES`` of a fixed table, so a stream's noise depends only on absolute frame numbers, and
the offline reference (``synthesize_offline``) draws the same rows: streaming equals offline.

The attention cache is the last ``left_context`` frames' keys and values (fixed capacity); with the frame
counter ``received`` the step knows which cache slots are filled, so memory per stream is constant
however long the stream runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from streaming.blocks.attention import additive_mask
from streaming.blocks.state_bank import StateBank
from streaming.contract import ChunkGeometry, StateSpec, StepFunction, StepSignature, Tensors, TensorSpec

from .acoustic import AcousticModel

NOISE_FRAMES = 4096
NOISE_SEED = 20261122
SOLVERS = ("euler", "midpoint")


def noise_table(n_mels: int) -> Tensor:
    """``[NOISE_FRAMES, n_mels]`` standard normal rows (numpy's PCG64 stream: the same on every machine)."""
    rng = np.random.default_rng(NOISE_SEED)
    return torch.from_numpy(rng.standard_normal((NOISE_FRAMES, n_mels)).astype(np.float32))


@dataclass(frozen=True)
class SolverSettings:
    steps: int = 4
    solver: str = "euler"
    guidance: float = 0.0  # classifier-free guidance weight; 0 runs no unconditional pass
    temperature: float = 0.667
    chunk: int = 16  # frames per step

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 10:
            raise ValueError(f"steps must be 1-10, got {self.steps}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.chunk < 1 or self.guidance < 0 or self.temperature < 0:
            raise ValueError("chunk must be >= 1 frame; guidance and temperature >= 0")

    @property
    def evaluations(self) -> int:
        """Decoder passes per chunk (before guidance doubles them)."""
        return self.steps * (2 if self.solver == "midpoint" else 1)

    def times(self) -> list[float]:
        """The cosine schedule ``t_k = 1 - cos(k / steps * pi / 2)`` (CosyVoice), k = 0..steps."""
        return [1 - math.cos(k / self.steps * math.pi / 2) for k in range(self.steps + 1)]


def integrate(settings: SolverSettings, velocity, x: Tensor) -> Tensor:
    """Solve ``dx/dt = velocity(x, t, evaluation_index)`` from t=0 to 1 on the cosine schedule."""
    times = settings.times()
    evaluation = 0
    for k in range(settings.steps):
        t, dt = times[k], times[k + 1] - times[k]
        if settings.solver == "euler":
            x = x + dt * velocity(x, t, evaluation)
            evaluation += 1
        else:
            half = x + dt / 2 * velocity(x, t, evaluation)
            x = x + dt * velocity(half, t + dt / 2, evaluation + 1)
            evaluation += 2
    return x


def _guided(settings: SolverSettings, both: Tensor) -> Tensor:
    """``(1 + w) v_cond - w v_uncond`` from the batched ``[cond; uncond]`` velocities."""
    cond, uncond = both.chunk(2, dim=0)
    return (1 + settings.guidance) * cond - settings.guidance * uncond


def _with_unconditional(model: AcousticModel, cond: Tensor, speaker: Tensor) -> tuple[Tensor, Tensor]:
    return (torch.cat([cond, torch.zeros_like(cond)]),
            torch.cat([speaker, torch.full_like(speaker, model.decoder.null_speaker)]))


@torch.no_grad()
def synthesize_offline(model: AcousticModel, cond: Tensor, speaker: Tensor, settings: SolverSettings) -> Tensor:
    """The whole frame condition ``cond [B, cond_channels, T]`` at once under the chunk mask of ``settings.chunk``: the parity
    reference of ``FlowStep``. Returns the natural-log mel ``[B, n_mels, T]``."""
    b, _, length = cond.shape
    noise = noise_table(model.cfg.n_mels).to(cond)
    frames = torch.arange(length, device=cond.device) % NOISE_FRAMES
    x = noise[frames].T[None].expand(b, -1, -1) * settings.temperature
    lengths = torch.full((b,), length, device=cond.device)
    guided = settings.guidance > 0
    cond_in, speaker_in = _with_unconditional(model, cond, speaker) if guided else (cond, speaker)

    def velocity(x: Tensor, t: float, _: int) -> Tensor:
        x_in = torch.cat([x, x]) if guided else x
        t_in = torch.full((x_in.shape[0],), t, device=x.device)
        v = model.decoder(x_in, cond_in, t_in, speaker_in, torch.cat([lengths, lengths]) if guided else lengths,
                          settings.chunk)
        return _guided(settings, v) if guided else v

    return model.denormalise(integrate(settings, velocity, x))


def chunk_noise(noise: Tensor, received: Tensor, chunk: int, temperature: float, dtype: torch.dtype) -> Tensor:
    """The starting noise ``[B, n_mels, chunk]`` of each stream's next ``chunk`` frames (rows by absolute frame)."""
    frames = (received[:, None] + torch.arange(chunk, device=received.device)[None]) % NOISE_FRAMES
    return noise[frames].transpose(1, 2).to(dtype) * temperature


def window_visible(received: Tensor, valid: Tensor, left: int, chunk: int) -> Tensor:
    """``[B, chunk, left + chunk]``: what each new frame sees of a window cache of ``left`` frames (filled from
    the right, ``received`` frames so far) and of the chunk's ``valid`` real frames; every frame sees itself,
    so a padded row is never empty (the offline ``chunk_mask``'s rule)."""
    slot = torch.arange(left, device=received.device)
    past_filled = slot[None] >= (left - received)[:, None]  # [B, L]
    new = torch.arange(chunk, device=received.device)
    new_real = new[None] < valid[:, None]  # [B, C]
    keys_visible = torch.cat([past_filled, new_real], dim=1)[:, None, :].expand(-1, chunk, -1)
    diagonal = torch.cat([torch.zeros(chunk, left, dtype=torch.bool, device=received.device),
                          new[:, None] == new[None]], dim=1)  # not eye: ONNX Runtime has no bool EyeLike
    return keys_visible | diagonal


class FlowStep(StepFunction):
    """``cond [cond_channels, C]`` (the frame condition, ``tts.acoustic.frame_condition``), ``valid`` (real frames; fewer than ``C`` ends
    the stream) and ``speaker`` -> ``mel [n_mels, C]`` (natural log, as the vocoder takes it)."""

    name = "tts_flow"

    def __init__(self, model: AcousticModel, settings: SolverSettings) -> None:
        super().__init__()
        self.model, self.settings = model.eval(), settings
        cfg = model.cfg
        self.left = cfg.left_context
        self.slots = settings.evaluations * (2 if settings.guidance > 0 else 1)
        inner = (StateSpec("conv", (cfg.blocks, cfg.dim, cfg.conv_kernel - 1)),
                 StateSpec("keys", (cfg.blocks, cfg.dim, self.left)),
                 StateSpec("values", (cfg.blocks, cfg.dim, self.left)))
        self.bank = StateBank(inner, self.slots)
        self.register_buffer("noise", noise_table(cfg.n_mels), persistent=False)

    @property
    def signature(self) -> StepSignature:
        cfg, c = self.model.cfg, self.settings.chunk
        return StepSignature(
            inputs=(TensorSpec("cond", (cfg.cond_channels, c), time_axis=1), TensorSpec("valid", (), torch.int64),
                    TensorSpec("speaker", (), torch.int64)),
            outputs=(TensorSpec("mel", (cfg.n_mels, c), time_axis=1),),
            states=(*self.bank.specs, StateSpec("received", (), torch.int64)),
            geometry=ChunkGeometry(hop=c, frames_out=1, left_context=self.left),
            extra={"steps": self.settings.steps, "solver": self.settings.solver,
                   "guidance": self.settings.guidance, "temperature": self.settings.temperature,
                   "voices": list(cfg.voices)},
        )

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        cond, valid, speaker = inputs["cond"], inputs["valid"], inputs["speaker"]
        b, _, c = cond.shape
        received = state["received"]
        x = chunk_noise(self.noise, received, c, self.settings.temperature, cond.dtype)
        mask = additive_mask(window_visible(received, valid, self.left, c)[:, None], cond.dtype)
        guided = self.settings.guidance > 0
        if guided:
            cond, speaker = _with_unconditional(self.model, cond, speaker)
            mask = torch.cat([mask, mask])
        per_slot = []

        def velocity(x: Tensor, t: float, evaluation: int) -> Tensor:
            slots = [evaluation, evaluation + self.settings.evaluations] if guided else [evaluation]
            caches = [self.bank.select(state, s) for s in slots]
            conv = torch.cat([cc["conv"] for cc in caches])
            keys, values = torch.cat([cc["keys"] for cc in caches]), torch.cat([cc["values"] for cc in caches])
            x_in = torch.cat([x, x]) if guided else x
            t_in = torch.full((x_in.shape[0],), t, device=x.device, dtype=cond.dtype)
            v, conv_next, k_new, v_new = self.model.decoder.run(x_in, cond, t_in, speaker, conv, keys, values, mask)
            keys_next = torch.cat([keys, k_new], dim=-1)[..., -self.left :]
            values_next = torch.cat([values, v_new], dim=-1)[..., -self.left :]
            for i, s in enumerate(slots):
                part = slice(i * b, (i + 1) * b)
                per_slot.append((s, {"conv": conv_next[part], "keys": keys_next[part], "values": values_next[part]}))
            return _guided(self.settings, v) if guided else v

        x = integrate(self.settings, velocity, x)
        ordered = [states for _, states in sorted(per_slot, key=lambda item: item[0])]
        next_state = {**self.bank.stack(ordered), "received": received + c}
        return {"mel": self.model.denormalise(x)}, next_state

