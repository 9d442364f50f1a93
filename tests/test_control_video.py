"""Control-video reading for IC-LoRAs: decode, frame cap, 1 + 8k crop, resize-and-crop, [-1, 1] (ltx-pipelines
``load_video_conditioning``). The clips are written losslessly (raw RGB in NUT), so the frames compare exactly with
``resize_and_center_crop`` of the source (itself checked against ltx-pipelines by the image conditioning tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.control_video import (
    encodable_frames,
    probe_control_video,
    read_control_video,
    read_mask_video,
)
from ltx_backend.media.image import resize_and_center_crop
from ltx_backend.media.video import ffmpeg_exe

HEIGHT, WIDTH, FRAMES = 40, 56, 20


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    frames = np.random.default_rng(16).integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("control") / "control.nut"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}",
         "-r", "24", "-i", "-", "-c:v", "rawvideo", "-pix_fmt", "rgb24", str(path)],
        input=frames.tobytes(), check=True, capture_output=True,
    )  # fmt: skip
    return path, frames


def test_probe(clip) -> None:
    info = probe_control_video(clip[0])
    assert (info.width, info.height, info.frames, info.fps) == (WIDTH, HEIGHT, FRAMES, 24.0)


@pytest.mark.parametrize(("cap", "expected"), [(19, 17), (9, 9), (100, 17), (1, 1)])
def test_frames_are_capped_then_cropped_to_one_plus_8k(clip, cap: int, expected: int) -> None:
    path, frames = clip
    video = read_control_video(path, 32, 24, cap)
    assert video.shape == (1, 3, expected, 32, 24) and video.dtype == np.float32
    want = np.stack([resize_and_center_crop(frame, 32, 24) for frame in frames[:expected]]) / 127.5 - 1.0
    np.testing.assert_allclose(video[0].transpose(1, 2, 3, 0), want, atol=1e-6)
    assert encodable_frames(min(cap, FRAMES)) == expected


def test_mask_video_is_the_channel_mean_in_0_1(clip) -> None:
    path, frames = clip
    mask = read_mask_video(path, 32, 24, 9)
    want = np.stack([resize_and_center_crop(frame, 32, 24) for frame in frames[:9]]).mean(axis=-1) / 255.0
    assert mask.shape == (1, 1, 9, 32, 24)
    np.testing.assert_allclose(mask[0, 0], want, atol=1e-6)


def test_missing_and_unreadable_videos(tmp_path: Path) -> None:
    with pytest.raises(LtxError) as info:
        read_control_video(tmp_path / "nope.mp4", 32, 32, 9)
    assert info.value.code is ErrorCode.MEDIA_UNREADABLE and "not found" in info.value.message
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(LtxError) as info:
        probe_control_video(junk)
    assert info.value.code is ErrorCode.MEDIA_UNREADABLE
