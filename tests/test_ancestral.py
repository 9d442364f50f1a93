"""Euler-ancestral step and loop against ltx-core / ltx-pipelines 1.2.0 (fixtures e and e2).

MLX cannot reproduce torch's random stream, so the loop runs on the noise ltx-pipelines drew (recorded, in draw order:
per step video, then audio) and on the model outputs it recorded (``X0Model`` of the tiny 2.5 transformer, before
the conditioning blend); everything between them is ours: blend, step, re-blend, for all three steps including the
terminal one. Tolerances (fixture README): 1e-6 for single steps, 1e-5 for the step arithmetic in the loop.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from ltx_backend.pipeline.ancestral import (
    ANCESTRAL_NOISE_SEED_OFFSET,
    EulerAncestralStep,
    SeededNoise,
    euler_ancestral_loop,
)
from ltx_backend.pipeline.sampler import LatentState

FIXTURES = Path(__file__).parent / "fixtures" / "ltx25"


@pytest.fixture(scope="module")
def refs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "refs.npz"))


def _close(ours: mx.array, theirs: np.ndarray, tolerance: float, what: str) -> None:
    error = float(np.abs(np.array(ours.astype(mx.float32)).reshape(theirs.shape) - theirs).max())
    assert error <= tolerance, f"{what}: {error}"


def test_single_steps_match_ltx_core(refs) -> None:
    sample, denoised, noise = (mx.array(refs[f"e2.{name}"]) for name in ("sample", "denoised", "noise"))
    for index, (sigma, sigma_next, eta) in enumerate(refs["e2.cases"]):
        out = EulerAncestralStep(eta=float(eta))(sample, denoised, noise, float(sigma), float(sigma_next))
        _close(out, refs[f"e2.case{index}.out"], 1e-6, f"case {index} {sigma, sigma_next, eta}")


def test_step_coefficients_match_ltx_core(refs) -> None:
    sigmas = refs["e.sigmas"]
    for index, row in enumerate(refs["e.step_coefficients"]):
        c = EulerAncestralStep().coefficients(float(sigmas[index]), float(sigmas[index + 1]))
        if row[1] == 0:  # terminal step: ltx-core returns x0 and records zeros
            continue
        np.testing.assert_allclose([c.sigma_down, c.keep, c.rescale, c.renoise], row[2:], rtol=1e-6)


def _state(latent: np.ndarray, mask: np.ndarray, clean: np.ndarray) -> LatentState:
    tokens = mx.array(latent[None])
    return LatentState(
        tokens, mx.array(mask[None]), mx.array(clean[None]), np.zeros((1, 1, len(latent), 2)), len(latent)
    )


def test_loop_with_recorded_noise_and_model_outputs_matches_ltx_pipelines(refs) -> None:
    e = {key[2:]: value for key, value in refs.items() if key.startswith("e.")}
    video_mask = e["video.denoise_mask"][:, 0]
    assert 0 < video_mask.sum() < len(video_mask)  # frame 0 conditioned: the blend matters
    video = _state(e["init.video_latent"], video_mask, e["video.clean_latent"])
    audio_tokens = e["init.audio_latent"]
    audio = _state(audio_tokens, np.ones(len(audio_tokens), np.float32), np.zeros_like(audio_tokens))
    calls: list[int] = []
    draws = iter(e[f"step{i}.{kind}_noise"] for i in range(2) for kind in ("video", "audio"))
    step_outputs: list[mx.array] = []

    class RecordingStep(EulerAncestralStep):
        def __call__(self, *args):
            out = super().__call__(*args)
            step_outputs.append(out)
            return out

    def denoise(v: LatentState, a: LatentState | None, sigma: float):
        i = len(calls)
        calls.append(i)
        assert sigma == pytest.approx(float(e["sigmas"][i]))
        _close(v.latent, e[f"step{i}.video_in"], 1e-5, f"step {i} video input")
        _close(a.latent, e[f"step{i}.audio_in"], 1e-5, f"step {i} audio input")
        return mx.array(e[f"step{i}.video_x0_raw"][None]), mx.array(e[f"step{i}.audio_x0_raw"][None])

    def noise(shape: tuple[int, ...], dtype: mx.Dtype) -> mx.array:
        drawn = next(draws)
        assert shape == (1, *drawn.shape) and dtype == mx.float32
        return mx.array(drawn[None])

    video, audio = euler_ancestral_loop(e["sigmas"], video, audio, denoise, noise, RecordingStep())
    assert calls == [0, 1, 2] and next(draws, None) is None  # three model calls, four draws, none on the last step
    for i in range(2):
        _close(step_outputs[2 * i], e[f"step{i}.video_step_out_before_mask"], 1e-5, f"step {i} video step")
        _close(step_outputs[2 * i + 1], e[f"step{i}.audio_step_out_before_mask"], 1e-5, f"step {i} audio step")
    _close(video.latent, e["final.video_latent"], 1e-5, "final video")
    _close(audio.latent, e["final.audio_latent"], 1e-5, "final audio")


def test_seeded_noise_is_offset_and_reproducible() -> None:
    first, again = SeededNoise(42), SeededNoise(42)
    a, b = first((2, 3), mx.float32), first((2, 3), mx.float32)
    assert mx.array_equal(a, again((2, 3), mx.float32)) and not mx.array_equal(a, b)
    plain = mx.random.normal((2, 3), key=mx.random.split(mx.random.key(42 + ANCESTRAL_NOISE_SEED_OFFSET))[1])
    assert mx.array_equal(a, plain)
    assert first((1, 4, 8), mx.bfloat16).dtype == mx.bfloat16
