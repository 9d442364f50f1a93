"""The LTX-2.3 transformer against ltx-core 1.2.0 itself: fixture ``b`` (tests/fixtures/ltx_core_1_2/README.md).

Reference: ltx-core 1.2.0 (Lightricks/LTX-2 tag v1.2.0, not on PyPI), tiny random LTX-2.3 transformer in its official
single-file layout, one float32 forward of an I2V-style state: the first latent frame conditioned (timestep 0), video
sigma 0.909375, audio sigma 0.725. Beside it, ltx-core 1.0.0's output on the same weights and inputs. The two differ
only by the audio<->video cross-attention AdaLN timestep rule (ltx25-facts 1.6): since ltx-core 1.1.4 the scale/shift
takes the stream's own per-token timesteps and the gate the other stream's sigma. We follow 1.2.0.

Tolerance: the fixture's README gives ~1e-3 absolute on velocities and x0 (float32 vs float32), 1e-4 on
intermediates. Measured: 1.6e-5 (video) / 1.0e-5 (audio) on velocities. ltx-core 1.0.0's outputs are 0.76 / 0.35 away.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import load_file

from ltx_backend.models.transformer import LTXModel, StreamInput
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.transformer import load_transformer

FIXTURES = Path(__file__).parent / "fixtures" / "ltx_core_1_2"
ATOL = 1e-3  # velocities and x0
INTERMEDIATE_ATOL = 1e-4
RULE_MATTERS = 0.1  # 1.0.0's outputs must be at least this far from 1.2.0's (they are 0.76 / 0.35)
STREAMS = ("video", "audio")


@pytest.fixture(autouse=True)
def cpu_stream() -> Iterator[None]:
    with mx.stream(mx.cpu):
        yield


@functools.cache
def io() -> dict[str, np.ndarray]:
    return {
        **load_file(FIXTURES / "b_transformer_ltx23_io.safetensors"),
        **load_file(FIXTURES / "b_transformer_ltx23_v100_outputs.safetensors"),
    }


@functools.cache
def model() -> LTXModel:
    return load_transformer(open_checkpoint(FIXTURES / "b_transformer_ltx23_weights.safetensors"), mx.float32)


def stream(kind: str, per_token: bool = True) -> StreamInput:
    r, m = io(), model()
    timesteps = mx.array(r[f"{kind}.timesteps"]).reshape(1, -1)
    if not per_token:  # the sampler's one broadcast row for a stream whose tokens all share a timestep
        assert np.all(r[f"{kind}.timesteps"] == r[f"{kind}.sigma"][0]), f"{kind}: tokens differ"
        timesteps = timesteps[:, :1]
    return StreamInput(
        latent=mx.array(r[f"{kind}.latent"])[None],
        timesteps=timesteps,
        sigma=mx.array(r[f"{kind}.sigma"]),
        context=mx.array(r[f"{kind}.context"])[None],
        context_mask=None,
        rope=m.rope(r[f"{kind}.positions"][None], kind),
    )


def max_error(ours: mx.array, reference: np.ndarray) -> float:
    ours_np = np.array(ours.astype(mx.float32)).reshape(reference.shape)
    return float(np.abs(ours_np - reference).max())


@functools.cache
def velocities() -> dict[str, mx.array]:
    video, audio = model()(stream("video"), stream("audio"))
    return {"video": video[0], "audio": audio[0]}


def test_the_fixture_is_the_ltx23_config() -> None:
    c = model().config
    assert c.cross_attention_adaln and c.apply_gated_attention and c.caption_channels is None
    assert (c.timestep_scale_multiplier, c.av_ca_timestep_scale_multiplier) == (1000, 1000)
    r = io()
    assert r["video.timesteps"].min() == 0 and r["video.sigma"][0] != r["audio.sigma"][0], "rules would agree"


@pytest.mark.parametrize("kind", STREAMS)
def test_velocity_and_x0_match_ltx_core_1_2_0(kind: str) -> None:
    r, v = io(), velocities()[kind]
    error = max_error(v, r[f"out.{kind}_velocity"])
    assert error <= ATOL, f"{kind} velocity: max |ours - ltx-core 1.2.0| = {error:.3g} > {ATOL:g}"
    x0 = mx.array(r[f"{kind}.latent"]) - v * mx.array(r[f"{kind}.timesteps"])  # X0Model, per token
    error = max_error(x0, r[f"out.{kind}_x0"])
    assert error <= ATOL, f"{kind} x0: max |ours - ltx-core 1.2.0| = {error:.3g} > {ATOL:g}"


@pytest.mark.parametrize("kind", STREAMS)
def test_ltx_core_1_0_0_differs_so_the_rule_matters(kind: str) -> None:
    """1.0.0 (the other stream's sigma for scale/shift too) is far from 1.2.0 and from us, on the same inputs."""
    r, v = io(), velocities()[kind]
    old = r[f"out.{kind}_velocity_ltx_core_1_0_0"]
    assert float(np.abs(r[f"out.{kind}_velocity"] - old).max()) >= RULE_MATTERS
    assert max_error(v, old) >= RULE_MATTERS, f"{kind}: our output is 1.0.0's"
    # and 1.0.0 is exactly 1.2.0 with the pre-1.1.4 rule patched back in (the one difference)
    np.testing.assert_array_equal(old, r[f"out.{kind}_velocity_pre_1_1_4_rule"])


@pytest.mark.parametrize("kind", STREAMS)
def test_cross_attention_adaln_values_match(kind: str) -> None:
    """Scale/shift per token from the stream's own timesteps; the gate per sample from the other stream's sigma."""
    r, m = io(), model()
    own, other = (stream("video"), stream("audio")) if kind == "video" else (stream("audio"), stream("video"))
    state = m._prepare(own, other, "" if kind == "video" else "audio_")
    error = max_error(state.cross_scale_shift, r[f"out.{kind}.cross_scale_shift_timestep"])
    assert error <= INTERMEDIATE_ATOL, f"{kind} A<->V scale/shift: {error:.3g}"
    error = max_error(state.cross_gate, r[f"out.{kind}.cross_gate_timestep"])
    assert error <= INTERMEDIATE_ATOL, f"{kind} A<->V gate: {error:.3g}"


def test_one_broadcast_timestep_row_equals_per_token_rows() -> None:
    """The sampler feeds a stream whose tokens share one timestep as a single row (`sampler._stream`); under the
    1.2.0 rule that row also drives the stream's A<->V scale/shift. The audio stream here is such a stream."""
    video, audio = model()(stream("video"), stream("audio", per_token=False))
    assert max_error(video[0], np.array(velocities()["video"])) <= 1e-6
    assert max_error(audio[0], np.array(velocities()["audio"])) <= 1e-6
