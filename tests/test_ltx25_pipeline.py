"""LTX-2.5 end to end on the built-in tiny-2.5 model (Lightricks' split release layout, random weights, CPU).

T2V with audio, I2V, the automatic length (engine, CLI, protocol fields), the text-encoder pairing check, the compat
shim, ``make-tiny --version 2.5`` / ``models`` / ``inspect``. The numerics of each 2.5 part are proven elsewhere
against ltx-core 1.2.0 (transformer: test_transformer_ltx25.py; Gemma 4 / connectors: test_gemma4.py; the
duration head: test_duration_head.py; the ancestral step and loop: test_ancestral.py); here the parts run together.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from media_probe import frames, probe, write_image
from safetensors.numpy import save_file

from ltx_backend import events
from ltx_backend.cli.main import cli
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.pipeline import ancestral, ltx25_flow
from ltx_backend.pipeline import engine as engines
from ltx_backend.pipeline.engine import Engine
from ltx_backend.pipeline.request import GenerationRequest, Keyframe, validate
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights.checkpoint import open_checkpoint

SMALL = {"width": 128, "height": 128, "fps": 24.0}


@pytest.fixture(scope="module")
def tiny25(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-2.5", "2.5")


@pytest.fixture(scope="module")
def engine(tiny25: Path) -> Engine:
    return Engine(tiny25)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image(tmp_path_factory.mktemp("images") / "start.png", 160, 96)


def run(engine: Engine, tmp_path: Path, **fields) -> tuple[events.Result, list[events.Event]]:
    seen: list[events.Event] = []
    defaults = {"prompt": "a red fox runs through snow", "seed": 7, "output_path": str(tmp_path / "out.mp4"), **SMALL}
    return engine.generate(GenerationRequest(**{**defaults, **fields}), emit=seen.append), seen


def test_the_tiny_model_is_the_official_split_release(tiny25: Path) -> None:
    ckpt = open_checkpoint(tiny25)
    assert ckpt.layout.value == "official"
    assert [f.path.parent.name for f in ckpt.files] == ["diffusion_models", "vae", "vae"]
    assert sorted(ckpt.config) == ["audio_vae", "transformer", "vae", "vocoder"]
    transformer = ckpt.config["transformer"]
    assert transformer["ff_bias"] is False and transformer["use_keyframes_abs_pos_embedding"] is True
    assert "keyframes_abs_pos_embedding" in ckpt.component("transformer").tensors
    keys = ckpt.component("transformer").tensors
    assert not any(k.startswith("transformer_blocks.") and ".ff.net.2.bias" in k and "audio_ff" not in k for k in keys)
    assert "transformer_blocks.0.audio_ff.net.2.bias" in keys and "video_embeddings_connector" in "".join(keys)
    assert ltx25_flow.bundled_text_encoder(ckpt).parent.name == "text_encoders"
    assert ltx25_flow.duration_head_path(ckpt).parent.name == "model_patches"
    assert ltx25_flow.image_crf(ckpt) == 18


def test_text_to_video_with_audio(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[tuple[int, ...]] = []
    real_call = ancestral.SeededNoise.__call__

    def counted(self, shape, dtype):
        draws.append(shape)
        return real_call(self, shape, dtype)

    monkeypatch.setattr(ancestral.SeededNoise, "__call__", counted)
    result, seen = run(engine, tmp_path, num_frames=9, audio_output_path=str(tmp_path / "a.wav"))
    info = probe(result.video_path)
    assert (info.video_codec, info.width, info.height, info.frames) == ("h264", 128, 128, 9)
    assert (info.audio_codec, info.sample_rate) == ("aac", 48000)
    assert Path(result.audio_path).is_file() and result.steps == (8, 3) and result.num_frames == 9
    # stage 1 is Euler-ancestral: 7 noise-injecting steps (the 8th is terminal), video then audio each time
    video_tokens, audio_tokens = 2 * 2 * 2, 9  # 2 latent frames of 64x64 / 32 at stage 1; 9 audio latents
    assert [d[1] for d in draws] == [video_tokens, audio_tokens] * 7
    assert not any(isinstance(e, events.DurationChosen) for e in seen)
    assert frames(result.video_path).shape == (9, 128, 128, 3)


def test_the_same_seed_gives_the_same_video_and_another_seed_another(engine: Engine, tmp_path: Path) -> None:
    a, _ = run(engine, tmp_path, num_frames=9, audio=False, output_path=str(tmp_path / "a.mp4"))
    b, _ = run(engine, tmp_path, num_frames=9, audio=False, output_path=str(tmp_path / "b.mp4"))
    c, _ = run(engine, tmp_path, num_frames=9, audio=False, seed=8, output_path=str(tmp_path / "c.mp4"))
    assert np.array_equal(frames(a.video_path), frames(b.video_path))
    assert not np.array_equal(frames(a.video_path), frames(c.video_path))


def test_image_to_video_uses_crf_18(engine: Engine, image: Path, tmp_path: Path, monkeypatch) -> None:
    crfs = []
    real = engines.conditioning_frame

    def spy(path, height, width, crf=33):
        crfs.append(crf)
        return real(path, height, width, crf=crf)

    monkeypatch.setattr(engines, "conditioning_frame", spy)
    result, seen = run(engine, tmp_path, num_frames=9, keyframes=(Keyframe(str(image)),))
    assert crfs == [18, 18]  # both stage sizes
    assert probe(result.video_path).frames == 9
    assert events.Phase.IMAGE_ENCODING in [e.phase for e in seen if isinstance(e, events.PhaseFinished)]


def test_the_duration_head_chooses_the_length(engine: Engine, tmp_path: Path) -> None:
    result, seen = run(engine, tmp_path, audio=True)  # no num_frames
    (choice,) = [e for e in seen if isinstance(e, events.DurationChosen)]
    # the tiny head predicts ~1.5 s: 36 frames at 24 fps, snapped down to 8k+1 = 33
    assert choice.num_frames == result.num_frames == 33 and not choice.clamped
    assert choice.predicted_seconds == pytest.approx(1.5, abs=0.2)
    info = probe(result.video_path)
    assert info.frames == 33 and info.duration == pytest.approx(33 / 24, abs=0.06)
    # the memory plan was made for the longest length the bounds allow, before the prediction
    assert seen.index(next(e for e in seen if isinstance(e, events.MemoryPlan))) < seen.index(choice)


def test_duration_bounds_clamp_the_choice(engine: Engine, tmp_path: Path) -> None:
    result, seen = run(engine, tmp_path, audio=False, max_seconds=1.0, min_seconds=0.5)
    (choice,) = [e for e in seen if isinstance(e, events.DurationChosen)]
    assert choice.clamped and result.num_frames == 17  # 1.0 s = 24 frames, snapped down to 17
    assert any(isinstance(e, events.Warning) and "outside" in e.message for e in seen)


def test_duration_bounds_are_validated_before_anything_loads() -> None:
    with pytest.raises(LtxError) as error:  # [24, 24] frames hold no 8k+1 count
        validate(GenerationRequest(prompt="x", output_path="/tmp/x.mp4", min_seconds=1.0, max_seconds=1.02))
    assert error.value.code is ErrorCode.INVALID_PARAMS and error.value.details["field"] == "min_seconds"
    with pytest.raises(LtxError, match="max_seconds 25"):
        validate(GenerationRequest(prompt="x", output_path="/tmp/x.mp4", max_seconds=25))
    given = validate(GenerationRequest(prompt="x", output_path="/tmp/x.mp4", num_frames=9, max_seconds=2))
    assert any("no effect" in warning for warning in given.warnings)
    # keyframes must fit every length the head may choose: the shortest is 25 frames at 1 s / 24 fps
    with pytest.raises(LtxError, match="frame 30"):
        validate(GenerationRequest(prompt="x", output_path="/tmp/x.mp4", keyframes=(Keyframe(__file__, 30),)))


def test_ltx23_without_num_frames_keeps_121(tmp_path_factory: pytest.TempPathFactory) -> None:
    ckpt = open_checkpoint(write_tiny_model(tmp_path_factory.mktemp("m") / "t23", "2.3"))
    request = ltx25_flow.plan_frames(ckpt, validate(GenerationRequest(prompt="x", output_path="/tmp/x.mp4")))
    assert request.num_frames == 121
    euler = object()  # the stage plan's own Euler loop is kept for LTX-2.3
    assert ltx25_flow.stage1_loop(ckpt, "distilled", 1, euler) is euler
    assert ltx25_flow.image_crf(ckpt) == 33


def test_cli_auto_duration(tiny25: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.mp4"
    args = ["generate", "-p", "waves", "-m", str(tiny25), "-W", "128", "-H", "128", "--seed", "1", "--no-audio",
            "--max-seconds", "1", "--min-seconds", "0.5", "-o", str(out), "--json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["num_frames"] == 17 and probe(out).frames == 17
    assert "duration: 17 frames" in result.stderr


def test_pairing_is_checked_before_anything_loads(tiny25: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    tiny23 = write_tiny_model(tmp_path_factory.mktemp("m") / "t23", "2.3")
    with pytest.raises(LtxError) as error:
        Engine(tiny25, text_encoder=tiny23 / "text_encoder")  # 2.5 + Gemma 3
    assert error.value.code is ErrorCode.TEXT_ENCODER_MISMATCH
    gemma4 = ltx25_flow.bundled_text_encoder(open_checkpoint(tiny25))
    with pytest.raises(LtxError) as error:
        Engine(tiny23, text_encoder=gemma4)  # 2.3 + Gemma 4
    assert error.value.code is ErrorCode.TEXT_ENCODER_MISMATCH


def test_make_tiny_models_and_inspect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTX_BACKEND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    runner = CliRunner()
    made = runner.invoke(cli, ["make-tiny", "--version", "2.5"])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "home" / "tiny-2.5" / "diffusion_models").is_dir()
    listed = runner.invoke(cli, ["models", "--json"])
    (entry,) = json.loads(listed.stdout)["models"]
    assert (entry["name"], entry["model_version"], entry["layout"]) == ("tiny-2.5", "2.5", "official")
    assert entry["text_encoder"].startswith("text_encoders/")
    # a release with the diffusion decoder: inspect says it is not used
    root = tmp_path / "home" / "tiny-2.5"
    config = json.dumps({"vae": {"_class_name": "CausalDiffusionVAE"}})
    save_file({"decoder.x": np.zeros(1, np.float32)}, str(root / "vae" / "ltx-2.5-video-vae.safetensors"),
              metadata={"config": config, "model_version": "2.5.0"})  # fmt: skip
    shown = runner.invoke(cli, ["inspect", "tiny-2.5", "--json"])
    summary = json.loads(shown.stdout)
    assert summary["model_version"] == "2.5"  # as `loaded` and `models` report it
    (note,) = summary["unsupported"]
    assert "ltx-2.5-video-vae.safetensors" in note and "DiffVAE" in note and "out of scope" in note
    assert open_checkpoint(root).files[1].path.name == "ltx-2.5-tiny-video-vae-conv-f32.safetensors"


def test_compat_shim_runs_tiny_25(tmp_path: Path) -> None:
    """mlx_video.generate_av with 0.1.37's flags on --model-repo tiny-2.5, in a fresh process as the app runs it."""
    out = tmp_path / "fox.mp4"
    env = {"LTX_BACKEND_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": f"{Path(__file__).parents[1] / 'compat'}:{Path(__file__).parents[1]}"}  # fmt: skip
    args = [sys.executable, "-m", "mlx_video.generate_av", "--prompt", "a fox", "--height", "128", "--width", "128",
            "--num-frames", "9", "--seed", "3", "--model-repo", "tiny-2.5", "--output-path", str(out)]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Detected LTX-2.5 distilled model family" in done.stdout
    assert "STAGE:1:STEP:8:8:Denoising" in done.stderr + done.stdout
    info = probe(out)
    assert (info.frames, info.width, info.audio_codec) == (9, 128, "aac")


def test_serve_loads_tiny_25_and_reports_the_automatic_length(tmp_path: Path) -> None:
    """The protocol: ``load`` finds the release's own Gemma 4 (no Gemma 3 download), ``generate`` without
    ``num_frames`` but with ``max_seconds`` reports the duration in a progress message and the result."""
    from test_server import Backend, terminal

    backend = Backend(tmp_path / "home")
    try:
        assert backend.next()["type"] == "ready"
        backend.send(type="load", id="l", model="tiny-2.5")
        loaded = backend.until(lambda msg: msg.get("id") == "l" and msg["type"] in ("loaded", "error"), 120)
        assert loaded["type"] == "loaded" and loaded["model_version"] == "2.5", loaded
        assert "text_encoders/gemma4-" in loaded["text_encoder"]
        backend.send(type="generate", id="g", prompt="a fox", width=128, height=128, seed=1, audio=False,
                     max_seconds=1.0, min_seconds=0.5, output_path=str(tmp_path / "a.mp4"))  # fmt: skip
        end = backend.until(lambda msg: msg.get("id") == "g" and terminal(msg), 300)
        assert end["type"] == "result" and end["num_frames"] == 17, end
        messages = [msg.get("message", "") for msg in backend.seen if msg["type"] == "progress"]
        assert any(text.startswith("duration: 17 frames") for text in messages)
        assert probe(end["video_path"]).frames == 17
    finally:
        if backend.close() != 0:
            backend.process.kill()


def test_low_ram_streaming_gives_the_same_video(engine: Engine, tmp_path: Path) -> None:
    """The 2.5 blocks (no video FFN bias, the marker outside the blocks) streamed from the official transformer
    file: the same frames as resident weights."""
    streamed, seen = run(engine, tmp_path, num_frames=9, audio=False, memory="low", output_path=str(tmp_path / "s.mp4"))
    (plan,) = [e for e in seen if isinstance(e, events.MemoryPlan)]
    assert plan.transformer == "streaming"
    resident, _ = run(engine, tmp_path, num_frames=9, audio=False, output_path=str(tmp_path / "r.mp4"))
    assert np.array_equal(frames(streamed.video_path), frames(resident.video_path))
