"""MP4 output through imageio-ffmpeg's ffmpeg binary: frames are streamed in as they are decoded.

H.264 (libx264, or the platform's hardware encoder: media/encoders.py; yuv420p, ``+faststart``) with an optional
AAC 48 kHz stereo track, muxed in the same pass (`VideoWriter` given a WAV) or afterwards (`mux_audio`, when the
audio is decoded while ffmpeg encodes: its AAC track encoded beside the video by `AacTrack`, then copied). The
file is written beside the target under a temporary name and renamed into place only when ffmpeg succeeds.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import mlx.core as mx
import numpy as np

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.atomic import atomic_output
from ltx_backend.media.encoders import VideoQuality, choose_encoder, encoder_arguments

POLL_SECONDS = 0.05  # how often a wait for ffmpeg checks for a cancel
PIECE_FRAMES = 8  # frames per piece handed to the encoder (`uint8_pieces`): one latent frame's worth
# Frames written but not yet in ffmpeg's pipe, at most (one write of any size is taken when none are waiting): a
# whole untiled 1280x704x257 video, so a decode's pieces are handed over without waiting for the encoder.
MAX_QUEUED_BYTES = 1 << 30
AAC_ARGUMENTS = ["-c:a", "aac", "-b:a", "192k", "-ar", "48000", "-ac", "2", "-shortest"]


def ffmpeg_exe() -> str:
    """The ffmpeg binary imageio-ffmpeg provides (or IMAGEIO_FFMPEG_EXE names), checked to be an executable file."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # missing package or a binary that does not run on this machine
        raise LtxError(
            ErrorCode.FFMPEG_MISSING,
            f"No usable ffmpeg: {exc}",
            "Install it with: pip install -U imageio-ffmpeg",
        ) from exc
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):  # imageio-ffmpeg returns IMAGEIO_FFMPEG_EXE as is
        configured = os.environ.get("IMAGEIO_FFMPEG_EXE")
        where = f" (from IMAGEIO_FFMPEG_EXE={configured})" if configured else ""
        raise LtxError(
            ErrorCode.FFMPEG_MISSING,
            f"ffmpeg {exe}{where} is not an executable file",
            "Unset IMAGEIO_FFMPEG_EXE or point it at an ffmpeg binary."
            if configured
            else "Install it with: pip install -U imageio-ffmpeg",
        )
    return exe


def _encoding_failed(path: Path, detail: str) -> LtxError:
    if "No space left" in detail or "Disk quota exceeded" in detail:
        return LtxError(
            ErrorCode.DISK_FULL,
            f"ffmpeg could not write {path.name}: {detail.strip().splitlines()[-1]}",
            f"Free disk space on the drive that holds {path.parent} (or choose another output folder).",
            path=str(path),
        )
    return LtxError(
        ErrorCode.OUTPUT_WRITE_FAILED,
        f"ffmpeg could not encode {path.name}: {detail.strip()[-500:] or 'it exited early'}",
        "Check free disk space and that the output directory is writable.",
        path=str(path),
    )


def _uint8_on_device(frames: mx.array) -> mx.array:
    """[-1, 1] float frames -> uint8 as ltx-core converts decoded frames (scale, clip, truncate), on the device: a
    quarter of the bytes cross to the host, and no single-threaded NumPy passes over ~140 M floats (768x512x121)."""
    return (mx.clip((frames + 1.0) / 2.0, 0.0, 1.0) * 255.0).astype(mx.uint8)


def to_uint8(frames: mx.array) -> np.ndarray:
    """[-1, 1] float32 frames -> uint8 on the host."""
    return np.array(_uint8_on_device(frames))


def uint8_pieces(frames: mx.array, frames_per_piece: int = PIECE_FRAMES) -> Iterator[np.ndarray]:
    """(T, H, W, 3) [-1, 1] float frames -> uint8 host arrays of up to `frames_per_piece` frames, in order: converted
    on the device in one pass, copied to the host a piece at a time, so that the encoder starts on the first piece
    while the rest are copied (an untiled decode is one chunk of the whole video)."""
    converted = _uint8_on_device(frames)
    mx.eval(converted)
    for start in range(0, converted.shape[0], frames_per_piece):
        yield np.array(converted[start : start + frames_per_piece])


class VideoWriter:
    """Context manager: ``write(frames)`` with (T, H, W, 3) uint8 chunks; the MP4 appears at `path` on success.

    ``atomic=False`` writes `path` directly: for a path in a job folder (media/outputs.py) that commits it.
    `check` (a cancel check) runs every 50 ms while waiting for ffmpeg to finish; if it raises, ffmpeg is killed."""

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        audio_wav: str | Path | None = None,
        quality: VideoQuality | None = None,
        atomic: bool = True,
        check: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.size = (width, height)
        self.fps = fps
        self.audio_wav = audio_wav
        self.quality = quality or VideoQuality()
        self.encoder: str | None = None  # chosen when ffmpeg starts (encoders.choose_encoder)
        self.check = check or (lambda: None)
        self.frames = 0
        self._output = atomic_output(self.path) if atomic else contextlib.nullcontext(self.path)
        self._process: subprocess.Popen | None = None
        # A feeder thread hands chunks to ffmpeg, so encoding chunk k overlaps decoding chunk k+1; `write` waits only
        # while MAX_QUEUED_BYTES are queued (counted under `_room`).
        self._chunks: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._queued_bytes = 0
        self._room = threading.Condition()
        self._feeder = threading.Thread(target=self._feed, name="ffmpeg-feeder", daemon=True)
        self._feed_error: OSError | None = None
        self._finished = False

    def __enter__(self) -> VideoWriter:
        temporary = self._output.__enter__()
        width, height = self.size
        ffmpeg = ffmpeg_exe()
        self.encoder = choose_encoder(ffmpeg, self.quality)
        command = [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{self.fps}", "-i", "-",
        ]  # fmt: skip
        if self.audio_wav is not None:
            command += ["-i", str(self.audio_wav)]
        command += [*encoder_arguments(self.encoder, self.quality), "-movflags", "+faststart"]
        if self.audio_wav is not None:
            command += AAC_ARGUMENTS
        command += ["-f", "mp4", str(temporary)]
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            self._output.__exit__(type(exc), exc, exc.__traceback__)
            hint = "Reinstall imageio-ffmpeg: pip install -U imageio-ffmpeg"
            raise LtxError(ErrorCode.FFMPEG_MISSING, f"ffmpeg does not run: {exc}", hint) from exc
        self._feeder.start()
        return self

    def _feed(self) -> None:
        while (data := self._chunks.get()) is not None:
            if self._feed_error is None:
                try:
                    self._process.stdin.write(data)
                except OSError as exc:  # BrokenPipeError: ffmpeg exited
                    self._feed_error = exc
            with self._room:
                self._queued_bytes -= data.nbytes
                self._room.notify()

    def _drain(self) -> None:
        self._chunks.put(None)
        self._feeder.join()

    def _finish(self) -> int:
        """Hand ffmpeg the end of input and wait for it to exit, checking `check` between waits."""
        self._chunks.put(None)
        while self._feeder.is_alive():
            self._feeder.join(POLL_SECONDS)
            self.check()
        if self._feed_error is not None:
            raise self._failure() from self._feed_error
        self._process.stdin.close()
        return _wait(self._process, self.check)

    def finish(self) -> None:
        """Wait for ffmpeg to encode every frame written so far and check it succeeded (leaving the ``with``
        block does this too). Call it to time the wait on its own, or (``atomic=False``) to use the file inside
        the block."""
        if not self._finished:
            self._finished = True
            if self._finish() != 0:  # ffmpeg's stderr is small (-loglevel error): read after it exits
                raise _encoding_failed(self.path, self._process.stderr.read().decode(errors="replace"))

    def write(self, frames: np.ndarray) -> None:
        """Queue (T, H, W, 3) uint8 frames; they go to ffmpeg without a copy, so do not modify them afterwards."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.size[1], self.size[0], 3):
            raise ValueError(f"expected (T, {self.size[1]}, {self.size[0]}, 3) uint8 frames, got {frames.shape}")
        if self._feed_error is not None:
            raise self._failure() from self._feed_error
        data = memoryview(np.ascontiguousarray(frames)).cast("B")  # no copy: ffmpeg reads the buffer
        with self._room:
            while self._queued_bytes and self._queued_bytes + data.nbytes > MAX_QUEUED_BYTES:
                self._room.wait(POLL_SECONDS)
                self.check()
            self._queued_bytes += data.nbytes
        self._chunks.put(data)
        self.frames += frames.shape[0]

    def _failure(self) -> LtxError:
        self._process.kill()
        detail = self._process.stderr.read().decode(errors="replace").strip() if self._process.stderr else ""
        return _encoding_failed(self.path, detail)

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        process = self._process
        try:
            if error is None:
                self.finish()
            else:
                process.kill()
                self._drain()
                process.wait()
        except BaseException as failure:
            if process.poll() is None:  # stopped while waiting for ffmpeg (a cancel): it goes too
                process.kill()
                if self._feeder.is_alive():
                    self._drain()
                process.wait()
            self._output.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._output.__exit__(kind, error, trace)


def _wait(process: subprocess.Popen, check: Callable[[], None]) -> int:
    """ffmpeg's exit status, running `check` every POLL_SECONDS while it works (a cancel raises out of it)."""
    while True:
        try:
            return process.wait(POLL_SECONDS)
        except subprocess.TimeoutExpired:
            check()


def _start(command: list[str]) -> subprocess.Popen:
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        hint = "Reinstall imageio-ffmpeg: pip install -U imageio-ffmpeg"
        raise LtxError(ErrorCode.FFMPEG_MISSING, f"ffmpeg does not run: {exc}", hint) from exc


def _complete(process: subprocess.Popen, target: Path, check: Callable[[], None]) -> None:
    """Wait for `process` (killed and reaped if `check` raises); a failure names `target`."""
    try:
        status = _wait(process, check)
    except BaseException:
        process.kill()
        process.wait()
        raise
    if status != 0:
        raise _encoding_failed(target, process.stderr.read().decode(errors="replace"))


class AacTrack:
    """`wav` encoded to an AAC track (``path``, an .m4a) by an ffmpeg of its own, from `__enter__` on: the engine
    starts it as soon as the audio is decoded, while x264 still encodes the video, so that the mux after both only
    copies the two streams. On a 2-core CPU the AAC encode of 5 s of audio takes 0.15 s of the 0.23 s that muxing
    while encoding it took; copying both streams takes 0.02 s. Leaving the block early kills the encoder."""

    def __init__(self, wav: Path, path: Path, check: Callable[[], None] | None = None) -> None:
        self.wav, self.path = Path(wav), Path(path)
        self.check = check or (lambda: None)
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> AacTrack:
        command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(self.wav), "-map", "0:a:0",
                   *AAC_ARGUMENTS, "-f", "mp4", str(self.path)]  # fmt: skip
        self._process = _start(command)
        return self

    def finish(self) -> None:
        """Wait for the encoder and check it succeeded."""
        _complete(self._process, self.path, self.check)

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._process.poll() is None:  # not waited for: the job failed or was cancelled before its mux
            self._process.kill()
            self._process.wait()


def mux_audio(video: Path, audio: Path | AacTrack, target: Path, check: Callable[[], None] | None = None) -> None:
    """Write `target`: the H.264 stream of `video` as is, with `audio`: a WAV encoded now as the same AAC track
    `VideoWriter` muxes in its single pass, or an `AacTrack` already encoded (waited for, then copied). ffmpeg is
    killed if `check` raises (a cancel); a failure names `target`."""
    check = check or (lambda: None)
    if isinstance(audio, AacTrack):
        audio.finish()
        track, audio_arguments = audio.path, ["-c:a", "copy", "-shortest"]
    else:
        track, audio_arguments = audio, AAC_ARGUMENTS
    command = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-i", str(track),
        "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *audio_arguments, "-movflags", "+faststart",
        "-f", "mp4", str(target),
    ]  # fmt: skip
    _complete(_start(command), target, check)
