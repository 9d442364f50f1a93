"""generate's modes and pipelines as requests: validated before compute (codes, fields, hints), inputs of other
modes dropped with a warning, the source clip deciding size / rate / frames; the CLI flags that build them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from ltx_backend.cli import main as cli_main
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.video import ffmpeg_exe
from ltx_backend.pipeline.request import GenerationRequest, validate


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


def make_clip(path: Path, frames: int, size: str = "160x96", audio: bool = True, fps: int = 24) -> Path:
    video = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}"]
    sound = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-ac", "2", "-c:a", "aac"] if audio else []
    ffmpeg(*video, *sound, "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", str(path))
    return path


def make_wav(path: Path, seconds: float, rate: int = 44100) -> Path:
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, (int(rate * seconds), 2)).astype(np.float32)
    soundfile.write(path, wave, rate, subtype="PCM_16")
    return path


def request(tmp_path: Path, **fields) -> GenerationRequest:
    defaults = {"prompt": "a fox", "output_path": str(tmp_path / "out.mp4"), "width": 128, "height": 128}
    return GenerationRequest(**{**defaults, "num_frames": 17, **fields})


def refused(req: GenerationRequest, code: ErrorCode, field: str) -> LtxError:
    with pytest.raises(LtxError) as info:
        validate(req)
    assert info.value.code is code, info.value
    assert info.value.details.get("field") == field, info.value.details
    assert info.value.hint, "every error has a hint"
    return info.value


# ------------------------------------------------------------------------------------------------- validation


def test_unknown_mode_and_pipeline(tmp_path: Path) -> None:
    refused(request(tmp_path, mode="v2v"), ErrorCode.INVALID_PARAMS, "mode")
    refused(request(tmp_path, pipeline="three-stage"), ErrorCode.INVALID_PARAMS, "pipeline")
    refused(request(tmp_path, mode="a2v", pipeline="interpolate"), ErrorCode.INVALID_PARAMS, "pipeline")


def test_a2v_needs_a_readable_long_enough_soundtrack(tmp_path: Path) -> None:
    refused(request(tmp_path, mode="a2v"), ErrorCode.INVALID_PARAMS, "audio_input_path")
    missing = refused(request(tmp_path, mode="a2v", audio_input_path=str(tmp_path / "no.wav")),
                      ErrorCode.MEDIA_UNREADABLE, "audio_input_path")  # fmt: skip
    assert "no.wav" in missing.message
    (tmp_path / "junk.mp3").write_bytes(b"not audio at all")
    refused(request(tmp_path, mode="a2v", audio_input_path=str(tmp_path / "junk.mp3")),
            ErrorCode.MEDIA_UNREADABLE, "audio_input_path")  # fmt: skip
    short = make_wav(tmp_path / "short.wav", 0.5)  # 17 frames at 24 fps need 0.708 s
    error = refused(request(tmp_path, mode="a2v", audio_input_path=str(short)), ErrorCode.MEDIA_TOO_SHORT,
                    "audio_input_path")  # fmt: skip
    assert "0.708" in error.message
    silent = make_clip(tmp_path / "silent.mp4", 17, audio=False)
    refused(request(tmp_path, mode="a2v", audio_input_path=str(silent)), ErrorCode.MEDIA_NO_AUDIO, "audio_input_path")
    long = make_wav(tmp_path / "long.wav", 1.0)
    refused(request(tmp_path, mode="a2v", audio_input_path=str(long), audio_start=0.5), ErrorCode.MEDIA_TOO_SHORT,
            "audio_input_path")  # fmt: skip
    refused(request(tmp_path, mode="a2v", audio_input_path=str(long), audio_start=-1), ErrorCode.INVALID_PARAMS,
            "audio_start")  # fmt: skip
    ok = validate(request(tmp_path, mode="a2v", audio_input_path=str(long), audio=False, pipeline="hq"))
    assert ok.audio and ok.pipeline == "two-stage" and ok.layout == "a2v"
    assert any("a2v writes the given soundtrack" in w for w in ok.warnings)
    assert any("pipeline hq is ignored" in w for w in ok.warnings)


def test_retake_window_and_streams(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "src.mp4", 20)  # 17 usable frames (0.708 s), 160x96 -> 160x96
    refused(request(tmp_path, mode="retake", retake_window=(0.1, 0.3)), ErrorCode.INVALID_PARAMS, "source_path")
    refused(request(tmp_path, mode="retake", source_path=str(source)), ErrorCode.INVALID_PARAMS, "retake_window")
    for window in ((0.4, 0.2), (-0.1, 0.3), (0.75, 1.0)):
        refused(request(tmp_path, mode="retake", source_path=str(source), retake_window=window),
                ErrorCode.INVALID_PARAMS, "retake_window")  # fmt: skip
    refused(request(tmp_path, mode="retake", source_path=str(source), retake_window=(0.1, 0.3), retake_video=False,
                    retake_audio=False), ErrorCode.INVALID_PARAMS, "retake_video")  # fmt: skip
    ok = validate(request(tmp_path, mode="retake", source_path=str(source), retake_window=(0.1, 0.3), width=256))
    assert (ok.width, ok.height, ok.num_frames, ok.fps, ok.source_frames) == (160, 96, 17, 24.0, 17)
    assert any("width 256 is ignored" in w for w in ok.warnings)
    assert any("last 3 frame(s) are left out" in w for w in ok.warnings)


def test_source_media_errors(tmp_path: Path) -> None:
    refused(request(tmp_path, mode="extend", source_path=str(tmp_path / "none.mp4"), extend_seconds=1.0),
            ErrorCode.MEDIA_UNREADABLE, "source_path")  # fmt: skip
    sound_only = make_wav(tmp_path / "sound.wav", 1.0)
    refused(request(tmp_path, mode="extend", source_path=str(sound_only), extend_seconds=1.0),
            ErrorCode.MEDIA_UNREADABLE, "source_path")  # fmt: skip
    short = make_clip(tmp_path / "short.mp4", 5)
    refused(request(tmp_path, mode="extend", source_path=str(short), extend_seconds=1.0), ErrorCode.MEDIA_TOO_SHORT,
            "source_path")  # fmt: skip


def test_extend_seconds_in_range_and_joined_frames(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "src.mp4", 17)
    refused(request(tmp_path, mode="extend", source_path=str(source)), ErrorCode.INVALID_PARAMS, "extend_seconds")
    for seconds in (0.0, -1.0, 25.0):
        refused(request(tmp_path, mode="extend", source_path=str(source), extend_seconds=seconds),
                ErrorCode.INVALID_PARAMS, "extend_seconds")  # fmt: skip
    ok = validate(request(tmp_path, mode="extend", source_path=str(source), extend_seconds=0.5))
    assert (ok.num_frames, ok.source_frames, ok.layout) == (33, 17, "extend")


def test_options_of_other_modes_are_warned_and_dropped(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "src.mp4", 17)
    ok = validate(request(tmp_path, audio_input_path="/x.wav", source_path=str(source), retake_window=(0, 1),
                          extend_seconds=1.0, retake_audio=False))  # fmt: skip
    assert ok.mode == "t2v" and ok.audio_input_path is ok.source_path is ok.retake_window is ok.extend_seconds is None
    assert ok.retake_audio
    for name in ("audio_input_path", "source_path", "retake_window", "extend_seconds", "retake_audio"):
        assert any(w.startswith(f"{name} is ignored") for w in ok.warnings), name
    refused(request(tmp_path, pipeline="interpolate"), ErrorCode.INVALID_PARAMS, "keyframes")


def test_single_stage_layouts_take_multiples_of_32(tmp_path: Path) -> None:
    refused(request(tmp_path, width=96, height=96), ErrorCode.INVALID_PARAMS, "width")
    assert validate(request(tmp_path, width=96, height=96, pipeline="one-stage")).width == 96


# ------------------------------------------------------------------------------------------------------ CLI


def cli_request(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[object, GenerationRequest | None]:
    """Run `generate` with the flags up to validation: the request the CLI built (no engine)."""
    seen: list[GenerationRequest] = []

    def fake_validate(req: GenerationRequest) -> GenerationRequest:
        seen.append(req)
        raise LtxError(ErrorCode.INVALID_PARAMS, "stop here", "test")

    monkeypatch.setattr("ltx_backend.pipeline.request.validate", fake_validate)
    result = CliRunner().invoke(cli_main.cli, ["generate", "-p", "a fox", *args])
    return result, (seen[0] if seen else None)


def test_cli_flags_build_each_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    _, req = cli_request(monkeypatch, "--audio", "a.wav", "--audio-start", "1.5")
    assert (req.mode, req.audio_input_path, req.audio_start) == ("a2v", "a.wav", 1.5)
    _, req = cli_request(monkeypatch, "--source", "s.mp4", "--retake", "0.5:1.25", "--no-retake-audio")
    assert (req.mode, req.source_path, req.retake_window, req.retake_video, req.retake_audio) == (
        "retake", "s.mp4", (0.5, 1.25), True, False)  # fmt: skip
    _, req = cli_request(monkeypatch, "--source", "s.mp4", "--retake", "0:1", "--retake-streams", "audio")
    assert (req.retake_video, req.retake_audio) == (False, True)
    _, req = cli_request(monkeypatch, "--source", "s.mp4", "--extend", "2")
    assert (req.mode, req.extend_seconds) == ("extend", 2.0)
    _, req = cli_request(monkeypatch, "--pipeline", "interpolate", "--keyframe", "a.png|0")
    assert (req.mode, req.pipeline) == ("interpolate", "interpolate")
    _, req = cli_request(monkeypatch, "--pipeline", "hq")
    assert (req.mode, req.pipeline) == ("t2v", "hq")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "s.mp4"], "--source needs --retake"),
        (["--retake", "0:1"], "--retake needs --source"),
        (["--audio", "a.wav", "--source", "s.mp4", "--extend", "1"], "choose one mode"),
        (["--source", "s.mp4", "--retake", "1-2"], "START:END"),
        (["--source", "s.mp4", "--retake", "0:1", "--retake-streams", "video,smell"], "video, audio"),
        (["--source", "s.mp4", "--retake", "0:1", "--retake-streams", "video", "--no-retake-audio"], "not both"),
        (["--pipeline", "four-stage"], "four-stage"),
    ],
)
def test_cli_flag_mistakes_are_usage_errors(monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    result, req = cli_request(monkeypatch, *args)
    assert result.exit_code == 2 and req is None, result.output
    assert message in result.output


# ---------------------------------------------------------------------------------------------- memory plan


def test_memory_plan_covers_the_encoders_and_extends_longer_tokens(tmp_path: Path) -> None:
    import mlx.core as mx

    from ltx_backend.pipeline import memory
    from ltx_backend.tiny import write_tiny_model
    from ltx_backend.weights.checkpoint import open_checkpoint

    root = write_tiny_model(tmp_path / "tiny")
    ckpt = open_checkpoint(root)
    source = make_clip(tmp_path / "src.mp4", 17, size="128x128")
    plain = validate(request(tmp_path))
    extend = validate(request(tmp_path, mode="extend", source_path=str(source), extend_seconds=1.0))
    a2v = validate(request(tmp_path, mode="a2v", audio_input_path=str(make_wav(tmp_path / "a.wav", 1.0))))

    def plan(req: GenerationRequest) -> memory.MemoryPlan:
        return memory.estimate(ckpt, root / "text_encoder", req, mx.float32)

    assert memory.SOURCE_ENCODING not in plan(plain).phases
    assert plan(a2v).phases[memory.SOURCE_ENCODING].weights > 0  # the audio encoder
    encode = plan(extend).phases[memory.SOURCE_ENCODING]
    assert encode.weights > plan(a2v).phases[memory.SOURCE_ENCODING].weights  # + the video encoder
    assert "17 source frames" in encode.detail
    # 17 + 24 frames: 6 latent frames of 4 x 4 tokens, against 3 for the 17-frame t2v job
    assert "96 video" in plan(extend).phases[memory.DENOISING].detail
    assert "48 video" in plan(plain).phases[memory.DENOISING].detail


def test_ready_lists_the_modes_and_pipelines() -> None:
    from ltx_backend.pipeline.request import MODES, PIPELINES
    from ltx_backend.server.server import CAPABILITIES

    assert set(MODES) | set(PIPELINES) <= set(CAPABILITIES)
