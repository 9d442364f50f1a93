"""Video input: a source clip's frames, rate, duration and soundtrack (retake and extend read one).

Frames are decoded by imageio-ffmpeg's ffmpeg to RGB24, in stream order, at most `frame_cap` of them (as
ltx-pipelines' ``decode_video_from_file``); `encoder_input` then resizes / centre-crops each frame as the reference's
``load_video_conditioning`` does and scales it to [-1, 1] for the video VAE encoder.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.audio_in import DecodedAudio, read_audio
from ltx_backend.media.image import resize_and_center_crop
from ltx_backend.media.probe import MediaInfo, ffmpeg_error_line, probe, unreadable
from ltx_backend.media.video import ffmpeg_exe

DECODE_TIMEOUT_S = 600


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # (F, H, W, 3) uint8
    fps: float
    audio: DecodedAudio | None  # the soundtrack over the same span (stereo, its own sample rate), if it has one

    @property
    def duration(self) -> float:
        return self.frames.shape[0] / self.fps


def video_info(path: str | Path) -> MediaInfo:
    """Probe a video file; ``media_unreadable`` when it has no video stream."""
    info = probe(path)
    if info.video is None:
        raise unreadable(info.path, "it has no video stream")
    return info


def frame_count(path: str | Path) -> int:
    """The exact number of frames of the first video stream, counted by remuxing it to nowhere (no decode: fast, so
    a request can be validated with it before any work)."""
    info = video_info(path)
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(info.path), "-map", "0:v:0", "-c", "copy"]
    try:
        done = subprocess.run([*command, "-f", "null", "-"], capture_output=True, timeout=DECODE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise unreadable(info.path, f"reading its video took over {DECODE_TIMEOUT_S} s") from exc
    report = done.stderr.decode(errors="replace")
    counts = re.findall(r"frame=\s*(\d+)", report)
    if done.returncode != 0 or not counts:
        raise unreadable(info.path, ffmpeg_error_line(report))
    return int(counts[-1])


def read_video(
    path: str | Path, frame_cap: int | None = None, min_frames: int = 1, with_audio: bool = True
) -> DecodedVideo:
    """Decode up to `frame_cap` frames (all if None) and, with `with_audio`, the soundtrack over those frames."""
    info = video_info(path)
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(info.path)]
    command += ["-map", "0:v:0", "-an", "-fps_mode", "passthrough"]
    command += ["-frames:v", str(frame_cap)] if frame_cap else []
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=DECODE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise unreadable(info.path, f"decoding its video took over {DECODE_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise unreadable(info.path, ffmpeg_error_line(done.stderr.decode(errors="replace")))
    width, height = info.video.width, info.video.height
    frame_bytes = width * height * 3
    count = len(done.stdout) // frame_bytes
    frames = np.frombuffer(done.stdout[: count * frame_bytes], np.uint8).reshape(count, height, width, 3)
    if count < min_frames:
        raise LtxError(
            ErrorCode.MEDIA_TOO_SHORT,
            f"{info.path} has {count} video frames; {min_frames} are needed",
            "Use a longer source clip.",
            path=str(info.path),
            available_frames=count,
            needed_frames=min_frames,
        )
    audio = None
    if with_audio and info.audio is not None:
        audio = read_audio(info.path, 0.0, count / info.video.fps)
    return DecodedVideo(frames, info.video.fps, audio)


def encoder_input(frames: np.ndarray | Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """(F, H, W, 3) uint8 (an array or a list of frames) -> (1, 3, F, height, width) float32 in [-1, 1], each frame
    resized to cover and centre cropped (ltx-pipelines ``load_video_conditioning``)."""
    out = np.empty((1, 3, len(frames), height, width), np.float32)
    for index, frame in enumerate(frames):  # frame by frame: each float copy stays in cache-sized pieces
        pixels = resize_and_center_crop(frame, height, width)
        pixels /= 127.5
        pixels -= 1.0
        out[0, :, index] = pixels.transpose(2, 0, 1)
    return out
