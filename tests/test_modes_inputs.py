"""Mode inputs: reading audio / video files, encoding a source clip, and the extend layout's invariants.

Media are generated per test with imageio-ffmpeg's ffmpeg (lavfi sources) and soundfile; models are the tiny
random-weight fixtures (video VAE `tests/fixtures/video/v23_split`, audio VAE `tests/fixtures/audio/ltx23_official`,
transformer `tests/fixtures/transformer/t20_official`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.media.audio_in import read_audio
from ltx_backend.media.image import _linear_axis
from ltx_backend.media.video import ffmpeg_exe
from ltx_backend.media.video_in import encoder_input, read_video
from ltx_backend.pipeline import modes
from ltx_backend.pipeline import sampler as s
from ltx_backend.pipeline.schedules import DISTILLED_STAGE_1
from ltx_backend.pipeline.source import encode_source, read_soundtrack, usable_frames
from ltx_backend.weights.audio import load_audio_encoder
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.transformer import load_transformer
from ltx_backend.weights.video import load_video_encoder

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def cpu_stream() -> Iterator[None]:
    with mx.stream(mx.cpu):
        yield


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


def clip(path: Path, frames: int, audio: bool = True, fps: int = 24) -> Path:
    """An H.264 clip of `frames` frames of 96 x 64, with a 440 Hz stereo AAC track at 44.1 kHz if `audio`."""
    video = ["-f", "lavfi", "-i", f"testsrc=size=96x64:rate={fps}"]
    sound = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-ac", "2", "-c:a", "aac"] if audio else []
    ffmpeg(*video, *sound, "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", str(path))
    return path


def wav(path: Path, channels: int = 2, rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, (int(rate * seconds), channels)).astype(np.float32)
    soundfile.write(path, wave, rate, subtype="FLOAT" if path.suffix == ".wav" else "PCM_16")
    return wave.T


# ------------------------------------------------------------------------------------------------------- audio


def test_wav_window_is_sample_exact(tmp_path: Path) -> None:
    wave = wav(tmp_path / "a.wav")
    got = read_audio(tmp_path / "a.wav", start=0.25, max_duration=0.5)
    assert got.sample_rate == 16000
    np.testing.assert_array_equal(got.waveform, wave[:, 4000:12000])


def test_mono_is_mapped_to_stereo(tmp_path: Path) -> None:
    wave = wav(tmp_path / "m.flac", channels=1)
    got = read_audio(tmp_path / "m.flac")
    assert got.waveform.shape == (2, 16000)
    np.testing.assert_allclose(got.waveform[0], wave[0], atol=1e-4)  # FLAC stores 16 bits here
    np.testing.assert_array_equal(got.waveform[0], got.waveform[1])
    assert read_audio(tmp_path / "m.flac", channels=None).waveform.shape == (1, 16000)


def test_compressed_audio_through_ffmpeg(tmp_path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "1", "-ac", "1", str(tmp_path / "a.mp3"))
    got = read_audio(tmp_path / "a.mp3", start=0.25, max_duration=0.5)
    assert got.sample_rate == 44100 and got.waveform.shape == (2, 22050)
    assert 0.05 < float(np.abs(got.waveform).max()) <= 1.0


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda d: d / "missing.wav", ErrorCode.MEDIA_UNREADABLE),
        (lambda d: (d / "notes.mp3").write_text("not audio") and d / "notes.mp3", ErrorCode.MEDIA_UNREADABLE),
        (lambda d: clip(d / "silent.mp4", 9, audio=False), ErrorCode.MEDIA_NO_AUDIO),
    ],
)
def test_unreadable_inputs_have_codes_and_one_line_reasons(tmp_path: Path, make, code: ErrorCode) -> None:
    path = make(tmp_path)
    with pytest.raises(LtxError) as info:
        read_audio(path)
    assert info.value.code is code
    assert str(path) in info.value.message and "\n" not in info.value.message
    assert "ffmpeg version" not in info.value.message and "Stream #" not in info.value.message


def test_too_short_audio(tmp_path: Path) -> None:
    wav(tmp_path / "a.wav", seconds=0.5)
    with pytest.raises(LtxError) as info:
        read_audio(tmp_path / "a.wav", start=0.25, max_duration=1.0, min_duration=1.0)
    assert info.value.code is ErrorCode.MEDIA_TOO_SHORT and info.value.details["available_s"] == 0.25


def test_a2v_soundtrack_is_the_input_for_the_clip_duration(tmp_path: Path) -> None:
    wave = wav(tmp_path / "a.wav", rate=48000, seconds=2.0)
    track = read_soundtrack(tmp_path / "a.wav", start=0.5, frames=25, fps=25.0)  # one second
    np.testing.assert_array_equal(track.waveform, wave[:, 24000:72000])
    with pytest.raises(LtxError, match=r"1\.000 s of audio"):
        read_soundtrack(tmp_path / "a.wav", start=1.0, frames=49, fps=24.0)


# ------------------------------------------------------------------------------------------------------- video


def test_read_video_frames_fps_and_soundtrack(tmp_path: Path) -> None:
    video = read_video(clip(tmp_path / "c.mp4", 20))
    assert video.frames.shape == (20, 64, 96, 3) and video.frames.dtype == np.uint8
    assert video.fps == 24.0
    assert video.audio is not None and video.audio.sample_rate == 44100
    assert abs(video.audio.duration - 20 / 24) < 0.03
    assert read_video(tmp_path / "c.mp4", frame_cap=9).frames.shape[0] == 9
    with pytest.raises(LtxError) as info:
        read_video(tmp_path / "c.mp4", min_frames=40)
    assert info.value.code is ErrorCode.MEDIA_TOO_SHORT


def _resize_all_then_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """The definition: scale the whole frame to cover (torch bilinear, align_corners=False), then crop the centre."""
    src_h, src_w = frame.shape[:2]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = int(np.ceil(src_h * scale)), int(np.ceil(src_w * scale))
    pixels = frame.astype(np.float32)
    low, high, weight = _linear_axis(src_h, new_h)
    pixels = pixels[low] * (1 - weight)[:, None, None] + pixels[high] * weight[:, None, None]
    low, high, weight = _linear_axis(src_w, new_w)
    pixels = pixels[:, low] * (1 - weight)[None, :, None] + pixels[:, high] * weight[None, :, None]
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return pixels[top : top + height, left : left + width]


@pytest.mark.parametrize("size", [(48, 64), (32, 32), (64, 96), (40, 56)])  # same, crop, upscale, both
def test_encoder_input_is_resize_then_crop_exactly(size: tuple[int, int]) -> None:
    # encoder_input interpolates only the rows and columns the crop keeps, and only converts frames of the target
    # size (a 768x512 source took 4.8 s on a 2-core CPU the old way, 0.25 s now): the same floats as the definition.
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    height, width = size
    want = np.stack([_resize_all_then_crop(f, height, width) for f in frames]) / 127.5 - 1.0
    got = encoder_input(frames, height, width)
    assert got.dtype == np.float32 and got.shape == (1, 3, 3, height, width)
    np.testing.assert_array_equal(got, want.transpose(3, 0, 1, 2)[None].astype(np.float32))


def test_encode_source_keeps_8k_plus_1_frames(tmp_path: Path) -> None:
    video_encoder = load_video_encoder(open_checkpoint(FIXTURES / "video" / "v23_split"), mx.float32)
    audio_encoder = load_audio_encoder(open_checkpoint(FIXTURES / "audio" / "ltx23_official"))
    source = encode_source(clip(tmp_path / "c.mp4", 20), video_encoder, audio_encoder, 64, 96)
    assert (source.frames, source.dropped_frames, source.fps) == (17, 3, 24.0)
    assert source.video_latent.shape[2:] == (3, 2, 3)
    assert source.audio_latent.shape[2] == s.audio_latent_frames(17, 24.0) == 18
    assert [usable_frames(n) for n in (0, 1, 8, 9, 16, 17, 121, 128)] == [0, 1, 1, 9, 9, 17, 121, 121]


# ------------------------------------------------------------------------------------------------------ extend


def test_extend_keeps_the_source_and_generates_the_continuation() -> None:
    """Extend 17 frames (3 latent frames) by 0.6 s at 24 fps: 17 + 16 = 33 frames (5 latent frames). The kept
    latents come out of the real sampler loop bit for bit; the continuation moves; durations line up."""
    fps, total = 24.0, modes.extended_frames(17, 0.6, 24.0)
    assert total == 33 and modes.extended_frames(17, 0.5, 24.0) == 33 and modes.extended_frames(17, 0.3, 24.0) == 25
    rng = np.random.default_rng(1)
    source_video = mx.array(rng.standard_normal((1, 16, 3, 2, 3)).astype(np.float32))
    source_audio = mx.array(rng.standard_normal((1, 2, 18, 4)).astype(np.float32))
    video, audio = modes.extend_states(source_video, source_audio, total, fps, channels=2, mel_bins=4)
    assert video.latent.shape == (1, 5 * 6, 16) and audio.latent.shape == (1, s.audio_latent_frames(total, fps), 8)
    np.testing.assert_array_equal(np.array(video.denoise_mask[0]), [0.0] * 18 + [1.0] * 12)
    seam = 17 / fps
    audio_mask = np.array(audio.denoise_mask[0])
    spans = audio.positions[0, 0]
    np.testing.assert_array_equal(audio_mask == 0, (spans[:, 1] <= seam) & (np.arange(len(spans)) < 18))
    assert audio_mask[:10].sum() == 0 and audio_mask[-10:].min() == 1  # kept start, generated end

    model = load_transformer(open_checkpoint(FIXTURES / "transformer" / "t20_official"), mx.float32)
    text = np.load(FIXTURES / "transformer" / "refs.npz")
    contexts = (mx.array(text[f"t20.text.{n}_context"]) for n in ("video", "audio"))
    stage = s.StageInputs.build(model, video, audio, *contexts, mx.float32)
    noise = mx.random.normal(video.latent.shape, key=mx.random.key(0)), mx.random.normal(audio.latent.shape)
    video, audio = s.add_noise(video, noise[0]), s.add_noise(audio, noise[1])
    video, audio = s.euler_loop(DISTILLED_STAGE_1, video, audio, s.simple_denoiser(stage))
    out = s.tokens_to_video(video.output_latent, 5, 2, 3)
    np.testing.assert_array_equal(np.array(out[:, :, :3]), np.array(source_video))
    assert float(mx.abs(out[:, :, 3:]).max()) > 0
    kept = np.flatnonzero(audio_mask == 0)
    source_tokens = np.array(s.audio_to_tokens(source_audio)[0])
    np.testing.assert_array_equal(np.array(audio.latent[0])[kept], source_tokens[kept])
    assert modes.joined_duration(total, fps) == pytest.approx(33 / 24)


def test_retake_and_extend_requests_are_validated() -> None:
    modes.check_retake_window(0.5, 9.0, 1.0)  # a window running past the end regenerates to the end
    for start, end in ((0.6, 0.4), (-0.1, 0.5), (1.0, 2.0)):
        with pytest.raises(LtxError, match="--retake") as info:
            modes.check_retake_window(start, end, 1.0)
        assert info.value.code is ErrorCode.INVALID_PARAMS
    with pytest.raises(LtxError, match="--extend"):
        modes.check_extend_seconds(0.0, 24.0)
