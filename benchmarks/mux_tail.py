"""The job's tail after the video decode: waiting for x264, then muxing the audio in, two ways in one run.

    python benchmarks/mux_tail.py                      # 768x512x121 of a moving pattern, 5 s of audio, 3 rounds
    python benchmarks/mux_tail.py --frames 25 --rounds 1

The frames are written to the encoder as the engine writes its decoded video; a 0.05 s pause stands for the audio
decode on the device (0.05 s on the H100, `generate.py`). Then, timed as the engine's `mux` phase:

* ``encode_in_mux``: wait for x264, then one ffmpeg that copies the H.264 stream and encodes the WAV to AAC (the
  engine until 2026-12-05, night).
* ``aac_beside_x264``: an `AacTrack` started as soon as the WAV is written, encoding while x264 still runs; then
  wait for both and copy the two streams (the engine since).

Prints one JSON document: seconds per round and way, and the mean saving.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltx_backend.media.audio import write_wav
from ltx_backend.media.video import AacTrack, VideoWriter, mux_audio

AUDIO_DECODE_S = 0.05


def pattern(width: int, height: int, frames: int) -> np.ndarray:
    """A moving colour pattern that encodes like smooth content (not the noise of random weights)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(np.stack([x + 3 * t, y + 2 * t, x + y + t], -1) % 256).astype(np.uint8) for t in range(frames)])


def tail(way: str, folder: Path, frames: np.ndarray, wave: np.ndarray) -> float:
    _, height, width, _ = frames.shape
    with VideoWriter(folder / "v.h264.mp4", width, height, 24.0, None, atomic=False) as writer:
        writer.write(frames)
        time.sleep(AUDIO_DECODE_S)
        wav = write_wav(folder / "a.wav", wave, 48000)
        if way == "aac_beside_x264":
            with AacTrack(wav, folder / "a.m4a") as track:
                start = time.perf_counter()
                writer.finish()
                mux_audio(folder / "v.h264.mp4", track, folder / "v.mp4")
        else:
            start = time.perf_counter()
            writer.finish()
            mux_audio(folder / "v.h264.mp4", wav, folder / "v.mp4")
        return round(time.perf_counter() - start, 3)


def clip_arguments(description: str) -> argparse.Namespace:
    """The clip's size and the rounds to run, as this benchmark and video_handoff.py take them."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = clip_arguments(__doc__)
    frames = pattern(args.width, args.height, args.frames)
    wave = (np.random.default_rng(0).standard_normal((2, 48000 * args.frames // 24)) * 0.1).astype(np.float32)
    ways = ("encode_in_mux", "aac_beside_x264")
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for way in ways:  # alternated: a drift of the machine falls on both
                seconds[way].append(tail(way, Path(folder), frames, wave))
    means = {way: round(sum(values) / len(values), 3) for way, values in seconds.items()}
    print(json.dumps({"benchmark": "mux tail", "size": [args.width, args.height, args.frames],
                      "cpus": os.cpu_count(), "seconds": seconds, "mean_s": means,
                      "saving_s": round(means["encode_in_mux"] - means["aac_beside_x264"], 3)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
