"""LTX-2.5 DurationHead against ltx-core 1.2.0 (fixture d): seconds at 1e-5 relative, frame counts exactly."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from ltx_backend.models.duration_head import frame_bounds, predict_num_frames, seconds_to_num_frames
from ltx_backend.weights.ltx25 import load_duration_head

FIXTURES = Path(__file__).parent / "fixtures" / "ltx25"
RELATIVE = 1e-5


@pytest.fixture(scope="module")
def refs() -> dict[str, np.ndarray]:
    refs = dict(np.load(FIXTURES / "refs.npz"))
    out = {k[2:]: v for k, v in refs.items() if k.startswith("d.")}
    out["video_tokens"], out["audio_tokens"] = refs["c.video_encoding"], refs["c.audio_encoding"]  # the head's inputs
    return out


@pytest.mark.parametrize("case", ["video_and_audio", "video_only", "audio_only"])
def test_predicted_seconds_and_frames_match_ltx_core(refs, case: str) -> None:
    head = load_duration_head(FIXTURES / "duration_head.safetensors", dtype=mx.float32)
    video = mx.array(refs["video_tokens"][None]) if case != "audio_only" else None
    audio = mx.array(refs["audio_tokens"][None]) if case != "video_only" else None
    seconds = float(head(video, audio).item())
    expected = float(refs[f"seconds_{case}"][0])
    assert abs(seconds - expected) <= RELATIVE * expected, (seconds, expected)
    choice = predict_num_frames(head, video, audio, fps=24.0)
    index = ["video_and_audio", "video_only", "audio_only"].index(case)
    assert choice.num_frames == refs["frames_at_24fps_min1s_max20s"][index] and not choice.clamped


def test_snap_table_matches_ltx_core(refs) -> None:
    table = [
        [seconds_to_num_frames(float(s), float(fps)).num_frames for s in refs["snap_table_seconds"]]
        for fps in refs["snap_table_fps"]
    ]
    np.testing.assert_array_equal(np.array(table), refs["snap_table_frames"])


def test_clamping_is_reported_and_every_count_is_on_the_grid() -> None:
    assert seconds_to_num_frames(0.2, 24.0).clamped and not seconds_to_num_frames(3.0, 24.0).clamped
    for fps in (24.0, 25.0, 30.0):
        for seconds in np.linspace(0.1, 30.0, 97):
            frames = seconds_to_num_frames(float(seconds), fps, 2.0, 9.0).num_frames
            assert (frames - 1) % 8 == 0 and round(2.0 * fps) <= frames <= round(9.0 * fps)


def test_bounds_without_a_valid_frame_count_are_refused() -> None:
    with pytest.raises(ValueError, match="8k"):
        frame_bounds(24.0, 1.0, 1.02)  # [24, 24] frames
    with pytest.raises(ValueError, match="min <= max"):
        frame_bounds(24.0, 5.0, 2.0)
    assert frame_bounds(24.0) == (24, 480)
