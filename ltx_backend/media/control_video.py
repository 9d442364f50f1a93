"""Control videos for IC-LoRAs (depth, canny, pose, ...): decoded, resized and cropped as ltx-pipelines loads them.

ltx-pipelines ``load_video_conditioning``: at most `frame_cap` frames (the output's frame count), each scaled to cover
the reference size keeping its aspect ratio (bilinear), centre-cropped, and mapped to [-1, 1]. The video VAE encodes
``1 + 8k`` frames (ltx-core's encoder crops the rest from the end), so the frames are cropped the same way here, where
a too-short video can still be reported before anything is loaded. Decoding goes through imageio-ffmpeg's ffmpeg.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.video_in import encoder_input

FRAMES_PER_LATENT = 8  # the video VAE's temporal compression: it encodes 1 + 8k frames
_HINT = "Use a video file ffmpeg can decode (MP4, MOV, WebM, ...)."


@dataclass(frozen=True)
class ControlVideoInfo:
    path: Path
    width: int
    height: int
    fps: float
    frames: int  # decodable frames (counted by ffmpeg)


def _reader(path: Path):
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as exc:
        raise LtxError(
            ErrorCode.MEDIA_UNREADABLE, f"Cannot read control video {path}: {exc}", _HINT, path=str(path)
        ) from exc
    return reader, meta


def _check_exists(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise LtxError(
            ErrorCode.MEDIA_UNREADABLE,
            f"Control video not found: {path}",
            "Check the control video path.",
            path=str(path),
        )
    return path


def probe_control_video(path: str | Path) -> ControlVideoInfo:
    """Size, frame rate and frame count, for validating a request before any model is loaded."""
    import imageio_ffmpeg

    path = _check_exists(path)
    reader, meta = _reader(path)
    reader.close()
    try:
        frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError) as exc:
        raise LtxError(
            ErrorCode.MEDIA_UNREADABLE, f"Cannot count the frames of {path}: {exc}", _HINT, path=str(path)
        ) from exc
    width, height = meta["size"]
    if frames < 1:
        raise LtxError(ErrorCode.MEDIA_UNREADABLE, f"Control video {path} has no frames", _HINT, path=str(path))
    return ControlVideoInfo(path, int(width), int(height), float(meta.get("fps") or 0.0), int(frames))


def encodable_frames(frames: int) -> int:
    """The most frames the video VAE encodes out of `frames`: 1 + 8k."""
    return (frames - 1) // FRAMES_PER_LATENT * FRAMES_PER_LATENT + 1 if frames >= 1 else 0


def read_control_video(path: str | Path, height: int, width: int, frame_cap: int) -> np.ndarray:
    """(1, 3, F, height, width) float32 in [-1, 1]: the first ``min(frames, frame_cap)`` frames cropped to 1 + 8k."""
    path = _check_exists(path)
    if frame_cap < 1:
        raise LtxError(ErrorCode.INVALID_PARAMS, f"frame_cap must be at least 1, not {frame_cap}", "")
    reader, meta = _reader(path)
    src_w, src_h = meta["size"]
    frames = []
    try:
        for raw in reader:
            frames.append(np.frombuffer(raw, np.uint8)[: src_w * src_h * 3].reshape(src_h, src_w, 3))
            if len(frames) == frame_cap:
                break
    finally:
        reader.close()
    if not frames:
        raise LtxError(ErrorCode.MEDIA_UNREADABLE, f"Control video {path} has no frames", _HINT, path=str(path))
    return encoder_input(frames[: encodable_frames(len(frames))], height, width)


def read_mask_video(path: str | Path, height: int, width: int, frame_cap: int) -> np.ndarray:
    """A grayscale attention-mask video as (1, 1, F, height, width) in [0, 1] (ltx-pipelines ``_load_mask_video``:
    the channel mean of the loaded frames, mapped back from [-1, 1])."""
    video = read_control_video(path, height, width, frame_cap)
    return np.clip((video.mean(axis=1, keepdims=True) + 1.0) / 2.0, 0.0, 1.0)
