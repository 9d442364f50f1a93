"""What an input media file holds (streams, rates, duration), read from ffmpeg's own description of it.

imageio-ffmpeg ships ffmpeg without ffprobe, so the file is opened with ``ffmpeg -i`` (no output) and the stream
lines of its report are parsed. Every failure is an `LtxError` naming the path with a one-line reason; ffmpeg's
banner and stream dump never reach the user.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.video import ffmpeg_exe

PROBE_TIMEOUT_S = 60
# ffmpeg's channel layout names -> channel count (the layouts a file can declare; "N channels" is parsed too)
LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7}
LAYOUT_CHANNELS |= {"7.1": 8, "5.0(side)": 5, "5.1(side)": 6, "7.1(wide)": 8, "downmix": 2}


@dataclass(frozen=True)
class VideoStream:
    width: int
    height: int
    fps: float


@dataclass(frozen=True)
class AudioStream:
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    duration: float | None  # seconds; None where the container does not say
    video: VideoStream | None
    audio: AudioStream | None


def unreadable(path: Path, reason: str) -> LtxError:
    return LtxError(
        ErrorCode.MEDIA_UNREADABLE,
        f"Cannot read {path}: {reason}",
        "Check the path: inputs are audio (wav, flac, mp3, m4a, ...) or video (mp4, mov, ...) files ffmpeg decodes.",
        path=str(path),
    )


def ffmpeg_error_line(stderr: str) -> str:
    """The last line of ffmpeg's report that says what went wrong (its banner and stream dump left out)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("ffmpeg version", "built with", "configuration:", "lib", "Input #", "Stream #")):
            return line.split(": ", 1)[-1] if line.startswith(str(Path("/"))) else line
    return "ffmpeg could not decode it"


def check_file(path: str | Path) -> Path:
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise unreadable(path, "no such file" if not path.exists() else "not a regular file")
    return path


def probe(path: str | Path) -> MediaInfo:
    path = check_file(path)
    try:
        done = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise unreadable(path, f"ffmpeg took over {PROBE_TIMEOUT_S} s to open it") from exc
    report = done.stderr
    if "Input #0" not in report:  # ffmpeg could not open it as media at all
        raise unreadable(path, ffmpeg_error_line(report))
    return MediaInfo(path, _duration(report), _video_stream(report), _audio_stream(report))


def _duration(report: str) -> float | None:
    match = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", report)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _video_stream(report: str) -> VideoStream | None:
    for line in report.splitlines():
        if "Stream #" in line and "Video:" in line and "attached pic" not in line:
            size = re.search(r", (\d{2,})x(\d{2,})", line)
            fps = re.search(r", (\d+(?:\.\d+)?)(k?) fps", line) or re.search(r", (\d+(?:\.\d+)?)(k?) tbr", line)
            if size and fps:
                rate = float(fps.group(1)) * (1000 if fps.group(2) else 1)
                return VideoStream(int(size.group(1)), int(size.group(2)), rate)
    return None


def _audio_stream(report: str) -> AudioStream | None:
    for line in report.splitlines():
        if "Stream #" in line and "Audio:" in line:
            rate = re.search(r", (\d+) Hz, ([^,]+)", line)
            if rate:
                layout = rate.group(2).strip()
                count = re.match(r"(\d+) channels", layout)
                channels = int(count.group(1)) if count else LAYOUT_CHANNELS.get(layout.split(" ")[0], 2)
                return AudioStream(int(rate.group(1)), channels)
    return None
