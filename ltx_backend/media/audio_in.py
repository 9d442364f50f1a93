"""Audio input: a soundtrack read from an audio or video file, as ltx-pipelines' ``decode_audio_from_file``.

The reference decodes the first audio stream at its own sample rate and channel count to float32 in [-1, 1], from
``start`` seconds, and keeps ``round(max_duration * rate)`` samples. Here WAV / FLAC / OGG go through soundfile
(sample-exact seeking) and everything else (mp3, m4a/aac, the audio track of a video) through imageio-ffmpeg's
ffmpeg, decoded to float32 at the stream's own rate.

Channel mapping: the audio VAE encoder takes stereo; the reference feeds the file's channels straight in (a mono
file fails inside the encoder's first convolution). We map instead: mono is duplicated to both channels, and more
than two channels are downmixed to stereo by ffmpeg (its standard matrix, centre and surrounds folded in).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.probe import AudioStream, check_file, ffmpeg_error_line, probe, unreadable
from ltx_backend.media.video import ffmpeg_exe

SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
DECODE_TIMEOUT_S = 600


@dataclass(frozen=True)
class DecodedAudio:
    waveform: np.ndarray  # (channels, samples) float32 in [-1, 1]
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate


def read_audio(
    path: str | Path,
    start: float = 0.0,
    max_duration: float | None = None,
    min_duration: float = 0.0,
    channels: int | None = 2,
) -> DecodedAudio:
    """The soundtrack of `path` from `start` seconds, at most `max_duration` seconds of it, at its own sample rate.

    `channels`: map to this many channels (2 for the audio VAE encoder; None keeps the file's). Raises
    ``media_unreadable`` (no such file / not decodable), ``media_no_audio`` (no audio stream) and
    ``media_too_short`` (less than `min_duration` seconds from `start`)."""
    path = check_file(path)
    if start < 0 or (max_duration is not None and max_duration <= 0):
        raise LtxError(
            ErrorCode.INVALID_PARAMS,
            f"Audio window of {path}: start {start} s and duration {max_duration} s must be >= 0 and > 0",
            "Give a start time of 0 or more and a positive duration.",
            path=str(path),
        )
    decoded = _read_soundfile(path, start, max_duration) if path.suffix.lower() in SOUNDFILE_SUFFIXES else None
    if decoded is None or (channels is not None and decoded.waveform.shape[0] > max(channels, 2)):
        decoded = _read_ffmpeg(path, start, max_duration, channels)
    if channels is not None:
        decoded = DecodedAudio(map_channels(decoded.waveform, channels), decoded.sample_rate)
    available = decoded.duration
    if decoded.waveform.shape[-1] == 0 or available + 0.5 / decoded.sample_rate < min_duration:
        needed = f"{min_duration:.3f} s are needed" if min_duration > 0 else "some is needed"
        raise LtxError(
            ErrorCode.MEDIA_TOO_SHORT,
            f"{path} has {available:.3f} s of audio from {start:g} s; {needed}",
            "Use a longer audio file, an earlier start time, or a shorter video.",
            path=str(path),
            available_s=round(available, 3),
            needed_s=round(min_duration, 3),
        )
    return decoded


def map_channels(wave: np.ndarray, channels: int) -> np.ndarray:
    """Mono -> duplicated; stereo unchanged; several -> the first `channels` (ffmpeg already downmixed surround)."""
    if wave.shape[0] == channels:
        return wave
    if wave.shape[0] == 1:
        return np.repeat(wave, channels, axis=0)
    return wave[:channels]


def _read_soundfile(path: Path, start: float, max_duration: float | None) -> DecodedAudio | None:
    """Sample-exact read of a file libsndfile knows; None where it does not (then ffmpeg tries)."""
    try:
        with soundfile.SoundFile(str(path)) as sf:
            rate, total = sf.samplerate, sf.frames
            first = round(start * rate)
            if first >= total:
                return DecodedAudio(np.zeros((sf.channels, 0), np.float32), rate)
            sf.seek(first)
            count = -1 if max_duration is None else round(max_duration * rate)
            data = sf.read(frames=count, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None
    return DecodedAudio(np.ascontiguousarray(data.T), rate)


def _read_ffmpeg(path: Path, start: float, max_duration: float | None, channels: int | None) -> DecodedAudio:
    info = probe(path)
    if info.audio is None:
        raise LtxError(
            ErrorCode.MEDIA_NO_AUDIO,
            f"{path} has no audio stream",
            "Give a file with a soundtrack (or, for a video source, one recorded with sound).",
            path=str(path),
        )
    stream: AudioStream = info.audio
    out_channels = stream.channels if channels is None or stream.channels <= 2 else channels
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]
    command += ["-ss", f"{start:.6f}"] if start > 0 else []
    command += ["-i", str(path)]
    command += ["-t", f"{max_duration:.6f}"] if max_duration is not None else []
    command += ["-map", "0:a:0", "-vn", "-ac", str(out_channels), "-ar", str(stream.sample_rate)]
    command += ["-f", "f32le", "-acodec", "pcm_f32le", "-"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=DECODE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise unreadable(path, f"decoding its audio took over {DECODE_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise unreadable(path, ffmpeg_error_line(done.stderr.decode(errors="replace")))
    samples = np.frombuffer(done.stdout, dtype="<f4")
    wave = samples[: samples.size - samples.size % out_channels].reshape(-1, out_channels).T
    if max_duration is not None:  # the codec's frames may run past the window (as the reference trims)
        wave = wave[:, : round(max_duration * stream.sample_rate)]
    return DecodedAudio(np.ascontiguousarray(wave, dtype=np.float32), stream.sample_rate)
