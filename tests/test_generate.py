"""End-to-end generation on the built-in tiny model (random weights, CPU): files, streams, errors, cancellation."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner
from cycles import cyclic_garbage_after
from media_probe import frames, probe, write_image

from ltx_backend import events
from ltx_backend.cli.main import cli
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.vae_tiling import tile_layout, tiling_for
from ltx_backend.pipeline.engine import Cancelled, CancelToken, Engine
from ltx_backend.pipeline.request import GenerationRequest, Keyframe

SMALL = {"width": 128, "height": 128, "num_frames": 9, "fps": 24.0}  # 2 latent frames; stage 1 at 64x64


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 160x96 PNG gradient (another aspect ratio than the video: it gets resized and centre-cropped)."""
    return write_image(tmp_path_factory.mktemp("images") / "start.png", 160, 96)


def run(engine: Engine, tmp_path: Path, **fields) -> tuple[events.Result, list[events.Event]]:
    seen: list[events.Event] = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    defaults = {"prompt": "a red fox runs through snow", "seed": 7, "output_path": str(tmp_path / "out.mp4"), **SMALL}
    request = GenerationRequest(**{**defaults, **fields})
    return engine.generate(request, emit=seen.append), seen


def test_text_to_video_with_audio(any_engine: Engine, tmp_path: Path) -> None:
    start = time.perf_counter()
    result, seen = run(
        any_engine, tmp_path, output_path=str(tmp_path / "clip.mp4"), audio_output_path=str(tmp_path / "a.wav")
    )
    wall = time.perf_counter() - start
    info = probe(result.video_path)
    assert (info.video_codec, info.pixel_format, info.width, info.height) == ("h264", "yuv420p", 128, 128)
    assert info.frames == 9 and info.fps == 24
    assert (info.audio_codec, info.sample_rate, info.channels) == ("aac", 48000, "stereo")
    assert info.duration == pytest.approx(9 / 24, abs=0.06)
    rate = 24000 if any_engine.version == "2.0" else 48000  # HiFi-GAN / BigVGAN + bandwidth extension
    assert Path(result.audio_path).stat().st_size == 44 + 2 * 2 * round(rate * 9 / 24)  # PCM16 stereo, fitted
    assert result.sampler == "distilled" and result.steps == (8, 3) and result.has_audio
    phases = [e.phase for e in seen if isinstance(e, events.PhaseFinished)]
    assert phases == [events.Phase.TEXT_ENCODING, events.Phase.LOAD, events.Phase.STAGE1, events.Phase.UPSAMPLE,
                      events.Phase.STAGE2, events.Phase.VIDEO_DECODE, events.Phase.AUDIO_DECODE,
                      events.Phase.MUX]  # fmt: skip
    # Each phase's own seconds, every weight load under "load", and the planning before the phases and the hand-back
    # of the borrowed models after them: together they are the job's wall time.
    assert set(result.timings) == {phase.value for phase in phases} | {"plan", "settle"}
    assert 0.9 * wall <= sum(result.timings.values()) <= wall
    text_event = next(e for e in seen if isinstance(e, events.PhaseFinished) and e.phase is events.Phase.TEXT_ENCODING)
    decode_details = {e.detail for e in seen if isinstance(e, events.PhaseStarted) and "decode" in e.phase.value}
    assert decode_details == {"tiling auto"}  # announced before the audio, for the compat shim
    assert result.timings["text_encoding"] < text_event.seconds  # the encoder's load moved to "load"
    steps = [(e.stage, e.step) for e in seen if isinstance(e, events.DenoiseStep)]
    assert steps == [(1, i) for i in range(1, 9)] + [(2, i) for i in range(1, 4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "clip.mp4"]  # no temporary left behind
    msgspec.json.decode(msgspec.json.encode(result), type=events.Result)  # the result serialises


def test_no_reference_cycle_holds_model_memory(engine: Engine, tmp_path: Path) -> None:
    """The engine frees each model by dropping it, without gc.collect(): nothing may sit in a reference cycle."""
    assert cyclic_garbage_after(lambda: run(engine, tmp_path)) == []


def test_auto_tiling_decodes_untiled_where_the_memory_allows(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--tiling auto` decodes the whole video where it fits in memory, else in the tiling with the least decode
    work that fits (a job decodes with it and says so), else in aggressive's smallest tiles."""
    wide = GenerationRequest(prompt="p", output_path=str(tmp_path / "o.mp4"), width=576, height=64, num_frames=9)
    assert engine.decode_tiling(wide) == "none"  # a few MB for the tiny decoder
    monkeypatch.setenv("LTX_BACKEND_MEMORY_LIMIT_GB", "0.2")
    assert engine.decode_tiling(wide) == "320/64/0/0"  # the work of generate_av's 2 tiles of 384 px, in less memory
    result, seen = run(engine, tmp_path, width=576, height=64, num_frames=9)
    decode_details = {e.detail for e in seen if isinstance(e, events.PhaseStarted) and "decode" in e.phase.value}
    assert decode_details == {"tiling 320/64/0/0"}
    info = probe(result.video_path)
    assert (info.width, info.height, info.frames) == (576, 64, 9)
    monkeypatch.setenv("LTX_BACKEND_MEMORY_LIMIT_GB", "0.001")
    assert engine.decode_tiling(wide) == "aggressive"  # nothing fits: the smallest tiles
    small = GenerationRequest(prompt="p", output_path=str(tmp_path / "o.mp4"), **SMALL)
    assert engine.decode_tiling(small) == "auto"  # auto does not tile this size anyway
    monkeypatch.delenv("LTX_BACKEND_MEMORY_LIMIT_GB")
    assert engine.decode_tiling(replace(wide, tiling="aggressive")) == "aggressive"


def test_video_only_has_no_audio_stream(any_engine: Engine, tmp_path: Path) -> None:
    result, seen = run(any_engine, tmp_path, audio=False)
    info = probe(result.video_path)
    assert info.audio_codec is None and info.frames == 9
    assert events.Phase.AUDIO_DECODE not in [e.phase for e in seen if isinstance(e, events.PhaseStarted)]


def test_same_seed_same_video_other_seed_other_video(engine: Engine, tmp_path: Path) -> None:
    first = frames(run(engine, tmp_path / "a", seed=11)[0].video_path)
    again = frames(run(engine, tmp_path / "b", seed=11)[0].video_path)
    other = frames(run(engine, tmp_path / "c", seed=12)[0].video_path)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1


def test_image_to_video_and_keyframes(any_engine: Engine, image: Path, tmp_path: Path) -> None:
    engine = any_engine
    plain = frames(run(engine, tmp_path / "t2v")[0].video_path)
    result, seen = run(engine, tmp_path / "i2v", keyframes=(Keyframe(str(image)),))
    assert events.Phase.IMAGE_ENCODING in [e.phase for e in seen if isinstance(e, events.PhaseFinished)]
    conditioned = frames(result.video_path)
    assert conditioned.shape == plain.shape == (9, 128, 128, 3)
    assert np.abs(conditioned.astype(int) - plain.astype(int)).mean() > 1  # the image changed the video

    two = (Keyframe(str(image)), Keyframe(str(image), frame_index=8, strength=0.75))
    result, _ = run(engine, tmp_path / "kf", keyframes=two, num_frames=17)
    assert probe(result.video_path).frames == 17


@pytest.mark.parametrize("mode", ["none", "default", "aggressive", "conservative", "spatial", "temporal"])
def test_every_tiling_mode_writes_the_same_size_video(engine: Engine, tmp_path: Path, mode: str) -> None:
    result, _ = run(engine, tmp_path, tiling=mode, audio=False)
    info = probe(result.video_path)
    assert (info.width, info.height, info.frames) == (128, 128, 9)


def test_a_tiling_in_time_writes_the_untiled_video(engine: Engine, tmp_path: Path) -> None:
    """Time is decoded in exact chunks: `aggressive` on 128x128x49 (one spatial tile, 7 latent frames in chunks of 4)
    writes the same frames as the untiled job of the same seed, and the same file."""
    assert len(tile_layout(7, 4, 4, tiling_for("aggressive", 128, 128, 49)).times) == 2
    fields = {"num_frames": 49, "audio": False}
    untiled = run(engine, tmp_path / "none", tiling="none", **fields)[0].video_path
    chunked = run(engine, tmp_path / "aggressive", tiling="aggressive", **fields)[0].video_path
    np.testing.assert_array_equal(frames(untiled), frames(chunked))
    assert Path(untiled).read_bytes() == Path(chunked).read_bytes()


def test_cancel_between_steps_leaves_nothing(engine: Engine, tmp_path: Path) -> None:
    token = CancelToken()
    seen: list[events.Event] = []

    def emit(event: events.Event) -> None:
        seen.append(event)
        if isinstance(event, events.DenoiseStep) and event.step == 2:
            token.cancel()

    request = GenerationRequest(prompt="a fox", output_path=str(tmp_path / "out.mp4"), seed=1, **SMALL)
    with pytest.raises(Cancelled):
        engine.generate(request, token, emit)
    assert [e.step for e in seen if isinstance(e, events.DenoiseStep)] == [1, 2]  # stopped within one step
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_fail_before_any_work(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(LtxError) as error:
        run(engine, tmp_path, width=100)
    assert error.value.code is ErrorCode.INVALID_PARAMS and "multiple of 64" in error.value.message
    result, seen = run(engine, tmp_path, width=100, round_dimensions=True, num_frames=10)
    warnings = [e.message for e in seen if isinstance(e, events.Warning)]
    assert any("rounded to 128" in w for w in warnings) and any("rounded to 9" in w for w in warnings)
    assert (result.width, result.num_frames) == (128, 9)


def test_cli_generate_on_the_tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTX_BACKEND_HOME", str(tmp_path / "home"))
    output = tmp_path / "cli.mp4"
    args = ["generate", "-p", "waves", "-W", "128", "-H", "128", "-n", "9", "-s", "3", "-o", str(output), "--json"]
    result = CliRunner().invoke(cli, [*args, "--video-crf", "28", "--video-preset", "fast"])
    assert result.exit_code == 0, result.output
    assert b"crf=28.0" in output.read_bytes()
    summary = msgspec.json.decode(result.stdout.strip().splitlines()[-1])
    assert summary["video_path"] == str(output) and summary["seed"] == 3
    assert probe(output).frames == 9

    failed = CliRunner().invoke(cli, ["generate", "-p", "x", "-W", "100", "-o", str(tmp_path / "bad.mp4")])
    assert failed.exit_code == 1 and "error [invalid_params]" in failed.output and "hint:" in failed.output
    assert not (tmp_path / "bad.mp4").exists()


def test_video_quality_options_reach_the_encoder(engine: Engine, tmp_path: Path) -> None:
    """CRF and preset change the H.264 stream (x264 writes its settings into it); bad values fail before work."""
    default, _ = run(engine, tmp_path / "default")
    tuned, _ = run(engine, tmp_path / "tuned", video_encoder="libx264", video_crf=35, video_preset="ultrafast")
    data = Path(tuned.video_path).read_bytes()
    assert b"crf=35.0" in data and b"subme=0" in data and b"crf=18.0" in Path(default.video_path).read_bytes()
    assert probe(Path(tuned.video_path)).frames == 9
    for field, value in (("video_crf", 52), ("video_preset", "warp"), ("video_encoder", "h265")):
        with pytest.raises(LtxError) as error:
            run(engine, tmp_path / "bad", **{field: value})
        assert error.value.code is ErrorCode.INVALID_PARAMS and error.value.details["field"] == field


def test_a_job_that_cannot_fit_is_refused_before_any_work(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LTX_BACKEND_MEMORY_LIMIT_GB", "0.001")
    seen: list[events.Event] = []
    request = GenerationRequest(prompt="a fox", output_path=str(tmp_path / "out.mp4"), seed=1, **SMALL)
    with pytest.raises(LtxError) as error:
        engine.generate(request, emit=seen.append)
    assert error.value.code is ErrorCode.INSUFFICIENT_MEMORY and error.value.hint
    assert not any(isinstance(e, events.PhaseStarted) for e in seen)
    assert list(tmp_path.iterdir()) == []
