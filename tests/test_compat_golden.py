"""Golden transcript: a real tiny-model run of ``mlx_video.generate_av`` against 0.1.37's canonical run.

tests/fixtures/compat/canonical_t2v.txt holds the reference's canonical line sequence (generate_av-0.1.37.md
§2.1) for this test's arguments, each line marked as printed by both, by the reference only or by the shim
only. The shim's stdout and stderr lines, in their merged order, with colours and emoji, must equal the lines
marked for the shim, once timings and paths are normalised: a change of wording, colour, stream or order fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlx_video.generate_av import Colors
from test_compat import run_in_process

FIXTURE = Path(__file__).parent / "fixtures" / "compat" / "canonical_t2v.txt"


def load_fixture() -> list[tuple[str, str, str]]:
    """(mark, stream, text) per transcript line, with {NAME} replaced by the ANSI code of Colors.NAME."""
    codes = {name: value for name, value in vars(Colors).items() if name.isupper()}
    rows = []
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        mark, stream, text = line[0], line[2], line[4:]
        assert mark in "=-+" and stream in "OE", line
        rows.append((mark, stream, re.sub(r"\{([A-Z]+)\}", lambda m: codes[m[1]], text)))
    return rows


def normalise(text: str, out: Path, home: Path) -> str:
    text = text.replace(str(home / "tiny" / "text_encoder"), "<TEXT_ENCODER>").replace(str(home / "tiny"), "<MODEL>")
    text = text.replace(str(out), "<OUT>")
    text = re.sub(r"Device\(\w+, \d+\)", "<DEVICE>", text)
    text = re.sub(r"Generated in \d+\.\ds", "Generated in <SECONDS>s", text)
    text = re.sub(r"Peak memory: \d+\.\d\dGB", "Peak memory: <GB>GB", text)
    text = re.sub(r"ltx-backend \S+ \(", "ltx-backend <VERSION> (", text)
    return re.sub(r"^TEXT_ENCODER:CONFIG_KEYS:.+$", "TEXT_ENCODER:CONFIG_KEYS:<KEYS>", text)


def test_a_real_run_prints_the_canonical_transcript(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home, out = tmp_path / "ltx-home", tmp_path / "out"
    monkeypatch.setenv("LTX_BACKEND_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    argv = ["-p", "a fox walking", "-W", "128", "-H", "128", "-n", "20", "--seed", "7",
            "--output-path", str(out / "golden.mp4"), "--model-repo", "tiny"]  # fmt: skip
    code, lines = run_in_process(monkeypatch, argv)
    assert code == 0, lines
    got = [(stream, normalise(text, out, home)) for stream, text in lines]
    expected = [(stream, text) for mark, stream, text in load_fixture() if mark in "=+"]
    assert got == expected
    assert (out / "golden.mp4").stat().st_size > 0


def test_the_fixture_keeps_the_reference_sequence() -> None:
    """The fixture still lists every app-visible line of §2.1 in the reference's order (a guard on edits)."""
    rows = load_fixture()
    reference = [text for mark, _, text in rows if mark in "=-"]
    shim_only = [text for mark, _, text in rows if mark == "+"]
    assert all("Backend: ltx-backend" in text for text in shim_only)
    must = ["MLX_VIDEO_VERSION:0.1.37", "MODEL:CACHED:tiny", "📝 Loading text encoder...",
            "🤖 Loading transformer (A/V mode)...", "STAGE:1:STEP:1:8:Denoising", "STAGE:2:STEP:3:3:Denoising",
            "🎞️  Decoding video...", "✅ Video encoded", "🔊 Decoding audio...", "🎬 Combining video and audio...",
            "✅ Saved video with audio to", "🎉 Done! Generated in", "✨ Peak memory:"]  # fmt: skip
    positions = [next(i for i, text in enumerate(reference) if m in text) for m in must]
    assert positions == sorted(positions)
    omitted = "\n".join(text for mark, _, text in rows if mark == "-")
    readme = (Path(__file__).parents[1] / "compat" / "README.md").read_text(encoding="utf-8")
    for item in ("TEXT_ENCODER:EVAL", "TRANSFORMER:EVAL", "Detected mid_channels", "TEXT_ENCODER:PATH"):
        assert item in omitted and item in readme, item
