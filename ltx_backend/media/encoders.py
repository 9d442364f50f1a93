"""Which H.264 encoder writes the MP4, and its ffmpeg arguments.

libx264 is always there (imageio-ffmpeg bundles it). Where the bundled ffmpeg also has the platform's hardware
encoder and the hardware answers (VideoToolbox on macOS; NVENC on NVIDIA cards that have the engine, which the
H100/H200 do not), ``auto`` uses it: it takes the encode off the CPU. A hardware encoder is used only after a
one-frame probe succeeds in this process, so a listed but unusable one (no device, a driver too old) falls back
to libx264 instead of failing the job. The output stays H.264 yuv420p.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from dataclasses import dataclass

ENCODERS = ("auto", "libx264", "videotoolbox", "nvenc")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_CRF = 18  # visually lossless for most content
DEFAULT_PRESET = "medium"  # libx264's own default
_FFMPEG_NAMES = {"libx264": "libx264", "videotoolbox": "h264_videotoolbox", "nvenc": "h264_nvenc"}
_HARDWARE_BY_PLATFORM = {"darwin": ("videotoolbox",), "linux": ("nvenc",), "win32": ("nvenc",)}


@dataclass(frozen=True)
class VideoQuality:
    """What the user asks for: an encoder (or ``auto``), a constant-quality level as x264's CRF (0 = lossless,
    51 = worst) and x264's speed preset. Hardware encoders get the nearest equivalent of both."""

    encoder: str = "auto"
    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET


def _nvenc_preset(preset: str) -> str:
    """x264 ultrafast..veryslow -> NVENC p1 (fastest)..p7 (best)."""
    return f"p{min(7, 1 + PRESETS.index(preset) * 7 // len(PRESETS))}"


def encoder_arguments(encoder: str, quality: VideoQuality) -> list[str]:
    """ffmpeg output arguments for `encoder` (libx264, videotoolbox or nvenc) at `quality`."""
    if encoder == "libx264":
        return ["-c:v", "libx264", "-preset", quality.preset, "-crf", str(quality.crf), "-pix_fmt", "yuv420p"]
    if encoder == "videotoolbox":
        # -q:v is VideoToolbox's constant quality, 1..100 (higher is better); CRF 18 maps to 64.
        q = max(1, min(100, round(100 - quality.crf * 2)))
        return ["-c:v", "h264_videotoolbox", "-q:v", str(q), "-pix_fmt", "yuv420p"]
    if encoder == "nvenc":
        preset = _nvenc_preset(quality.preset)
        return ["-c:v", "h264_nvenc", "-preset", preset, "-rc", "vbr", "-cq", str(quality.crf), "-pix_fmt", "yuv420p"]
    raise ValueError(f"unknown encoder {encoder!r}")


@functools.cache
def _works(ffmpeg: str, encoder: str) -> bool:
    """Whether `encoder` encodes one small frame here (listed is not enough: the device or driver may be missing)."""
    command = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "color=black:s=256x256:d=0.04",
        *encoder_arguments(encoder, VideoQuality()), "-frames:v", "1", "-f", "null", "-",
    ]  # fmt: skip
    try:
        return subprocess.run(command, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose_encoder(ffmpeg: str, quality: VideoQuality) -> str:
    """The encoder to use: the one asked for, or for ``auto`` this platform's working hardware encoder, else libx264.

    An explicitly requested hardware encoder that does not work here falls back to libx264 as well (the caller
    warns): the video is still written."""
    if quality.encoder == "libx264":
        return "libx264"
    candidates = _HARDWARE_BY_PLATFORM.get(sys.platform, ()) if quality.encoder == "auto" else (quality.encoder,)
    for encoder in candidates:
        if _works(ffmpeg, encoder):
            return encoder
    return "libx264"
