"""LoRAs and IC-LoRAs through the loaders, the engine and the front ends, on the built-in tiny model.

The fusion arithmetic itself is checked against ltx-core in test_lora.py, the reference conditioning against
ltx-pipelines in test_conditioning_reference.py; here: streamed == resident with the same LoRAs (same bytes), whole
jobs that write MP4s, refusals before any compute, and what ``inspect`` shows.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner
from lora_files import write_lora
from media_probe import probe

from ltx_backend import events
from ltx_backend.cli.main import cli
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.video import ffmpeg_exe
from ltx_backend.models.transformer import LTXModel, StreamInput
from ltx_backend.pipeline import sampler as s
from ltx_backend.pipeline.engine import Engine
from ltx_backend.pipeline.request import ControlVideo, GenerationRequest
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.lora import LoraSpec
from ltx_backend.weights.streaming import load_streamed_transformer
from ltx_backend.weights.transformer import load_transformer


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"2.0": write_tiny_model(root / "tiny", "2.0"), "2.3": write_tiny_model(root / "tiny-2.3", "2.3")}


@pytest.fixture(scope="module")
def loras(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    made = {}
    for version, model in models.items():
        made[version] = write_lora(root / f"style-{version}.safetensors", model, seed=1)
        made[f"{version}-ic"] = write_lora(root / f"ic-{version}.safetensors", model, rank=3, seed=2, every=2,
                                           metadata={"reference_downscale_factor": "2"})  # fmt: skip
    return made


def _inputs(model: LTXModel) -> tuple[StreamInput, StreamInput]:
    c = model.config
    key = iter(mx.random.split(mx.random.key(7), 4))
    sigma = mx.array([0.7])
    video_context = c.caption_channels or c.video_dim
    audio_context = c.caption_channels or c.audio_dim
    video = StreamInput(
        mx.random.normal((1, 12, c.in_channels), key=next(key)), mx.full((1, 12), 0.7), sigma,
        mx.random.normal((1, 16, video_context), key=next(key)), None,
        model.rope(s.video_positions(2, 2, 3, 24.0), "video"),
    )  # fmt: skip
    audio = StreamInput(
        mx.random.normal((1, 5, c.audio_in_channels), key=next(key)), mx.full((1, 5), 0.7), sigma,
        mx.random.normal((1, 16, audio_context), key=next(key)), None, model.rope(s.audio_positions(5), "audio"),
    )  # fmt: skip
    return video, audio


def _bytes(outputs: tuple) -> list[bytes]:
    return [np.array(x).tobytes() for x in outputs]


@pytest.mark.parametrize("version", ["2.0", "2.3"], ids=["2.0 float", "2.3 q4"])
def test_streamed_loras_compute_the_resident_bytes(models, loras, version: str) -> None:
    """Block streaming fuses each block's deltas as it is read (block_transform): the same weights, bit for bit,
    as fusing into the resident model, for float and pre-quantized (requantized) layers, two LoRAs summed."""
    ckpt = open_checkpoint(models[version])
    specs = [LoraSpec(loras[version], 0.7), LoraSpec(loras[f"{version}-ic"], -0.3)]
    resident = load_transformer(ckpt, mx.float32, loras=specs)
    streamed = load_streamed_transformer(ckpt, mx.float32, loras=specs)
    plain = load_transformer(ckpt, mx.float32)
    video, audio = _inputs(resident)
    expected = _bytes(resident(video, audio))
    assert _bytes(streamed(video, audio)) == expected
    assert _bytes(streamed(video, audio)) == expected  # every forward reads (and fuses) the blocks again
    assert _bytes(plain(video, audio)) != expected  # the LoRAs change the output


# --- whole jobs ---------------------------------------------------------------------------------------------------

SMALL = {"width": 128, "height": 128, "num_frames": 9, "fps": 24.0}  # stage 1 at 64x64: a factor-2 reference is 32


def _clip(path: Path, width: int, height: int, frames: int, seed: int, gray: bool = False) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    if gray:
        pixels[..., 1] = pixels[..., 2] = pixels[..., 0]
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
         "-r", "24", "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        input=pixels.tobytes(), check=True, capture_output=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("control")
    return {"video": _clip(root / "depth.mp4", 96, 80, 12, 5), "mask": _clip(root / "mask.mp4", 96, 80, 12, 6, True)}


def _job(model: Path, tmp_path: Path, name: str, loras=(), memory: str = "auto", **fields):
    engine = Engine(model, loras=loras)
    seen: list[events.Event] = []
    request = GenerationRequest("a fox", str(tmp_path / f"{name}.mp4"), seed=3, memory=memory, **SMALL, **fields)
    result = engine.generate(request, emit=seen.append)
    return result, seen, (tmp_path / f"{name}.mp4").read_bytes()


def _record_stage_states(monkeypatch) -> list:
    """The video state each stage's sampler loop starts from, in order."""
    states = []
    real_loop = s.euler_loop

    def loop(sigmas, video, audio, denoise, on_step=lambda *_: None):
        states.append(video)
        return real_loop(sigmas, video, audio, denoise, on_step)

    monkeypatch.setattr(s, "euler_loop", loop)
    return states


def test_lora_job_writes_a_valid_mp4_and_changes_the_video(models, loras, tmp_path: Path) -> None:
    _, _, plain = _job(models["2.3"], tmp_path, "plain")
    result, seen, styled = _job(models["2.3"], tmp_path, "lora", [LoraSpec(loras["2.3"], 0.8)])
    info = probe(result.video_path)
    assert (info.width, info.height, info.frames) == (128, 128, 9) and info.audio_codec is not None
    assert styled != plain  # same seed, the LoRA changed the weights
    phases = [e.detail for e in seen if isinstance(e, events.PhaseStarted) and e.phase is events.Phase.LOAD]
    assert phases == ["transformer"]  # one transformer for both stages


def test_lora_streamed_job_writes_the_resident_bytes(models, loras, tmp_path: Path) -> None:
    specs = [LoraSpec(loras["2.3"], 0.8), LoraSpec(loras["2.3-ic"], -0.4)]
    _, resident_events, resident = _job(models["2.3"], tmp_path, "resident", specs)
    _, streamed_events, streamed = _job(models["2.3"], tmp_path, "streamed", specs, memory="low")
    plans = [e.transformer for e in resident_events + streamed_events if isinstance(e, events.MemoryPlan)]
    assert plans == ["resident", "streaming"]
    assert streamed == resident


@pytest.mark.parametrize("mode", ["plain", "attention 0.5", "mask"])
def test_control_video_job(models, loras, control, tmp_path: Path, mode: str) -> None:
    """IC-LoRA: reference tokens in stage 1 (their own positions, the mask's attention), stage 2 reloaded without
    the IC-LoRA (ICLoraPipeline's stage-2 ledger has no LoRAs); the MP4 has the output's size and frames."""
    options = {"plain": {}, "attention 0.5": {"attention_strength": 0.5},
               "mask": {"mask_path": str(control["mask"]), "attention_strength": 0.8}}[mode]  # fmt: skip
    spec = ControlVideo(str(control["video"]), 0.9, **options)
    result, seen, data = _job(models["2.0"], tmp_path, "ic", [LoraSpec(loras["2.0-ic"])], control_video=spec)
    info = probe(result.video_path)
    assert (info.width, info.height, info.frames) == (128, 128, 9)
    encodes = [e.detail for e in seen if isinstance(e, events.PhaseStarted) and e.phase is events.Phase.IMAGE_ENCODING]
    assert encodes == ["control video"]
    _, _, without = _job(models["2.0"], tmp_path, "no-control", [LoraSpec(loras["2.0-ic"])])
    assert data != without


def test_control_video_stages_and_tokens(models, loras, control, monkeypatch, tmp_path: Path) -> None:
    """Stage 1 runs with the IC-LoRA and one reference token per latent frame (64 px / 2 / 32) after the output's
    2x2, positions scaled by the factor; stage 2 runs the plain model on the output's tokens only."""
    from ltx_backend.pipeline import engine as engine_module

    loaded = []
    real_load = engine_module.load_transformer

    def load(ckpt, dtype=None, quantize=None, loras=()):
        loaded.append(tuple(loras))
        return real_load(ckpt, dtype, quantize, loras=loras)

    monkeypatch.setattr(engine_module, "load_transformer", load)
    states = _record_stage_states(monkeypatch)
    spec = LoraSpec(loras["2.0-ic"])
    mask = ControlVideo(str(control["video"]), mask_path=str(control["mask"]))
    _job(models["2.0"], tmp_path, "stages", [spec], control_video=mask)
    assert loaded == [(spec,), ()]
    stage1, stage2 = states
    output_tokens = 2 * 2 * 2  # 2 latent frames of 2x2 at 64 px
    assert stage1.generated_tokens == output_tokens and stage1.latent.shape[1] == output_tokens + 2 * 1 * 1
    assert stage1.attention_mask.shape == (1, 10, 10)
    np.testing.assert_array_equal(stage1.positions[0, 1:, :2, 1], [[32, 32], [32, 64]])  # output cells: 32 px
    np.testing.assert_array_equal(stage1.positions[0, 1:, output_tokens:, 1], [[64, 64], [64, 64]])  # 2 x 32 px
    assert stage2.latent.shape[1] == stage2.generated_tokens == 2 * 4 * 4 and stage2.attention_mask is None


def test_control_video_in_a_single_stage_layout_covers_the_full_grid(models, loras, control, monkeypatch, tmp_path):
    """One-stage: the only stage is full size, so the control video is encoded at the output size / factor and the
    reference tokens span the same grid as the video's (not a quarter of it); the plan counts them."""
    from ltx_backend.pipeline import memory

    states = _record_stage_states(monkeypatch)
    spec = ControlVideo(str(control["video"]))
    result, _, _ = _job(models["2.0"], tmp_path, "one", [LoraSpec(loras["2.0-ic"])], control_video=spec,
                        pipeline="one-stage", steps=2)  # fmt: skip
    assert probe(result.video_path).frames == 9
    (state,) = states
    output_tokens = 2 * 4 * 4  # 2 latent frames of 4x4 at 128 px
    assert state.generated_tokens == output_tokens and state.latent.shape[1] == output_tokens + 2 * 2 * 2
    spatial = state.positions[0, 1:, :, 1]  # the [start, end) of each token's rows, in pixels
    assert spatial[:, output_tokens:].max() == spatial[:, :output_tokens].max() == 128

    request = GenerationRequest("a fox", str(tmp_path / "p.mp4"), pipeline="one-stage", **SMALL)
    ckpt = open_checkpoint(models["2.0"])
    text_encoder = Engine(models["2.0"]).text_encoder_root
    plain = memory.estimate(ckpt, text_encoder, request, mx.float32, None).phases["denoising"]
    controlled = memory.estimate(ckpt, text_encoder, replace(request, control_video=spec), mx.float32, None)
    assert f"{output_tokens} video" in plain.detail  # the tiny upsampler's weights dominate the activations here
    assert f"{2 * output_tokens} video" in controlled.phases["denoising"].detail  # factor 1: an upper bound


def test_several_control_videos_append_their_tokens_in_order(models, loras, control, monkeypatch, tmp_path) -> None:
    """ltx-pipelines' video_conditioning list: each control video is encoded and appended after the others, with its
    own strength (its tokens' denoise mask) and the shared attention weights; a second one changes the video."""
    states = _record_stage_states(monkeypatch)
    ic = [LoraSpec(loras["2.0-ic"])]
    depth = ControlVideo(str(control["video"]), 1.0, attention_strength=0.5)
    pose = ControlVideo(str(control["mask"]), 0.6, attention_strength=0.5)
    _, _, one = _job(models["2.0"], tmp_path, "one", ic, control_video=depth)
    _, _, two = _job(models["2.0"], tmp_path, "two", ic, control_video=(depth, pose))
    assert two != one
    single, _, double, _ = states  # stage 1 and stage 2 of each job
    output_tokens, reference = 2 * 2 * 2, 2 * 1 * 1
    assert single.latent.shape[1] == output_tokens + reference
    assert double.latent.shape[1] == output_tokens + 2 * reference
    np.testing.assert_array_equal(double.positions[:, :, : output_tokens + reference], single.positions)
    np.testing.assert_array_equal(double.positions[:, :, output_tokens + reference :], single.positions[:, :, -2:])
    mask = np.array(double.denoise_mask).reshape(-1)
    np.testing.assert_allclose(mask[output_tokens:], [0.0, 0.0, 0.4, 0.4], atol=1e-6)  # 1 - strength per video
    assert double.attention_mask.shape == (1, 12, 12)


def test_each_control_video_is_checked_before_any_work(models, loras, control, tmp_path: Path) -> None:
    engine = Engine(models["2.0"], loras=[LoraSpec(loras["2.0-ic"])])
    controls = (ControlVideo(str(control["video"])), ControlVideo(str(tmp_path / "none.mp4")))
    with pytest.raises(LtxError) as info:
        engine.generate(GenerationRequest("a fox", str(tmp_path / "x.mp4"), control_video=controls, **SMALL))
    assert info.value.code is ErrorCode.MEDIA_UNREADABLE and info.value.details["field"] == "control_video[1].path"
    assert not (tmp_path / "x.mp4").exists()


def test_distilled_lora_is_fused_for_stage_2_of_a_dev_checkpoint(models, loras, monkeypatch, tmp_path) -> None:
    from ltx_backend.pipeline import engine as engine_module

    loaded = []
    real_load = engine_module.load_transformer
    monkeypatch.setattr(engine_module, "load_transformer",
                        lambda ckpt, dtype=None, quantize=None, loras=(): loaded.append(tuple(loras))
                        or real_load(ckpt, dtype, quantize, loras=loras))  # fmt: skip
    monkeypatch.setattr(engine_module, "checkpoint_variant", lambda ckpt: "dev")
    style, distilled = LoraSpec(loras["2.0"], 0.5), LoraSpec(loras["2.0-ic"], 0.8)
    engine = Engine(models["2.0"], loras=[style], distilled_lora=distilled)
    request = GenerationRequest("a fox", str(tmp_path / "dev.mp4"), seed=3, steps=2, **SMALL)
    engine.generate(request)
    assert loaded == [(style,), (style, distilled)]
    assert probe(tmp_path / "dev.mp4").frames == 9


# --- refusals before any work --------------------------------------------------------------------------------------


def test_a_mismatched_lora_is_refused_before_loading(models, loras, monkeypatch) -> None:
    from ltx_backend.pipeline import engine as engine_module

    monkeypatch.setattr(engine_module, "load_transformer", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(LtxError) as info:
        Engine(models["2.3"], loras=[LoraSpec(loras["2.3"]), LoraSpec(loras["2.0"])])  # 2.0 widths differ
    assert info.value.code is ErrorCode.LORA_MISMATCH and info.value.details["field"] == "loras[1]"
    with pytest.raises(LtxError) as info:
        Engine(models["2.3"], distilled_lora=LoraSpec(loras["2.0"]))
    assert info.value.details["field"] == "distilled_lora"


def test_control_video_refusals(models, loras, control, tmp_path: Path) -> None:
    def refused(engine: Engine, **fields) -> LtxError:
        fields = {**SMALL, **fields}
        with pytest.raises(LtxError) as info:
            engine.generate(GenerationRequest("a fox", str(tmp_path / "x.mp4"), **fields))
        assert not (tmp_path / "x.mp4").exists()
        return info.value

    plain, ic = Engine(models["2.0"]), Engine(models["2.0"], loras=[LoraSpec(loras["2.0-ic"])])
    video = ControlVideo(str(control["video"]))
    assert refused(plain, control_video=video).details["field"] == "control_video"  # no IC-LoRA
    error = refused(ic, control_video=video, width=192)  # stage 1 96 px / 2 = 48: not a multiple of 32
    assert error.code is ErrorCode.INVALID_PARAMS and error.details["field"] == "width" and "128" in error.hint
    error = refused(ic, control_video=ControlVideo(str(tmp_path / "none.mp4")))
    assert error.code is ErrorCode.MEDIA_UNREADABLE and error.details["field"] == "control_video.path"
    error = refused(ic, control_video=ControlVideo(str(control["video"]), attention_strength=1.5))
    assert error.details["field"] == "control_video.attention_strength"


# --- front ends ----------------------------------------------------------------------------------------------------


def test_cli_lora_control_video_and_mismatch(models, loras, control, tmp_path: Path) -> None:
    base = ["generate", "-m", str(models["2.0"]), "-p", "waves", "-W", "128", "-H", "128", "-n", "9", "-q"]
    output = tmp_path / "cli.mp4"
    ic = ["--lora", f"{loras['2.0-ic']}:0.9", "--control-video", str(control["video"]), "--control-attention", "0.7"]
    result = CliRunner().invoke(cli, [*base, "-o", str(output), *ic])
    assert result.exit_code == 0, result.output
    assert probe(output).frames == 9
    bad = tmp_path / "bad.mp4"
    result = CliRunner().invoke(cli, [*base, "-o", str(bad), "--lora", str(loras["2.3"])])
    assert result.exit_code == 1 and "error [lora_mismatch]" in result.output and not bad.exists()
    result = CliRunner().invoke(cli, [*base, "-o", str(bad), "--control-mask", str(control["mask"])])
    assert result.exit_code == 2 and "--control-mask needs --control-video" in result.output
    two = tmp_path / "two.mp4"
    several = [*ic, "--control-video", f"{control['mask']}:0.5"]  # repeatable, PATH[:STRENGTH]
    result = CliRunner().invoke(cli, [*base, "-o", str(two), *several])
    assert result.exit_code == 0, result.output
    assert probe(two).frames == 9 and two.read_bytes() != output.read_bytes()


def test_protocol_control_video_is_one_object_or_a_list(control, tmp_path: Path) -> None:
    import io

    import msgspec

    from ltx_backend.server import messages as m
    from ltx_backend.server.server import Server

    server = Server(io.BytesIO())

    def prepare(control_video: object):
        line = json.dumps({"type": "generate", "prompt": "a fox", "output_path": str(tmp_path / "o.mp4"),
                           "width": 128, "height": 128, "num_frames": 9, "control_video": control_video})  # fmt: skip
        return server._prepare_generation(msgspec.json.decode(line, type=m.HostMessage)).generation

    one = prepare({"path": str(control["video"]), "strength": 0.7})
    assert [c.strength for c in one.controls] == [0.7]
    two = prepare([{"path": str(control["video"])}, {"path": str(control["mask"]), "attention_strength": 0.5}])
    assert [(Path(c.path).name, c.attention_strength) for c in two.controls] == [("depth.mp4", 1.0), ("mask.mp4", 0.5)]
    with pytest.raises(LtxError) as info:
        prepare([{"path": str(control["video"])}, {"path": str(control["video"]), "strength": 2}])
    assert info.value.details["field"] == "control_video[1].strength"


def test_inspect_a_lora(loras) -> None:
    shown = CliRunner().invoke(cli, ["inspect", str(loras["2.3-ic"]), "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.stdout)
    assert info["format"] == "ltx-core" and info["rank"] == 3 and info["reference_downscale_factor"] == 2
    assert info["metadata"] == {"reference_downscale_factor": "2"} and info["layers"] > 0
    text = CliRunner().invoke(cli, ["inspect", str(loras["2.3-ic"])])
    assert text.exit_code == 0 and "LoRA (ltx-core keys)" in text.output and "rank 3" in text.output
    assert "IC-LoRA: reference video at 1/2" in text.output


def test_ready_lists_lora_capabilities() -> None:
    from ltx_backend.server.server import CAPABILITIES

    assert {"lora", "ic_lora"} <= set(CAPABILITIES)


# --- residency: the LoRAs are part of the transformer's key --------------------------------------------------------


def test_resident_lora_transformer_is_fused_once_and_reconfigured_alone(models, loras, tmp_path: Path) -> None:
    """A session keeps the fused transformer between jobs (one load, one fusion); another `load` with other LoRAs
    reloads only the transformer, and a LoRA that does not fit changes nothing."""
    from ltx_backend.pipeline import resident as r

    style = LoraSpec(loras["2.0"], 0.8)
    engine = Engine(models["2.0"], residency="all", loras=[style])
    first = engine.generate(GenerationRequest("a fox", str(tmp_path / "1.mp4"), seed=3, **SMALL)).video_path
    engine.generate(GenerationRequest("a fox", str(tmp_path / "2.mp4"), seed=3, **SMALL))
    assert engine.models.loads[r.TRANSFORMER] == 1
    assert Path(first).read_bytes() == (tmp_path / "2.mp4").read_bytes()
    with pytest.raises(LtxError) as info:
        engine.reconfigure(loras=[LoraSpec(loras["2.3"])])
    assert info.value.code is ErrorCode.LORA_MISMATCH and engine.loras == (style,)
    loads = dict(engine.models.loads)
    engine.reconfigure(loras=[LoraSpec(loras["2.0"], 0.4)])
    engine.generate(GenerationRequest("a fox", str(tmp_path / "3.mp4"), seed=3, **SMALL))
    changed = {name for name, count in engine.models.loads.items() if count != loads.get(name, 0)}
    assert changed == {r.TRANSFORMER}
    assert (tmp_path / "3.mp4").read_bytes() != Path(first).read_bytes()


def test_control_video_job_in_a_resident_session(models, loras, control, tmp_path: Path) -> None:
    """Stage 1 (IC-LoRA fused) and stage 2 (plain) are two keys of the transformer: an IC job loads both; the
    session's output equals a session of one job."""
    from ltx_backend.pipeline import resident as r

    spec = ControlVideo(str(control["video"]))
    ic = [LoraSpec(loras["2.0-ic"])]
    session = Engine(models["2.0"], residency="all", loras=ic)
    for name in ("a", "b"):
        session.generate(GenerationRequest("a fox", str(tmp_path / f"{name}.mp4"), seed=3, control_video=spec, **SMALL))
    assert session.models.loads[r.TRANSFORMER] == 4
    single = Engine(models["2.0"], loras=ic)
    single.generate(GenerationRequest("a fox", str(tmp_path / "c.mp4"), seed=3, control_video=spec, **SMALL))
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes() == (tmp_path / "c.mp4").read_bytes()
