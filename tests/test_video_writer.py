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
