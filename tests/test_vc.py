"""The VC decoder: streaming equals offline; the reference is a persistent sink; memory is bounded."""

from __future__ import annotations

import pytest
import torch

from streaming.inline import advance
from tts.flow_step import SolverSettings
from vc.flow_step import VCStep, convert_offline
from vc.model import VCConfig, VCModel

SMALL = VCConfig(content_dim=24, dim=32, cond_dim=16, blocks=2, heads=2, ffn=64, left_context=12, ref_dim=24,
                 ref_layers=2, prompt_tokens=20)


def _model(seed: int = 0) -> VCModel:
    torch.manual_seed(seed)
    model = VCModel(SMALL).double().eval()
    with torch.no_grad():  # AdaLN starts at zero; give it weight so the voice vector matters in the test
        for block in model.decoder.blocks:
            block.modulation.weight.normal_(0, 0.2)
    return model


def _voice(model: VCModel, frames: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    reference = torch.randn(1, SMALL.n_mels, frames, generator=g, dtype=torch.float64) - 5
    return model.voice(reference, torch.tensor([frames]))


def _stream(model: VCModel, content: torch.Tensor, voice: dict, settings: SolverSettings) -> torch.Tensor:
    step = VCStep(model, settings).double()
    state = {k: v.double() if v.is_floating_point() else v for k, v in step.initial_state(1).items()}
    state.update(step.voice_state(voice))
    c, outs = settings.chunk, []
    for start in range(0, content.shape[-1], c):
        piece = content[..., start : start + c]
        valid = piece.shape[-1]
        piece = torch.nn.functional.pad(piece, (0, c - valid))
        out, nxt = step.step({"content": piece, "valid": torch.tensor([valid])}, state)
        advance(state, nxt)
        outs.append(out["mel"][..., :valid])
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize(("chunk", "steps", "solver"), [(6, 2, "euler"), (1, 1, "euler"), (5, 2, "midpoint")])
def test_vc_stream_equals_offline(chunk, steps, solver):
    model = _model()
    content = torch.randn(1, SMALL.content_dim, 47, dtype=torch.float64)
    voice = _voice(model, 57, seed=1)
    settings = SolverSettings(steps=steps, solver=solver, chunk=chunk)
    with torch.no_grad():
        offline = convert_offline(model, content, voice, settings)
        streamed = _stream(model, content, voice, settings)
    assert streamed.shape == offline.shape == (1, SMALL.n_mels, 47)
    assert (streamed - offline).abs().max() < 1e-4


def test_the_reference_steers_every_frame_and_padding_does_not():
    model = _model()
    content = torch.randn(1, SMALL.content_dim, 40, dtype=torch.float64)
    settings = SolverSettings(steps=2, chunk=6)
    with torch.no_grad():
        a = convert_offline(model, content, _voice(model, 57, seed=1), settings)
        b = convert_offline(model, content, _voice(model, 57, seed=2), settings)
        # the same reference, padded to a longer batch with its length given: the same voice
        g = torch.Generator().manual_seed(1)
        reference = torch.randn(1, SMALL.n_mels, 57, generator=g, dtype=torch.float64) - 5
        padded = model.voice(torch.nn.functional.pad(reference, (0, 20)), torch.tensor([57]))
        c = convert_offline(model, content, padded, settings)
    assert (a - b).abs()[..., -1].max() > 1e-3  # the last frame, 40 frames past any window, still hears it
    assert (a - c).abs().max() < 1e-9


def test_state_is_fixed_size_and_long_references_are_refused():
    model = _model()
    step = VCStep(model, SolverSettings(steps=2, chunk=6))
    sizes = {s.name: s.shape for s in step.signature.states}
    assert sizes["keys"] == (2, SMALL.blocks, SMALL.dim, SMALL.left_context)
    assert sizes["sink_keys"] == (SMALL.blocks, SMALL.dim, SMALL.prompt_tokens)
    with pytest.raises(ValueError, match="at most 80 mel frames"):
        model.voice(torch.zeros(1, SMALL.n_mels, 81, dtype=torch.float64), torch.tensor([81]))
    with pytest.raises(ValueError, match="guidance must be 0"):
        VCStep(model, SolverSettings(guidance=1.0))
