"""The streaming MP4 writer: frames in chunks, nothing at the target unless ffmpeg finished."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from media_probe import probe

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.video import VideoWriter, to_uint8


def chunks(count: int, frames: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (frames, 64, 96, 3), dtype=np.uint8) for _ in range(count)]


def test_chunks_become_one_video(tmp_path: Path) -> None:
    target = tmp_path / "v.mp4"
    with VideoWriter(target, 96, 64, 24) as writer:
        for chunk in chunks(5):
            writer.write(chunk)
    info = probe(target)
    assert (info.width, info.height, info.frames, info.audio_codec) == (96, 64, 40, None)
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private 0600


def test_an_error_while_writing_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "v.mp4", 96, 64, 24) as writer:
        writer.write(chunks(1)[0])
        raise RuntimeError("decoder failed")
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(LtxError) as error, VideoWriter(tmp_path / "v.mp4", 96, 64, 24, tmp_path / "no.wav") as writer:
        for chunk in chunks(40):  # ffmpeg exits at once (no such audio file): the pipe breaks
            writer.write(chunk)
    assert error.value.code is ErrorCode.OUTPUT_WRITE_FAILED and "no.wav" in error.value.message
    assert list(tmp_path.iterdir()) == []


def test_frames_convert_to_uint8_as_ltx_core_does() -> None:
    """Scale [-1, 1] to [0, 255], clip, truncate: the device conversion equals ltx-core's float32 formula."""
    frames = np.random.default_rng(0).uniform(-1.3, 1.3, (2, 32, 48, 3)).astype(np.float32)
    frames[0, 0, 0] = [-1.0, 0.0, 1.0]
    expected = (np.clip((frames + 1.0) / 2.0, 0.0, 1.0) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8(mx.array(frames)), expected)
    assert list(to_uint8(mx.array(frames[:1, :1, :1]))[0, 0, 0]) == [0, 127, 255]


def test_default_quality_is_libx264_crf18_medium_and_options_change_the_stream(tmp_path: Path) -> None:
    """The default writes what it always wrote (libx264, CRF 18, its default preset); CRF and preset are applied."""
    import subprocess

    from ltx_backend.media.encoders import VideoQuality, encoder_arguments
    from ltx_backend.media.video import ffmpeg_exe

    frames = chunks(2)
    outputs = {}
    for name, quality in {
        "default": None,
        "crf30": VideoQuality("libx264", 30),
        "fast": VideoQuality(preset="ultrafast"),
    }.items():
        with VideoWriter(tmp_path / f"{name}.mp4", 96, 64, 24, quality=quality) as writer:
            for chunk in frames:
                writer.write(chunk)
        outputs[name] = (tmp_path / f"{name}.mp4").read_bytes()
    # The bytes the previous writer produced: libx264 with -crf 18 and no preset argument.
    raw = tmp_path / "raw.rgb"
    raw.write_bytes(b"".join(chunk.tobytes() for chunk in frames))
    legacy = tmp_path / "legacy.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "96x64",
         "-r", "24.0", "-i", str(raw), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18",
         "-movflags", "+faststart", "-f", "mp4", str(legacy)],
        check=True,
    )  # fmt: skip
    assert outputs["default"] == legacy.read_bytes()
    assert len(outputs["crf30"]) < len(outputs["default"])
    assert b"crf=30.0" in outputs["crf30"] and b"subme=0" in outputs["fast"]  # x264's settings string
    assert encoder_arguments("nvenc", VideoQuality(preset="veryslow"))[:4] == ["-c:v", "h264_nvenc", "-preset", "p7"]


def test_a_hardware_encoder_that_does_not_work_here_falls_back_to_libx264(tmp_path: Path, monkeypatch) -> None:
    import sys

    from ltx_backend.media import encoders
    from ltx_backend.media.encoders import VideoQuality, choose_encoder
    from ltx_backend.media.video import ffmpeg_exe

    monkeypatch.setattr(encoders, "_works", lambda ffmpeg, encoder: False)  # listed, but no device or driver
    assert choose_encoder(ffmpeg_exe(), VideoQuality("nvenc")) == "libx264"
    assert choose_encoder(ffmpeg_exe(), VideoQuality("auto")) == "libx264"
    monkeypatch.setattr(encoders, "_works", lambda ffmpeg, encoder: encoder == "nvenc")
    assert choose_encoder(ffmpeg_exe(), VideoQuality("libx264")) == "libx264"
    assert choose_encoder(ffmpeg_exe(), VideoQuality("nvenc")) == "nvenc"
    monkeypatch.undo()
    if sys.platform != "darwin":  # a real probe: VideoToolbox exists on macOS only
        with VideoWriter(tmp_path / "v.mp4", 96, 64, 24, quality=VideoQuality("videotoolbox")) as writer:
            writer.write(chunks(1)[0])
        assert writer.encoder == "libx264" and probe(tmp_path / "v.mp4").frames == 8
