"""The LTX-2.5 transformer against ltx-core 1.2.0: fixture ``a`` (tests/fixtures/ltx_core_1_2/README.md).

Reference: ltx-core 1.2.0 (Lightricks/LTX-2 tag v1.2.0, not on PyPI), the tiny random LTX-2.5 transformer (video
feed-forwards without bias, ``keyframes_abs_pos_embedding``) in the official single-file layout, one float32 forward
of fixture b's I2V-style inputs (first latent frame conditioned and marked; video sigma 0.909375, audio 0.725), with
and without the keyframes mask. Fixture a is stored as a delta on fixture b (same tensors but the four video FFN
biases; plus the marker and a's metadata), so the test writes a's official file first and loads it through our
loader.

Tolerance (fixture README): ~1e-3 absolute on velocities and x0, 1e-4 on intermediates (float32).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from ltx_backend.models.quantized_linear import dequantize_large_products
from ltx_backend.models.transformer import LTXModel, StreamInput, TransformerConfig
from ltx_backend.pipeline import sampler as s
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.transformer import load_transformer

FIXTURES = Path(__file__).parent / "fixtures" / "ltx_core_1_2"
ATOL, INTERMEDIATE_ATOL = 1e-3, 1e-4
MARKER_MATTERS = 0.1  # the marker moves the video velocity by up to ~1.5 in the fixture


@pytest.fixture(autouse=True)
def cpu_stream() -> Iterator[None]:
    with mx.stream(mx.cpu):
        yield


def write_fixture_a(path: Path) -> Path:
    """Fixture a's official transformer file: b's tensors without the video FFN biases, plus the marker."""
    with safe_open(FIXTURES / "a_transformer_ltx25_delta.safetensors", "np") as delta:
        metadata = delta.metadata()
        tensors = {key: delta.get_tensor(key) for key in delta.keys()}  # noqa: SIM118
    b = load_file(FIXTURES / "b_transformer_ltx23_weights.safetensors")
    tensors.update({key: value for key, value in b.items() if not (".ff.net." in key and key.endswith(".bias"))})
    save_file(tensors, str(path), metadata=metadata)
    return path


@functools.cache
def io() -> dict[str, np.ndarray]:
    return {
        **load_file(FIXTURES / "b_transformer_ltx23_io.safetensors"),  # the inputs (a's equal b's: checked on copy)
        **load_file(FIXTURES / "a_transformer_ltx25_io.safetensors"),
    }


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LTXModel:
    path = write_fixture_a(tmp_path_factory.mktemp("a") / "ltx-2.5-tiny-distilled-transformer.safetensors")
    return load_transformer(open_checkpoint(path), mx.float32)


def stream(model: LTXModel, kind: str, keyframes: bool = True) -> StreamInput:
    r = io()
    return StreamInput(
        latent=mx.array(r[f"{kind}.latent"])[None],
        timesteps=mx.array(r[f"{kind}.timesteps"]).reshape(1, -1),
        sigma=mx.array(r[f"{kind}.sigma"]),
        context=mx.array(r[f"{kind}.context"])[None],
        context_mask=None,
        rope=model.rope(r[f"{kind}.positions"][None], kind),
        keyframes_mask=mx.array(r["video.keyframes_mask"]).reshape(1, -1) if kind == "video" and keyframes else None,
    )


def max_error(ours: mx.array, reference: np.ndarray) -> float:
    return float(np.abs(np.array(ours.astype(mx.float32)).reshape(reference.shape) - reference).max())


def test_the_fixture_is_the_ltx25_config(model: LTXModel) -> None:
    c = model.config
    assert not c.ff_bias and c.audio_ff_bias and c.use_keyframes_abs_pos_embedding and c.use_prompt_adaln_single
    block = model.transformer_blocks[0]
    assert "bias" not in block.ff.proj_in and "bias" in block.audio_ff.proj_in
    assert model.keyframes_abs_pos_embedding.shape == (1, c.video_dim)


def test_velocity_x0_and_marked_input_match_ltx_core_1_2_0(model: LTXModel) -> None:
    r = io()
    video_in, audio_in = stream(model, "video"), stream(model, "audio")
    video, audio = model(video_in, audio_in)
    for kind, out in (("video", video), ("audio", audio)):
        error = max_error(out[0], r[f"out.{kind}_velocity"])
        assert error <= ATOL, f"{kind} velocity: max |ours - ltx-core 1.2.0| = {error:.3g}"
        x0 = mx.array(r[f"{kind}.latent"]) - out[0] * mx.array(r[f"{kind}.timesteps"])
        assert max_error(x0, r[f"out.{kind}_x0"]) <= ATOL, f"{kind} x0"
    state = model._prepare(video_in, audio_in, "")
    assert max_error(state.x[0], r["out.video.x_in"]) <= INTERMEDIATE_ATOL


def test_without_the_keyframes_mask(model: LTXModel) -> None:
    r = io()
    video, _ = model(stream(model, "video", keyframes=False), stream(model, "audio"))
    assert max_error(video[0], r["out.video_velocity_without_keyframes_mask"]) <= ATOL
    assert float(np.abs(r["out.video_velocity"] - r["out.video_velocity_without_keyframes_mask"]).max()) > 0.1
    assert max_error(video[0], r["out.video_velocity"]) > MARKER_MATTERS, "the marker had no effect"


def test_the_sampler_marks_the_first_latent_frame(model: LTXModel) -> None:
    """sampler.video_state marks the first latent frame's H*W tokens (fixture a's mask: 3 x 4 x 6 latent, first
    24 of 72 tokens); appended keyframe tokens are unmarked; x0_forward passes the mask to the model."""
    r = io()
    state = s.video_state(mx.zeros((1, 16, 3, 4, 6)), 24.0)
    np.testing.assert_array_equal(np.array(state.keyframes_mask)[0], r["video.keyframes_mask"][:, 0])
    appended = s.condition_by_keyframe(state, mx.zeros((1, 16, 1, 4, 6)), 8, 1.0, 24.0)
    assert np.array(appended.keyframes_mask)[0].tolist() == r["video.keyframes_mask"][:, 0].tolist() + [0.0] * 24
    # the fixture's state through the sampler's forward: x0 as ltx-core's X0Model
    video = replace(
        state,
        latent=mx.array(r["video.latent"])[None],
        denoise_mask=mx.array(r["video.timesteps"]).reshape(1, -1) / float(r["video.sigma"][0]),
        positions=r["video.positions"][None],
        unconditioned=False,
    )
    audio = replace(s.audio_state(mx.zeros((1, 1, 18, 16))), latent=mx.array(r["audio.latent"])[None],
                    positions=r["audio.positions"][None])  # fmt: skip
    # both streams share one sigma in a sampler step; the fixture's differ, so check the video marker alone
    stage = s.StageInputs.build(model, video, None, mx.array(r["video.context"])[None], None, mx.float32)
    x0, _ = s.x0_forward(stage, video, None, float(r["video.sigma"][0]))
    unmarked = s.x0_forward(stage, replace(video, keyframes_mask=None), None, float(r["video.sigma"][0]))[0]
    assert float(mx.abs(x0 - unmarked).max()) > MARKER_MATTERS
    assert audio.keyframes_mask is None


def _tiny_config(**flags: bool) -> TransformerConfig:
    section = {
        "num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 4, "out_channels": 4, "num_layers": 1,
        "cross_attention_dim": 16, "audio_num_attention_heads": 2, "audio_attention_head_dim": 4,
        "audio_in_channels": 4, "audio_out_channels": 4, "audio_cross_attention_dim": 8, "rope_type": "split",
        "apply_gated_attention": True, "cross_attention_adaln": True, "caption_proj_before_connector": True,
        "av_ca_timestep_scale_multiplier": 1000, **flags,
    }  # fmt: skip
    return TransformerConfig.from_section(section)


def test_without_prompt_adaln_the_kv_modulation_is_the_static_table() -> None:
    """use_prompt_adaln_single=false builds no prompt AdaLN; it equals a model whose prompt AdaLN outputs zeros."""
    mx.random.seed(3)
    with_adaln = LTXModel(_tiny_config())
    without = LTXModel(_tiny_config(use_prompt_adaln_single=False))
    assert "prompt_adaln_single" not in without and "audio_prompt_adaln_single" not in without
    params = {k: v for k, v in tree_flatten(with_adaln.parameters()) if "prompt_adaln_single" not in k}
    params = {k: mx.random.normal(v.shape) * 0.1 for k, v in params.items()}
    without.load_weights(list(params.items()), strict=True)
    zeroed = {k: mx.zeros(v.shape) for k, v in tree_flatten(with_adaln.parameters()) if "prompt_adaln_single" in k}
    with_adaln.load_weights(list({**params, **zeroed}.items()), strict=True)

    def inputs(m: LTXModel) -> tuple[StreamInput, StreamInput]:
        positions = s.video_state(mx.zeros((1, 4, 2, 2, 2)), 24.0).positions
        key = mx.random.key(1)
        v = StreamInput(mx.random.normal((1, 8, 4), key=key), mx.full((1, 1), 0.5), mx.array([0.5]),
                        mx.random.normal((1, 5, 16), key=key), None, m.rope(positions, "video"))  # fmt: skip
        a_positions = s.audio_state(mx.zeros((1, 1, 3, 4))).positions
        a = StreamInput(mx.random.normal((1, 3, 4), key=key), mx.full((1, 1), 0.5), mx.array([0.5]),
                        mx.random.normal((1, 5, 8), key=key), None, m.rope(a_positions, "audio"))  # fmt: skip
        return v, a

    expected = with_adaln(*inputs(with_adaln))
    got = without(*inputs(without))
    for e, g in zip(expected, got, strict=True):
        assert float(mx.abs(e - g).max()) <= 1e-5
    compiled = without(*inputs(without), compiled=without.compiled_blocks())
    assert float(mx.abs(compiled[0] - got[0]).max()) <= 1e-5


def test_bias_free_feed_forward_quantizes_and_compiles(model: LTXModel) -> None:
    """The 2.5 block structure through the quantized and the compiled-block paths (shapes of 64: group 64)."""
    r = io()
    reference, _ = model(stream(model, "video"), stream(model, "audio"))
    compiled, _ = model(stream(model, "video"), stream(model, "audio"), compiled=model.compiled_blocks())
    assert float(mx.abs(compiled - reference).max()) <= 1e-4
    c = model.config
    quantized = LTXModel(c)
    quantized.fuse_projections()
    quantized.load_weights(tree_flatten(model.parameters()), strict=True)
    nn.quantize(quantized, 64, 8, class_predicate=lambda p, m: isinstance(m, nn.Linear) and p.endswith("ff.proj_out"))
    assert "bias" not in quantized.transformer_blocks[0].ff.proj_out
    video, _ = quantized(stream(quantized, "video"), stream(quantized, "audio"))
    assert max_error(video[0], r["out.video_velocity"]) <= 0.05  # 8-bit weights: close, not exact
    # the CUDA path: bias-free quantized layers multiplied through their dequantized weights
    assert dequantize_large_products(quantized, min_rows=1) == 2 * len(quantized.transformer_blocks)
    dequantized, _ = quantized(stream(quantized, "video"), stream(quantized, "audio"))
    assert float(mx.abs(dequantized - video).max()) <= 1e-4


def test_streamed_blocks_match(model: LTXModel, tmp_path: Path) -> None:
    """Block streaming (weights read per forward) of the 2.5 structure, eager and compiled."""
    from ltx_backend.weights.streaming import load_streamed_transformer

    r = io()
    streamed = load_streamed_transformer(open_checkpoint(write_fixture_a(tmp_path / "a.safetensors")), mx.float32)
    for compiled in (None, streamed.compiled_blocks()):
        video, audio = streamed(stream(streamed, "video"), stream(streamed, "audio"), compiled=compiled)
        assert max_error(video[0], r["out.video_velocity"]) <= ATOL
        assert max_error(audio[0], r["out.audio_velocity"]) <= ATOL
