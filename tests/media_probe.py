"""ffprobe-style inspection of an MP4 with the ffmpeg binary of imageio-ffmpeg (no ffprobe ships with it)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltx_backend.media.video import ffmpeg_exe


@dataclass
class Probe:
    video_codec: str
    pixel_format: str
    width: int
    height: int
    fps: float
    frames: int
    duration: float
    audio_codec: str | None
    sample_rate: int | None
    channels: str | None


def probe(path: str | Path) -> Probe:
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    video = re.search(r"Video: (\w+).*?, (\w+)\(.*?(\d+)x(\d+).*?, ([\d.]+) fps", info)
    assert video, info
    audio = re.search(r"Audio: (\w+).*?, (\d+) Hz, (\w+)", info)
    hours, minutes, seconds = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info).groups()
    return Probe(
        video_codec=video[1],
        pixel_format=video[2],
        width=int(video[3]),
        height=int(video[4]),
        fps=float(video[5]),
        frames=len(frames(path)),
        duration=int(hours) * 3600 + int(minutes) * 60 + float(seconds),
        audio_codec=audio[1] if audio else None,
        sample_rate=int(audio[2]) if audio else None,
        channels=audio[3] if audio else None,
    )


def frames(path: str | Path) -> np.ndarray:
    """Every decoded frame, (frames, height, width, 3) uint8."""
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    width, height = map(int, re.search(r"Video: .*?(\d{2,})x(\d{2,})", info).groups())
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def write_image(path: str | Path, width: int = 32, height: int = 24) -> Path:
    """A small real PNG (a gradient): validation decodes every conditioning image."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), np.full_like(x, 128)], -1)
    command = [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-i", "-", str(path)]  # fmt: skip
    subprocess.run(command, input=pixels.astype(np.uint8).tobytes(), check=True)
    return Path(path)
