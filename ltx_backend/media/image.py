"""Conditioning images: decode, H.264 round trip, resize-and-crop, normalise, as ltx-pipelines prepares them."""

from __future__ import annotations

import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.video import ffmpeg_exe

CONDITIONING_CRF = 33  # LTX-2.0 to 2.3 were trained on images that went through H.264 at CRF 33


def _run(command: list[str], what: str) -> bytes:
    process = subprocess.run(command, capture_output=True, check=False)
    if process.returncode != 0:
        detail = process.stderr.decode(errors="replace").strip()[-300:]
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"{what}: {detail or 'ffmpeg failed'}",
            "Use a PNG, JPEG or WebP image that ffmpeg can read.",
        )
    return process.stdout


def _probe_size(path: Path) -> tuple[int, int]:
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
    except (RuntimeError, OSError, StopIteration) as exc:
        raise LtxError(
            ErrorCode.INVALID_PARAMS, f"Cannot read image {path}: {exc}", "Use a PNG, JPEG or WebP image."
        ) from exc
    return tuple(meta["size"])


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any image ffmpeg decodes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LtxError(ErrorCode.INVALID_PARAMS, f"Image not found: {path}", "Check the image path.", path=str(path))
    width, height = _probe_size(path)
    raw = _run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        f"Cannot decode image {path}",
    )
    return np.frombuffer(raw, np.uint8)[: width * height * 3].reshape(height, width, 3)


def h264_round_trip(image: np.ndarray, crf: int = CONDITIONING_CRF) -> np.ndarray:
    """Encode one frame with libx264 at `crf` and decode it again (ltx-pipelines ``preprocess``)."""
    if crf == 0:
        return image
    height, width = image.shape[:2]
    even = image[: height - height % 2, : width - width % 2]  # yuv420p needs even sizes
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "frame.mp4"
        process = subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
             "-s", f"{even.shape[1]}x{even.shape[0]}", "-i", "-", "-c:v", "libx264", "-crf", str(crf),
             "-pix_fmt", "yuv420p", str(clip)],
            input=np.ascontiguousarray(even).tobytes(), capture_output=True, check=False,
        )  # fmt: skip
        if process.returncode != 0:
            raise LtxError(ErrorCode.INTERNAL, "H.264 preprocessing of the image failed", "Report the image.")
        raw = _run(
            [ffmpeg_exe(), "-v", "error", "-i", str(clip), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            "Cannot decode the preprocessed image",
        )
    return np.frombuffer(raw, np.uint8)[: even.size].reshape(even.shape)


def _linear_axis(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch bilinear (align_corners=False) sampling along one axis: low/high indices and weights of high."""
    position = (np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5
    position = np.maximum(position, 0.0)
    low = np.minimum(np.floor(position).astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    return low, high, (position - low).astype(np.float32)


def resize_and_center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale to cover (height, width) keeping the aspect ratio (bilinear), then crop the centre. float32 0..255."""
    src_h, src_w = image.shape[:2]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    pixels = image.astype(np.float32)
    low, high, weight = _linear_axis(src_h, new_h)
    pixels = pixels[low] * (1 - weight)[:, None, None] + pixels[high] * weight[:, None, None]
    low, high, weight = _linear_axis(src_w, new_w)
    pixels = pixels[:, low] * (1 - weight)[None, :, None] + pixels[:, high] * weight[None, :, None]
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return pixels[top : top + height, left : left + width]


def conditioning_frame(path: str | Path, height: int, width: int, crf: int = CONDITIONING_CRF) -> np.ndarray:
    """An image as the VAE encoder takes it: (1, 3, 1, height, width) float32 in [-1, 1]."""
    pixels = resize_and_center_crop(h264_round_trip(read_image(path), crf), height, width)
    return (pixels / 127.5 - 1.0).transpose(2, 0, 1)[None, :, None].astype(np.float32)
