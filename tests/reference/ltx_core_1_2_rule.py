"""ltx-core 1.2.0's audio<->video cross-attention AdaLN timestep rule and keyframe RoPE time, patched into 1.0.0 (PyPI).

Since ltx-core 1.1.4 each stream's A<->V cross-attention scale/shift AdaLN takes the stream's *own* per-token
timesteps (``Modality.timesteps`` x ``timestep_scale_multiplier``), while the output gate keeps the *other* stream's
sigma (x ``av_ca_timestep_scale_multiplier``). ltx-core 1.0.0 fed both from the other stream's sigma. ltx-core 1.2.0
is not on PyPI; 1.0.0 with only this rule changed reproduces it (fixture ``b``: tiny LTX-2.3 transformer, outputs of
both versions; ``check_against_fixture()`` proves it), so reference fixtures for our 1.2.0 numerics are generated
with 1.0.0 under this patch.

In 1.2.0 the rule lives in ``MultiModalTransformerArgsPreprocessor._prepare_cross_attention_timestep``; 1.0.0's
version of that function is only given the other stream's sigma, so the patch wraps its one caller,
``MultiModalTransformerArgsPreprocessor.prepare``: the gate is kept as computed, the scale/shift is recomputed from
the stream's own timesteps with the same AdaLN module.

The second change is conditioning: 1.2.0's ``VideoConditionByKeyframeIndex`` gives an unmarked keyframe of a single
pixel frame (new ``num_pixel_frames`` argument, default 1) the RoPE time range ``[idx, idx + 1) / fps``; 1.0.0 gives
its one latent frame the full latent-frame span ``[idx, idx + 8) / fps`` when idx > 0 (at idx 0 the causal fix already
yields ``[0, 1) / fps``). Spatial bounds, multi-frame keyframes and everything else are unchanged. The patch wraps
``VideoConditionByKeyframeIndex.apply_to`` and rewrites the time end of the tokens it appended (no 1.2.0 fixture covers
this; its source is a reading of the 1.2.0 code, and make_sampler_refs.py checks the positions by hand).

Use in a generator script (reference venv, ltx-core / ltx-pipelines 1.0.0), before running any model::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ltx_core_1_2_rule

    ltx_core_1_2_rule.apply()                      # the whole process follows the 1.2.0 rule from here on
    ltx_core_1_2_rule.check_against_fixture()      # patched 1.0.0 == 1.2.0 on fixture b (raises otherwise)

``patched()`` is a context manager for a limited scope (e.g. to also compute 1.0.0 outputs for comparison).
Generators that use it: make_transformer_refs.py, make_sampler_refs.py, make_pipeline_refs.py --rule 1.2 (the keyframe
patch matters to the last two only: make_transformer_refs.py appends no keyframe).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
from ltx_core.conditioning.types.keyframe_cond import VideoConditionByKeyframeIndex
from ltx_core.model.transformer.transformer_args import MultiModalTransformerArgsPreprocessor

FIXTURE_B = Path(__file__).resolve().parents[1] / "fixtures" / "ltx_core_1_2"
# Fixture b allows ~1e-3 (README, float32); patched 1.0.0 reproduces 1.2.0 there bit for bit (measured 0.0).
TOLERANCE = 1e-5

_ORIGINAL_PREPARE = MultiModalTransformerArgsPreprocessor.prepare


def _prepare_with_1_2_rule(self: MultiModalTransformerArgsPreprocessor, modality, cross_modality=None):
    args = _ORIGINAL_PREPARE(self, modality, cross_modality)
    if cross_modality is None:
        return args
    multiplier = self.simple_preprocessor.timestep_scale_multiplier
    scale_shift, _ = self.cross_scale_shift_adaln(
        (modality.timesteps * multiplier).flatten(), hidden_dtype=modality.latent.dtype
    )
    scale_shift = scale_shift.view(args.x.shape[0], -1, scale_shift.shape[-1])
    return replace(args, cross_scale_shift_timestep=scale_shift)  # the gate keeps the other stream's sigma


_ORIGINAL_KEYFRAME_INIT = VideoConditionByKeyframeIndex.__init__
_ORIGINAL_KEYFRAME_APPLY = VideoConditionByKeyframeIndex.apply_to


def _keyframe_init_1_2(self, keyframes, frame_idx: int, strength: float, num_pixel_frames: int = 1) -> None:
    _ORIGINAL_KEYFRAME_INIT(self, keyframes, frame_idx, strength)
    self.num_pixel_frames = num_pixel_frames


def _keyframe_apply_1_2(self, latent_state, latent_tools):
    state = _ORIGINAL_KEYFRAME_APPLY(self, latent_state, latent_tools)
    if getattr(self, "num_pixel_frames", 1) != 1 or self.keyframes.shape[2] != 1:
        return state  # a multi-frame keyframe keeps 1.0.0's positions
    appended = state.positions.shape[2] - latent_state.positions.shape[2]
    positions = state.positions.clone()
    end = torch.full_like(positions[:, 0, -appended:, 1], float(self.frame_idx + 1))
    end /= latent_tools.fps  # the same float32 division 1.0.0 applies to the start
    positions[:, 0, -appended:, 1] = end
    return replace(state, positions=positions)


def apply() -> None:
    MultiModalTransformerArgsPreprocessor.prepare = _prepare_with_1_2_rule
    VideoConditionByKeyframeIndex.__init__ = _keyframe_init_1_2
    VideoConditionByKeyframeIndex.apply_to = _keyframe_apply_1_2


def remove() -> None:
    MultiModalTransformerArgsPreprocessor.prepare = _ORIGINAL_PREPARE
    VideoConditionByKeyframeIndex.__init__ = _ORIGINAL_KEYFRAME_INIT
    VideoConditionByKeyframeIndex.apply_to = _ORIGINAL_KEYFRAME_APPLY


def is_applied() -> bool:
    return (
        MultiModalTransformerArgsPreprocessor.prepare is _prepare_with_1_2_rule
        and VideoConditionByKeyframeIndex.apply_to is _keyframe_apply_1_2
    )


@contextlib.contextmanager
def patched() -> Iterator[None]:
    was = is_applied()
    apply()
    try:
        yield
    finally:
        if not was:
            remove()


@contextlib.contextmanager
def unpatched() -> Iterator[None]:
    was = is_applied()
    remove()
    try:
        yield
    finally:
        if was:
            apply()


@torch.no_grad()
def fixture_b_velocities(directory: Path = FIXTURE_B) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """ltx-core 1.0.0 (as currently patched or not) on fixture b: (our velocities, the fixture's tensors)."""
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.model.transformer.modality import Modality
    from ltx_core.model.transformer.model_configurator import (
        LTXV_MODEL_COMFY_RENAMING_MAP,
        LTXModelConfigurator,
    )
    from safetensors.torch import load_file

    path = directory / "b_transformer_ltx23_weights.safetensors"
    model = SingleGPUModelBuilder(LTXModelConfigurator, str(path), LTXV_MODEL_COMFY_RENAMING_MAP).build(
        device=torch.device("cpu")
    )
    model = model.float().eval()
    io = load_file(directory / "b_transformer_ltx23_io.safetensors")
    io.update(load_file(directory / "b_transformer_ltx23_v100_outputs.safetensors"))

    def modality(kind: str) -> Modality:
        return Modality(
            latent=io[f"{kind}.latent"][None],
            sigma=io[f"{kind}.sigma"].reshape(1),
            timesteps=io[f"{kind}.timesteps"].reshape(1, -1),
            positions=io[f"{kind}.positions"][None],
            context=io[f"{kind}.context"][None],
        )

    video, audio = model(video=modality("video"), audio=modality("audio"), perturbations=None)
    return {"video": video[0], "audio": audio[0]}, io


def check_against_fixture(directory: Path = FIXTURE_B, tolerance: float = TOLERANCE) -> dict[str, float]:
    """Patched ltx-core 1.0.0 reproduces ltx-core 1.2.0 on fixture b, and unpatched reproduces 1.0.0's own outputs
    there (so the patch is what makes the difference). Returns the max abs errors; raises AssertionError."""
    errors = {}
    with patched():
        ours, io = fixture_b_velocities(directory)
    for kind in ("video", "audio"):
        errors[f"patched_vs_1_2_0.{kind}"] = float((ours[kind] - io[f"out.{kind}_velocity"]).abs().max())
    with unpatched():
        ours, _ = fixture_b_velocities(directory)
    for kind in ("video", "audio"):
        errors[f"unpatched_vs_1_0_0.{kind}"] = float(
            (ours[kind] - io[f"out.{kind}_velocity_ltx_core_1_0_0"]).abs().max()
        )
        errors[f"rules_differ_by.{kind}"] = float(
            (io[f"out.{kind}_velocity"] - io[f"out.{kind}_velocity_ltx_core_1_0_0"]).abs().max()
        )
    bad = {k: v for k, v in errors.items() if not k.startswith("rules_") and v > tolerance}
    assert not bad, f"ltx-core 1.0.0 + 1.2.0 rule does not reproduce fixture b: {bad} > {tolerance}"
    return errors


if __name__ == "__main__":
    torch.set_num_threads(1)
    for key, value in check_against_fixture().items():
        print(f"{key:28s} {value:.3g}")
