"""The streaming MP4 writer: frames in chunks, nothing at the target unless ffmpeg finished."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from media_probe import probe

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media import video as video_module
from ltx_backend.media.audio import write_wav
from ltx_backend.media.video import AacTrack, VideoWriter, ffmpeg_exe, mux_audio, to_uint8, uint8_pieces


def chunks(count: int, frames: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (frames, 64, 96, 3), dtype=np.uint8) for _ in range(count)]


def test_chunks_become_one_video(tmp_path: Path) -> None:
    target = tmp_path / "v.mp4"
    with VideoWriter(target, 96, 64, 24) as writer:
        for chunk in chunks(5):
            writer.write(chunk)
    info = probe(target)
    assert (info.width, info.height, info.frames, info.audio_codec) == (96, 64, 40, None)
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private 0600


def test_an_error_while_writing_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "v.mp4", 96, 64, 24) as writer:
        writer.write(chunks(1)[0])
        raise RuntimeError("decoder failed")
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(LtxError) as error, VideoWriter(tmp_path / "v.mp4", 96, 64, 24, tmp_path / "no.wav") as writer:
        for chunk in chunks(40):  # ffmpeg exits at once (no such audio file): the pipe breaks
            writer.write(chunk)
    assert error.value.code is ErrorCode.OUTPUT_WRITE_FAILED and "no.wav" in error.value.message
    assert list(tmp_path.iterdir()) == []


def test_frames_convert_to_uint8_as_ltx_core_does() -> None:
    """Scale [-1, 1] to [0, 255], clip, truncate: the device conversion equals ltx-core's float32 formula."""
    frames = np.random.default_rng(0).uniform(-1.3, 1.3, (2, 32, 48, 3)).astype(np.float32)
    frames[0, 0, 0] = [-1.0, 0.0, 1.0]
    expected = (np.clip((frames + 1.0) / 2.0, 0.0, 1.0) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8(mx.array(frames)), expected)
    assert list(to_uint8(mx.array(frames[:1, :1, :1]))[0, 0, 0]) == [0, 127, 255]


def test_pieces_are_the_conversion_cut_in_order() -> None:
    frames = mx.array(np.random.default_rng(1).uniform(-1.2, 1.2, (19, 8, 12, 3)).astype(np.float32))
    pieces = list(uint8_pieces(frames, frames_per_piece=8))
    assert [len(piece) for piece in pieces] == [8, 8, 3]
    np.testing.assert_array_equal(np.concatenate(pieces), to_uint8(frames))


class Stop(Exception):
    pass


def test_a_write_waits_while_the_queue_is_full_and_checks_for_a_cancel(tmp_path: Path, monkeypatch) -> None:
    """Past MAX_QUEUED_BYTES a write waits for ffmpeg to take frames, checking for a cancel as it waits."""
    frames = chunks(4)
    monkeypatch.setattr(video_module, "MAX_QUEUED_BYTES", 2 * frames[0].nbytes)
    taken, checks = threading.Event(), []

    def check() -> None:
        checks.append(len(checks))
        if len(checks) == 3:
            taken.set()  # let the stalled feeder go on: it meets the killed ffmpeg
            raise Stop

    with pytest.raises(Stop), VideoWriter(tmp_path / "v.mp4", 96, 64, 24, check=check) as writer:
        pipe = writer._process.stdin

        class Stalled:  # an encoder that takes nothing until the cancel
            def write(self, data) -> None:
                taken.wait()
                pipe.write(data)

            def close(self) -> None:
                pipe.close()

        writer._process.stdin = Stalled()
        for chunk in frames:  # the 1st is in the feeder's hands, the 2nd waits in the queue, the 3rd must wait
            writer.write(chunk)
    assert len(checks) == 3 and writer.frames == 16
    assert list(tmp_path.iterdir()) == []


def test_default_quality_is_libx264_crf18_medium_and_options_change_the_stream(tmp_path: Path) -> None:
    """The default writes what it always wrote (libx264, CRF 18, its default preset); CRF and preset are applied."""
    import subprocess

    from ltx_backend.media.encoders import VideoQuality, encoder_arguments
    from ltx_backend.media.video import ffmpeg_exe

    frames = chunks(2)
    outputs = {}
    for name, quality in {
        "default": None,
        "crf30": VideoQuality("libx264", 30),
        "fast": VideoQuality(preset="ultrafast"),
    }.items():
        with VideoWriter(tmp_path / f"{name}.mp4", 96, 64, 24, quality=quality) as writer:
            for chunk in frames:
                writer.write(chunk)
        outputs[name] = (tmp_path / f"{name}.mp4").read_bytes()
    # The bytes the previous writer produced: libx264 with -crf 18 and no preset argument.
    raw = tmp_path / "raw.rgb"
    raw.write_bytes(b"".join(chunk.tobytes() for chunk in frames))
    legacy = tmp_path / "legacy.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "96x64",
         "-r", "24.0", "-i", str(raw), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18",
         "-movflags", "+faststart", "-f", "mp4", str(legacy)],
        check=True,
    )  # fmt: skip
    assert outputs["default"] == legacy.read_bytes()
    assert len(outputs["crf30"]) < len(outputs["default"])
    assert b"crf=30.0" in outputs["crf30"] and b"subme=0" in outputs["fast"]  # x264's settings string
    assert encoder_arguments("nvenc", VideoQuality(preset="veryslow"))[:4] == ["-c:v", "h264_nvenc", "-preset", "p7"]


def test_a_hardware_encoder_that_does_not_work_here_falls_back_to_libx264(tmp_path: Path, monkeypatch) -> None:
    import sys

    from ltx_backend.media import encoders
    from ltx_backend.media.encoders import VideoQuality, choose_encoder
    from ltx_backend.media.video import ffmpeg_exe

    monkeypatch.setattr(encoders, "_works", lambda ffmpeg, encoder: False)  # listed, but no device or driver
    assert choose_encoder(ffmpeg_exe(), VideoQuality("nvenc")) == "libx264"
    assert choose_encoder(ffmpeg_exe(), VideoQuality("auto")) == "libx264"
    monkeypatch.setattr(encoders, "_works", lambda ffmpeg, encoder: encoder == "nvenc")
    assert choose_encoder(ffmpeg_exe(), VideoQuality("libx264")) == "libx264"
    assert choose_encoder(ffmpeg_exe(), VideoQuality("nvenc")) == "nvenc"
    monkeypatch.undo()
    if sys.platform != "darwin":  # a real probe: VideoToolbox exists on macOS only
        with VideoWriter(tmp_path / "v.mp4", 96, 64, 24, quality=VideoQuality("videotoolbox")) as writer:
            writer.write(chunks(1)[0])
        assert writer.encoder == "libx264" and probe(tmp_path / "v.mp4").frames == 8


def _video_stream_md5(path: Path) -> str:
    """The MD5 of the file's H.264 packets, as ffmpeg's md5 muxer reports them (container bytes aside)."""
    command = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "md5", "-"]
    return subprocess.run(command, capture_output=True, check=True, text=True).stdout.strip()


def _audio_stream_md5(path: Path) -> str:
    command = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy", "-f", "md5", "-"]
    return subprocess.run(command, capture_output=True, check=True, text=True).stdout.strip()


def _tone(folder: Path, seconds: float) -> Path:
    t = np.arange(int(48000 * seconds)) / 48000
    wave = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    return write_wav(folder / "a.wav", wave, 48000)


def test_audio_muxed_afterwards_keeps_the_video_stream_as_encoded(tmp_path: Path) -> None:
    """The engine encodes the video while it decodes the audio, then muxes: the H.264 packets are copied as they
    were encoded, and the track is the same AAC 48 kHz stereo as the single pass writes, cut to the video."""
    with VideoWriter(tmp_path / "v.h264.mp4", 96, 64, 24, atomic=False) as writer:
        for chunk in chunks(3):
            writer.write(chunk)
        writer.finish()  # non-atomic: the file is complete inside the block; leaving it does not wait again
        assert probe(tmp_path / "v.h264.mp4").frames == 24
    mux_audio(tmp_path / "v.h264.mp4", _tone(tmp_path, 1.5), tmp_path / "v.mp4")
    info = probe(tmp_path / "v.mp4")
    assert (info.video_codec, info.frames, info.audio_codec, info.sample_rate, info.channels) == (
        "h264", 24, "aac", 48000, "stereo",
    )  # fmt: skip
    assert info.duration == pytest.approx(1.0, abs=0.06)  # -shortest: the longer audio is cut to the video
    assert _video_stream_md5(tmp_path / "v.mp4") == _video_stream_md5(tmp_path / "v.h264.mp4")


def test_an_aac_track_encoded_beside_the_video_is_copied_into_the_same_mp4(tmp_path: Path) -> None:
    """The engine encodes the AAC track while x264 encodes the video (`AacTrack`), then copies both: the file is the
    one the encode-while-muxing path writes, stream for stream."""
    with VideoWriter(tmp_path / "v.h264.mp4", 96, 64, 24, atomic=False) as writer:
        for chunk in chunks(3):
            writer.write(chunk)
        wav = _tone(tmp_path, 1.0)
        with AacTrack(wav, tmp_path / "a.m4a") as track:
            writer.finish()
            mux_audio(tmp_path / "v.h264.mp4", track, tmp_path / "copied.mp4")
    mux_audio(tmp_path / "v.h264.mp4", wav, tmp_path / "encoded.mp4")
    copied, encoded = probe(tmp_path / "copied.mp4"), probe(tmp_path / "encoded.mp4")
    assert (copied.video_codec, copied.frames, copied.audio_codec, copied.sample_rate, copied.channels) == (
        "h264", 24, "aac", 48000, "stereo",
    )  # fmt: skip
    assert copied.duration == pytest.approx(encoded.duration, abs=0.03)
    assert _video_stream_md5(tmp_path / "copied.mp4") == _video_stream_md5(tmp_path / "v.h264.mp4")
    assert _audio_stream_md5(tmp_path / "copied.mp4") == _audio_stream_md5(tmp_path / "encoded.mp4")


def test_an_aac_track_left_early_is_killed(tmp_path: Path, monkeypatch) -> None:
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(real_popen(*a, **k)) or started[-1])
    slow = tmp_path / "fifo.wav"
    os.mkfifo(slow)  # ffmpeg blocks reading it: the encoder is still running when the job fails
    with pytest.raises(KeyboardInterrupt), AacTrack(slow, tmp_path / "a.m4a"):
        raise KeyboardInterrupt
    assert started and started[0].returncode is not None  # killed and reaped, not left running


def test_a_mux_that_fails_names_its_output(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "v.h264.mp4", 96, 64, 24) as writer:
        writer.write(chunks(1)[0])
    with pytest.raises(LtxError) as error:
        mux_audio(tmp_path / "v.h264.mp4", tmp_path / "missing.wav", tmp_path / "v.mp4")
    assert error.value.code is ErrorCode.OUTPUT_WRITE_FAILED and error.value.details["path"] == str(tmp_path / "v.mp4")


def test_a_cancel_during_the_mux_stops_ffmpeg(tmp_path: Path, monkeypatch) -> None:
    with VideoWriter(tmp_path / "v.h264.mp4", 96, 64, 24) as writer:
        writer.write(chunks(1)[0])
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def cancel() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess, "Popen", popen)
    slow = tmp_path / "fifo.wav"
    os.mkfifo(slow)  # ffmpeg blocks reading it: the mux is still running when the cancel comes
    with pytest.raises(KeyboardInterrupt):
        mux_audio(tmp_path / "v.h264.mp4", slow, tmp_path / "v.mp4", cancel)
    assert started and started[0].returncode is not None  # killed and reaped, not left running
