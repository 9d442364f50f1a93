"""The audio-video transformer, RoPE, positions and the text connectors against ltx-core 1.0.0 + the 1.2.0 rule.

References come from `tests/reference/make_transformer_refs.py`: tiny 2-layer LTX-2.0 and LTX-2.3 models with
widths that are not the real ratios (video 2 x 20, audio 3 x 8), bf16 weights in the files, float32 references
computed from exactly those weights by ltx-core 1.0.0 patched to ltx-core 1.2.0's audio<->video cross-attention
AdaLN timestep rule (`tests/reference/ltx_core_1_2_rule.py`, checked there to reproduce 1.2.0's own fixture `b`;
`test_transformer_parity_ltx_core_1_2.py` tests against that fixture directly). The rule changes every transformer
output here (conditioned tokens; the "xsigma" run's different audio sigma) by up to 0.08 against 1.0.0's.
Errors are max |ours - reference| / max |reference|.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from parity import relative_error

from ltx_backend.models.rope import audio_positions, video_positions
from ltx_backend.models.transformer import StreamInput
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.transformer import load_text_processor, load_transformer

FIXTURES = Path(__file__).parent / "fixtures" / "transformer"
TOLERANCE = 1e-4
GEMMA_HIDDEN, GEMMA_LAYERS = 20, 4  # the stand-in "Gemma" of the fixtures
CHECKPOINTS = [("t20", "t20_official"), ("t20", "t20_unified"), ("t23", "t23_official"), ("t23", "t23_split")]


@pytest.fixture(scope="module")
def refs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / "refs.npz"))


def test_positions_match_ltx_core(refs) -> None:
    _, _, frames, height, width = (int(v) for v in refs["inputs.video_latent_shape"])
    fps = float(refs["inputs.fps"][0])
    np.testing.assert_array_equal(video_positions(frames, height, width, fps), refs["inputs.video_positions"])
    audio_frames = int(refs["inputs.audio_latent_shape"][2])
    np.testing.assert_array_equal(audio_positions(audio_frames), refs["inputs.audio_positions"])


@pytest.mark.parametrize(("version", "name"), CHECKPOINTS)
def test_text_processor_matches_ltx_core(refs, version: str, name: str) -> None:
    processor = load_text_processor(open_checkpoint(FIXTURES / name), mx.float32, GEMMA_HIDDEN, GEMMA_LAYERS)
    assert processor.config.v2 is (version == "t23")
    hidden = mx.array(refs["inputs.gemma_hidden_states"]).transpose(1, 2, 3, 0)  # (B, L, D, layers)
    mask = mx.array(refs["inputs.attention_mask"])
    video_features, _ = processor.feature_extractor(hidden, mask)
    assert relative_error(video_features, refs[f"{version}.text.video_features"]) <= TOLERANCE
    video, audio, context_mask = processor(hidden, mask)
    assert relative_error(video, refs[f"{version}.text.video_context"]) <= TOLERANCE
    assert relative_error(audio, refs[f"{version}.text.audio_context"]) <= TOLERANCE
    np.testing.assert_array_equal(np.array(context_mask), refs[f"{version}.text.context_mask"])


def _inputs(refs: dict, version: str, model, audio_sigma: float | None = None, token_mask: bool = False):
    sigma = mx.array(refs["inputs.sigma"])
    mask = mx.array(refs["inputs.attention_mask"]) if token_mask else mx.array(refs[f"{version}.text.context_mask"])
    video = StreamInput(
        latent=mx.array(refs["inputs.video_latent"]),
        timesteps=mx.array(refs["inputs.video_timesteps"]),
        sigma=sigma,
        context=mx.array(refs[f"{version}.text.video_context"]),
        context_mask=mask,
        rope=model.rope(refs["inputs.video_positions"], "video"),
    )
    audio_timesteps = mx.array(refs["inputs.audio_timesteps"])  # sigma x denoise mask (all ones for audio)
    if audio_sigma is not None:
        audio_timesteps = mx.full(audio_timesteps.shape, audio_sigma)
    audio = StreamInput(
        latent=mx.array(refs["inputs.audio_latent"]),
        timesteps=audio_timesteps,
        sigma=sigma if audio_sigma is None else mx.array([audio_sigma], dtype=mx.float32),
        context=mx.array(refs[f"{version}.text.audio_context"]),
        context_mask=mask,
        rope=model.rope(refs["inputs.audio_positions"], "audio"),
    )
    return video, audio


@pytest.mark.parametrize(("version", "name"), CHECKPOINTS)
def test_rope_tables_match_ltx_core(refs, version: str, name: str) -> None:
    model = load_transformer(open_checkpoint(FIXTURES / name), mx.float32)
    for stream in ("video", "audio"):
        rope = model.rope(refs[f"inputs.{stream}_positions"], stream)

        def ltx_core_layout(table: mx.array, split: bool = rope.self_attention.split) -> mx.array:
            return (
                table.swapaxes(1, 2) if split else table
            )  # split tables: ours (B, T, H, D/2), ltx-core's (B, H, T, D/2)

        assert relative_error(ltx_core_layout(rope.self_attention.cos), refs[f"{version}.rope.{stream}_cos"]) <= 1e-6
        assert relative_error(ltx_core_layout(rope.self_attention.sin), refs[f"{version}.rope.{stream}_sin"]) <= 1e-6
        cross_cos = ltx_core_layout(rope.cross_attention.cos)
        assert relative_error(cross_cos, refs[f"{version}.rope.{stream}_cross_cos"]) <= 1e-6


@pytest.mark.parametrize(("version", "name"), CHECKPOINTS)
def test_transformer_matches_ltx_core(refs, version: str, name: str) -> None:
    model = load_transformer(open_checkpoint(FIXTURES / name), mx.float32)
    assert model.config.cross_attention_adaln is (version == "t23")
    video, audio = _inputs(refs, version, model)
    out_video, out_audio = model(video, audio)
    assert relative_error(out_video, refs[f"{version}.out.video"]) <= TOLERANCE
    assert relative_error(out_audio, refs[f"{version}.out.audio"]) <= TOLERANCE


@pytest.mark.parametrize("version", ["t20", "t23"])
def test_transformer_variants_match_ltx_core(refs, version: str) -> None:
    name = f"{version}_official"
    model = load_transformer(open_checkpoint(FIXTURES / name), mx.float32)
    video, audio = _inputs(refs, version, model, token_mask=True)  # a real padding mask on the text
    out_video, out_audio = model(video, audio)
    assert relative_error(out_video, refs[f"{version}.out_tokmask.video"]) <= TOLERANCE
    assert relative_error(out_audio, refs[f"{version}.out_tokmask.audio"]) <= TOLERANCE

    sigma = float(refs["inputs.xsigma_audio_sigma"][0])
    video, audio = _inputs(refs, version, model, audio_sigma=sigma)  # streams at different noise levels
    out_video, out_audio = model(video, audio)
    assert relative_error(out_video, refs[f"{version}.out_xsigma.video"]) <= TOLERANCE
    assert relative_error(out_audio, refs[f"{version}.out_xsigma.audio"]) <= TOLERANCE

    video, _ = _inputs(refs, version, model)
    out_video, out_audio = model(video, None)  # video only
    assert out_audio is None
    assert relative_error(out_video, refs[f"{version}.out_video_only.video"]) <= TOLERANCE


def test_chunked_evaluation_changes_nothing(refs) -> None:
    model = load_transformer(open_checkpoint(FIXTURES / "t23_split"), mx.float32)
    video, audio = _inputs(refs, "t23", model)
    whole = model(video, audio)
    for chunked in (model(video, audio, eval_every=1), model(video, audio, eval_every=1, in_flight=1)):
        for a, b in zip(whole, chunked, strict=True):
            assert mx.array_equal(a, b)
