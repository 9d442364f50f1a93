"""Conditioning images: decode, H.264 round trip, resize-and-crop, normalise, as ltx-pipelines prepares them."""

from __future__ import annotations

import math
import os
import re
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


_CONTEXT = re.compile(r"^(\[[^\]]*\]\s*)+")  # ffmpeg's "[png @ 0x55e8a187a900] " prefixes
_PPM_HEADER = re.compile(rb"^P6\s+(\d+)\s+(\d+)\s+255\s")


def _reason(stderr: bytes, path: Path) -> str:
    """ffmpeg's first error line, without its context prefixes and the path: one line, never its build banner."""
    for line in stderr.decode(errors="replace").splitlines():
        line = _CONTEXT.sub("", line.strip()).replace(f"{path}: ", "").strip()
        if line:
            return f"not a decodable image ({line[:160]})"
    return "not a decodable image"


def _unreadable(path: Path, reason: str, field: str | None, hint: str = "Use a PNG, JPEG or WebP image.") -> LtxError:
    details = {"path": str(path)} | ({"field": field} if field else {})
    return LtxError(ErrorCode.IMAGE_UNREADABLE, f"Cannot read image {path}: {reason}", hint, **details)


def read_image(path: str | Path, field: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any image ffmpeg decodes (its first frame); `image_unreadable` naming `field` if not."""
    path = Path(path).expanduser()
    if not os.path.isfile(path):
        missing = not os.path.exists(path)
        hint = "Check the image path." if missing else "Give the path of an image file."
        raise _unreadable(path, "no such file" if missing else "not a regular file", field, hint)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _unreadable(path, exc.strerror or str(exc), field, "Check the file's permissions.") from exc
    # One ffmpeg run gives size and pixels: a PPM (``P6 <width> <height> 255`` then RGB bytes).
    command = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", str(path), "-frames:v", "1",
               "-f", "image2pipe", "-c:v", "ppm", "-"]  # fmt: skip
    try:
        process = subprocess.run(command, capture_output=True, check=False, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise _unreadable(path, "ffmpeg took more than 60 s to decode it", field) from exc
    header = _PPM_HEADER.match(process.stdout)
    if process.returncode != 0 or header is None:
        raise _unreadable(path, _reason(process.stderr, path), field)
    width, height = int(header[1]), int(header[2])
    pixels = process.stdout[header.end() :]
    if len(pixels) < width * height * 3:
        raise _unreadable(path, "the decoded image is truncated", field)
    return np.frombuffer(pixels, np.uint8)[: width * height * 3].reshape(height, width, 3)


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
    """Scale to cover (height, width) keeping the aspect ratio (bilinear), then crop the centre. float32 0..255.

    Only the rows and columns the crop keeps are interpolated (the same values as resizing all, then cropping), and
    an image of the target size is only converted: each of its samples has weight 0 on its neighbour."""
    src_h, src_w = image.shape[:2]
    pixels = image.astype(np.float32)
    if (src_h, src_w) == (height, width):
        return pixels
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    low, high, weight = (a[top : top + height] for a in _linear_axis(src_h, new_h))
    pixels = pixels[low] * (1 - weight)[:, None, None] + pixels[high] * weight[:, None, None]
    low, high, weight = (a[left : left + width] for a in _linear_axis(src_w, new_w))
    return pixels[:, low] * (1 - weight)[:, None] + pixels[:, high] * weight[:, None]


def conditioning_frame(path: str | Path, height: int, width: int, crf: int = CONDITIONING_CRF) -> np.ndarray:
    """An image as the VAE encoder takes it: (1, 3, 1, height, width) float32 in [-1, 1]."""
    pixels = resize_and_center_crop(h264_round_trip(read_image(path), crf), height, width)
    return (pixels / 127.5 - 1.0).transpose(2, 0, 1)[None, :, None].astype(np.float32)
