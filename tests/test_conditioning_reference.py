"""IC-LoRA reference conditioning against ltx-core / ltx-pipelines 1.0.0 (``tests/reference/make_lora_refs.py``).

- ``VideoConditionByReferenceLatent`` (downscale 2, strength 0.8) after a first-frame image: tokens, clean latent,
  denoise mask, positions exactly; bare and wrapped in ``ConditioningItemAttentionStrengthWrapper`` with a scalar (0.5)
  and a per-token mask (some zeros), and twice in a row (the masks' block structure): attention masks exactly; the
  transformer's forward on that state with and without the mask: 1e-4 relative (as the transformer parity tests).
- ``ICLoraPipeline._downsample_mask_to_latent``: 1e-6 (float32 means).
- ICLoraPipeline stage 1 (``DISTILLED_STAGE_1``, first-frame image + reference video, the IC-LoRA fused at 0.7) on the
  tiny t20 / t23 models with the recorded noise: denoised outputs per step and final tokens within 1e-4 (float32, as
  the sampler parity tests), the reference tokens (denoise mask 0) exactly clean. The model holds the weights
  ltx-core fused (both LoRAs), so the loop is checked apart from the fusion (test_lora: our fused weights are within
  two bf16 steps of those, and the forward within 0.6%).

The loop fixtures follow the A<->V timestep rule named in ``fixtures/lora/refs.json`` (``loop_rule``); they must be
regenerated (``make_lora_refs.py --rule 1.2``) together with the transformer when it follows ltx-core 1.2.0's rule.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from parity import relative_error

from ltx_backend.models.transformer import StreamInput, self_attention_bias
from ltx_backend.pipeline import sampler as s
from ltx_backend.pipeline.conditioning_reference import (
    condition_by_reference,
    condition_by_reference_with_attention,
    downsample_mask_to_latent,
)
from ltx_backend.pipeline.schedules import DISTILLED_STAGE_1
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.lora import model_targets, our_layer, read_lora
from ltx_backend.weights.transformer import load_transformer

FIXTURES = Path(__file__).parent / "fixtures"
LORAS = FIXTURES / "lora"
ATOL = 1e-4
TARGET = (3, 4, 6)  # latent frames, height, width of the conditioning fixtures
FPS = 24.0
DOWNSCALE, STRENGTH, ATTENTION = 2, 0.8, 0.5


@functools.cache
def refs() -> dict[str, np.ndarray]:
    return dict(np.load(LORAS / "refs.npz"))


@pytest.fixture(autouse=True)
def cpu_stream() -> Iterator[None]:
    with mx.stream(mx.cpu):
        yield


def base_state() -> s.LatentState:
    state = s.video_state(mx.zeros((1, 16, *TARGET)), FPS)
    return s.condition_by_latent_index(state, mx.array(refs()["ic.image_latent"]), 1.0, 0)


def test_metadata_downscale_factor_is_read_from_the_lora() -> None:
    assert read_lora(LORAS / "t23_lora1_ltx.safetensors").reference_downscale_factor == DOWNSCALE


@pytest.mark.parametrize("name", ("bare", "scalar", "mask"))
def test_reference_conditioning_matches_ltx_core(name: str) -> None:
    r = refs()
    attention = {"bare": None, "scalar": ATTENTION, "mask": mx.array(r["ic.token_mask"])}[name]
    reference = mx.array(r["ic.reference_latent"])
    state, mask = condition_by_reference_with_attention(
        base_state(), None, reference, FPS, DOWNSCALE, STRENGTH, attention
    )
    # ltx-core 1.2.0 writes conditioning into the clean latent only (the fixture's 1.0.0 items also wrote it into the
    # noised latent): before noising every token of a fresh state is zero; after it, the two agree (test below).
    assert not np.array(state.latent).any()
    np.testing.assert_array_equal(np.array(state.clean), r[f"ic.{name}.clean_latent"])
    np.testing.assert_array_equal(np.array(state.denoise_mask)[..., None], r[f"ic.{name}.denoise_mask"])
    np.testing.assert_array_equal(state.positions, r[f"ic.{name}.positions"])
    assert state.generated_tokens == 4 * 6 * 3 and not state.unconditioned
    if name == "bare":
        assert mask is None
        plain = condition_by_reference(base_state(), reference, FPS, DOWNSCALE, STRENGTH)
        np.testing.assert_array_equal(plain.positions, state.positions)
    else:
        np.testing.assert_array_equal(np.array(mask), r[f"ic.{name}.attention_mask"])


def test_two_references_do_not_attend_to_each_other() -> None:
    r = refs()
    reference = mx.array(r["ic.reference_latent"])
    state, mask = condition_by_reference_with_attention(
        base_state(), None, reference, FPS, DOWNSCALE, STRENGTH, ATTENTION
    )
    state, mask = condition_by_reference_with_attention(state, mask, reference, FPS, DOWNSCALE, STRENGTH, ATTENTION)
    np.testing.assert_array_equal(np.array(mask), r["ic.twice.attention_mask"])
    np.testing.assert_array_equal(state.positions, r["ic.twice.positions"])


def test_attention_bias_is_log_space() -> None:
    mask = mx.array(refs()["ic.mask.attention_mask"])
    bias = np.array(self_attention_bias(mask, mx.float32))
    m = np.array(mask)[0]
    assert bias.shape == (1, 1, *m.shape)
    np.testing.assert_allclose(bias[0, 0][m > 0], np.log(m[m > 0]), rtol=1e-6)
    assert (bias[0, 0][m <= 0] == np.finfo(np.float32).min).all() and (m <= 0).any()


def test_pixel_mask_downsampling_matches_ic_lora_pipeline() -> None:
    r = refs()
    latent = downsample_mask_to_latent(r["ic.pixel_mask"], 3, 2, 3)
    np.testing.assert_allclose(latent, r["ic.latent_mask"], atol=1e-6)
    with pytest.raises(ValueError, match="must divide"):
        downsample_mask_to_latent(r["ic.pixel_mask"][:, :, :4], 3, 2, 3)


# --- one ICLoraPipeline stage-1 loop -------------------------------------------------------------------------------


def loop_rule() -> str:
    return json.loads((LORAS / "refs.json").read_text())["loop_rule"]


def set_reference_fused_weights(model: nn.Module, version: str) -> None:
    """The weights ltx-core fused (both LoRAs, see test_lora for our fusion), so the loop is checked on its own."""
    modules, targets = dict(model.named_modules()), model_targets(model)
    for layer, weight in mx.load(str(LORAS / f"{version}_fused.safetensors")).items():
        target = targets[our_layer(layer)]
        module = modules[target.module]
        rows = target.rows
        start, stop = (0, module.weight.shape[0]) if rows == slice(None) else (rows.start, rows.stop)
        fused = weight.astype(mx.float32)
        module.weight = mx.concatenate([module.weight[:start], fused, module.weight[stop:]])


@functools.cache
def iclora_run(version: str) -> tuple[list, s.LatentState, s.LatentState]:
    r, text = refs(), np.load(FIXTURES / "transformer" / "refs.npz")
    prefix = f"{version}.iclora_s1"
    ckpt = open_checkpoint(FIXTURES / "transformer" / f"{version}_official")
    model = load_transformer(ckpt, mx.float32)
    set_reference_fused_weights(model, version)
    _, _, frames, height, width = r[f"{prefix}.out.video_latent"].shape
    audio_shape = r[f"{prefix}.out.audio_latent"].shape
    fps = 24.0  # make_sampler_refs.OUTPUT_SHAPE
    video = s.video_state(mx.zeros((1, 16, frames, height, width)), fps)
    video = s.condition_by_latent_index(video, mx.array(r[f"{prefix}.image_latent"]), 1.0, 0)
    video = condition_by_reference(video, mx.array(r[f"{prefix}.reference_latent"]), fps, DOWNSCALE, 1.0)
    audio = s.audio_state(mx.zeros(audio_shape))
    video = s.add_noise(video, mx.array(r[f"{prefix}.noise.video"]))
    audio = s.add_noise(audio, mx.array(r[f"{prefix}.noise.audio"]))
    contexts = (mx.array(text[f"{version}.text.{kind}_context"]) for kind in ("video", "audio"))
    stage = s.StageInputs.build(model, video, audio, *contexts, mx.float32)
    denoise, recorded = s.simple_denoiser(stage), []

    def recording(v, a, sigma):
        out = denoise(v, a, sigma)
        recorded.append(out)
        return out

    video, audio = s.euler_loop(DISTILLED_STAGE_1, video, audio, recording)
    return recorded, video, audio


@pytest.mark.parametrize("version", ("t20", "t23"))
def test_ic_lora_stage_1_loop_matches_pipeline(version: str) -> None:
    r, prefix = refs(), f"{version}.iclora_s1"
    recorded, video, audio = iclora_run(version)
    np.testing.assert_array_equal(video.positions, r[f"{prefix}.state.video_positions"])
    assert len(recorded) == len(DISTILLED_STAGE_1) - 1
    for step, (out_video, out_audio) in enumerate(recorded):
        assert np.abs(np.array(out_video) - r[f"{prefix}.denoised.video"][step]).max() <= ATOL, (loop_rule(), step)
        assert np.abs(np.array(out_audio) - r[f"{prefix}.denoised.audio"][step]).max() <= ATOL, (loop_rule(), step)
    assert np.abs(np.array(video.latent) - r[f"{prefix}.final_tokens.video"]).max() <= ATOL
    assert np.abs(np.array(audio.latent) - r[f"{prefix}.final_tokens.audio"]).max() <= ATOL
    reference_tokens = video.latent[:, video.generated_tokens :]
    np.testing.assert_array_equal(
        np.array(reference_tokens), np.array(s.video_to_tokens(mx.array(r[f"{prefix}.reference_latent"])))
    )


@pytest.mark.parametrize("compiled", (False, True))
def test_forward_on_the_conditioned_state_matches_ltx_core(compiled: bool) -> None:
    """The plain t23 model, video only, on the IC-conditioned state, with and without the per-token attention mask:
    the appended reference tokens (scaled positions, per-token timesteps) and the mask's log-space bias go through the
    transformer as in ltx-core."""
    r, text = refs(), np.load(FIXTURES / "transformer" / "refs.npz")
    model = load_transformer(open_checkpoint(FIXTURES / "transformer" / "t23_official"), mx.float32)
    sigma = float(text["inputs.sigma"][0])
    blocks = model.compiled_blocks() if compiled else None
    for name, mask in (("unmasked", None), ("masked", mx.array(r["ic.mask.attention_mask"]))):
        video = StreamInput(
            latent=mx.array(r["ic.mask.latent"]),
            timesteps=mx.array(r["ic.mask.denoise_mask"][..., 0] * sigma),
            sigma=mx.array([sigma]),
            context=mx.array(text["t23.text.video_context"]),
            context_mask=None,
            rope=model.rope(r["ic.mask.positions"], "video"),
            self_attention_mask=mask,
        )
        out, _ = model(video, None, compiled=blocks)
        assert relative_error(out, r[f"ic.forward_{name}.video"]) <= 1e-4, name
    assert relative_error(mx.array(r["ic.forward_masked.video"]), r["ic.forward_unmasked.video"]) > 1e-2  # it matters
