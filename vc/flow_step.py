"""The VC decoder as a streaming step: a chunk of content at mel rate -> its mel in the target voice.

As the TTS flow step (``tts.flow_step``): the ODE is unrolled inside the step, each solver evaluation keeps
its own conv and window caches (a ``StateBank``), and the noise of frame ``f`` is row ``f % NOISE_FRAMES`` of
the fixed table, so streaming equals :func:`convert_offline`. Besides the bank, the state holds the target
voice: every block's prompt keys and values (the persistent sink), their count and the global voice vector.
They are written once when a session opens (:meth:`VCStep.voice_state`) and passed through unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from streaming.blocks.attention import additive_mask
from streaming.blocks.state_bank import StateBank
from streaming.contract import ChunkGeometry, StateSpec, StepFunction, StepSignature, Tensors, TensorSpec
from tts.flow_step import NOISE_FRAMES, SolverSettings, chunk_noise, integrate, noise_table, window_visible

from .model import VCModel, prompt_visible

VOICE_STATES = ("sink_keys", "sink_values", "prompt_count", "voice")


def _unguided(settings: SolverSettings) -> SolverSettings:
    if settings.guidance > 0:
        raise ValueError("the VC decoder has no unconditional branch: guidance must be 0")
    return settings


@torch.no_grad()
def convert_offline(model: VCModel, content: Tensor, voice: Tensors, settings: SolverSettings) -> Tensor:
    """Content at mel rate ``[B, content_dim, T]`` and a voice (``VCModel.voice``) -> natural-log mel ``[B,
    n_mels, T]``, the whole sequence at once under the chunk mask of ``settings.chunk``."""
    _unguided(settings)
    b, _, length = content.shape
    noise = noise_table(model.cfg.n_mels).to(content)
    frames = torch.arange(length, device=content.device) % NOISE_FRAMES
    x = noise[frames].T[None].expand(b, -1, -1) * settings.temperature
    lengths = torch.full((b,), length, device=content.device)

    def velocity(x: Tensor, t: float, _: int) -> Tensor:
        t_in = torch.full((b,), t, device=x.device, dtype=x.dtype)
        return model.decoder(x, content, t_in, voice["voice"], voice["sink_keys"], voice["sink_values"],
                             voice["prompt_count"], lengths, settings.chunk)

    return model.denormalise(integrate(settings, velocity, x))


class VoiceStep(StepFunction):
    """The reference encoder as a step without state (exported beside the streaming steps, so that a runtime
    without torch can make voices): ``reference [n_mels, max_reference_frames]``, natural-log mel (HiFi-GAN's)
    zero-padded past ``frames`` -> the VC step's voice states (:data:`VOICE_STATES`) for one session."""

    name = "vc_voice"

    def __init__(self, model: VCModel) -> None:
        super().__init__()
        self.model = model.eval()

    @property
    def signature(self) -> StepSignature:
        cfg = self.model.cfg
        return StepSignature(
            inputs=(TensorSpec("reference", (cfg.n_mels, cfg.max_reference_frames)),
                    TensorSpec("frames", (), torch.int64)),
            outputs=(TensorSpec("sink_keys", (cfg.blocks, cfg.dim, cfg.prompt_tokens)),
                     TensorSpec("sink_values", (cfg.blocks, cfg.dim, cfg.prompt_tokens)),
                     TensorSpec("prompt_count", (), torch.int64), TensorSpec("voice", (cfg.cond_dim,))),
            states=(),
            geometry=ChunkGeometry(hop=cfg.max_reference_frames, frames_out=1),
            extra={"reference_frames": cfg.max_reference_frames},
        )

    @staticmethod
    def padded(mel: Tensor, frames: int) -> Tensor:
        """A reference mel ``[n_mels, R]`` (R <= ``frames``) as the step's input."""
        return torch.nn.functional.pad(mel, (0, frames - mel.shape[-1]))

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        return self.model.voice(inputs["reference"], inputs["frames"]), {}


class VCStep(StepFunction):
    """``content [content_dim, C]`` (at mel rate) and ``valid`` (real frames; fewer than ``C`` ends the stream)
    -> ``mel [n_mels, C]`` (natural log, as the vocoder takes it)."""

    name = "vc_decoder"

    def __init__(self, model: VCModel, settings: SolverSettings) -> None:
        super().__init__()
        self.model, self.settings = model.eval(), _unguided(settings)
        cfg = model.cfg
        self.left = cfg.left_context
        inner = (StateSpec("conv", (cfg.blocks, cfg.dim, cfg.conv_kernel - 1)),
                 StateSpec("keys", (cfg.blocks, cfg.dim, self.left)),
                 StateSpec("values", (cfg.blocks, cfg.dim, self.left)))
        self.bank = StateBank(inner, settings.evaluations)
        self.register_buffer("noise", noise_table(cfg.n_mels), persistent=False)

    @property
    def signature(self) -> StepSignature:
        cfg, c = self.model.cfg, self.settings.chunk
        return StepSignature(
            inputs=(TensorSpec("content", (cfg.content_dim, c), time_axis=1), TensorSpec("valid", (), torch.int64)),
            outputs=(TensorSpec("mel", (cfg.n_mels, c), time_axis=1),),
            states=(*self.bank.specs,
                    StateSpec("sink_keys", (cfg.blocks, cfg.dim, cfg.prompt_tokens)),
                    StateSpec("sink_values", (cfg.blocks, cfg.dim, cfg.prompt_tokens)),
                    StateSpec("prompt_count", (), torch.int64),
                    StateSpec("voice", (cfg.cond_dim,)),
                    StateSpec("received", (), torch.int64)),
            geometry=ChunkGeometry(hop=c, frames_out=1, left_context=self.left),
            extra={"steps": self.settings.steps, "solver": self.settings.solver,
                   "temperature": self.settings.temperature, "prompt_tokens": cfg.prompt_tokens},
        )

    @staticmethod
    def voice_state(voice: Tensors) -> Tensors:
        """The states a session's voice fills in (``VCModel.voice``'s output, one row per stream)."""
        return {name: voice[name] for name in VOICE_STATES}

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        content, valid = inputs["content"], inputs["valid"]
        b, _, c = content.shape
        received = state["received"]
        x = chunk_noise(self.noise, received, c, self.settings.temperature, content.dtype)
        sink = prompt_visible(state["prompt_count"], self.model.cfg.prompt_tokens)[:, None, :].expand(-1, c, -1)
        mask = additive_mask(torch.cat([sink, window_visible(received, valid, self.left, c)], -1)[:, None],
                             content.dtype)
        sink_keys, sink_values = state["sink_keys"].to(content.dtype), state["sink_values"].to(content.dtype)
        voice = state["voice"].to(content.dtype)
        per_step: list[Tensors] = []

        def velocity(x: Tensor, t: float, evaluation: int) -> Tensor:
            cache = self.bank.select(state, evaluation)
            keys = torch.cat([sink_keys, cache["keys"]], dim=-1)
            values = torch.cat([sink_values, cache["values"]], dim=-1)
            t_in = torch.full((b,), t, device=x.device, dtype=content.dtype)
            v, conv_next, k_new, v_new = self.model.decoder.run(x, content, t_in, voice, cache["conv"], keys,
                                                                values, mask)
            per_step.append({"conv": conv_next,
                             "keys": torch.cat([cache["keys"], k_new], dim=-1)[..., -self.left :],
                             "values": torch.cat([cache["values"], v_new], dim=-1)[..., -self.left :]})
            return v

        x = integrate(self.settings, velocity, x)
        passed = {name: state[name] for name in VOICE_STATES}
        return {"mel": self.model.denormalise(x)}, {**self.bank.stack(per_step), **passed, "received": received + c}
