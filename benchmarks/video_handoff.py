"""The decoded video's handoff to the encoder: from float32 frames on the device to a finished MP4, two ways.

    python benchmarks/video_handoff.py                  # 768x512x121 of a moving pattern, 3 rounds
    python benchmarks/video_handoff.py --frames 25 --rounds 1

* ``whole``: converted to uint8 on the device, copied to the host whole, then written (the engine until 2026-12-06).
* ``pieces``: converted on the device in one pass, copied and written 8 frames at a time (`uint8_pieces`, the
  engine since): the encoder starts on the first piece while the rest are copied.

An untiled decode hands the whole video over as one chunk, so this is the job's path from the end of the decode to
the end of x264. Per way: ``handed_s`` (the writes returned: the engine goes on to the audio decode) and
``finished_s`` (x264 done). Prints one JSON document, the rounds alternated between the ways.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from mux_tail import clip_arguments, pattern  # benchmarks/ is on sys.path when a script here runs

from ltx_backend.media.video import VideoWriter, to_uint8, uint8_pieces


def hand_over(way: str, frames: mx.array, path: Path) -> tuple[float, float]:
    _, height, width, _ = frames.shape
    start = time.perf_counter()
    with VideoWriter(path, width, height, 24.0) as writer:
        if way == "whole":
            writer.write(to_uint8(frames))
        else:
            for piece in uint8_pieces(frames):
                writer.write(piece)
        handed = time.perf_counter() - start
    return round(handed, 4), round(time.perf_counter() - start, 4)


def main() -> None:
    args = clip_arguments(__doc__)
    decoded = mx.array(pattern(args.width, args.height, args.frames).astype(np.float32) / 127.5 - 1.0)
    mx.eval(decoded)
    ways = ("whole", "pieces")
    results: dict[str, dict[str, list[float]]] = {way: {"handed_s": [], "finished_s": []} for way in ways}
    with tempfile.TemporaryDirectory() as folder:
        hand_over("whole", decoded, Path(folder) / "warm.mp4")  # kernels and ffmpeg's first start
        for _ in range(args.rounds):
            for way in ways:
                handed, finished = hand_over(way, decoded, Path(folder) / f"{way}.mp4")
                results[way]["handed_s"].append(handed)
                results[way]["finished_s"].append(finished)
    means = {way: {key: round(sum(v) / len(v), 4) for key, v in values.items()} for way, values in results.items()}
    print(json.dumps({"benchmark": "video handoff", "device": str(mx.default_device()), "cpus": os.cpu_count(),
                      "size": [args.width, args.height, args.frames], "rounds": results, "mean": means,
                      "finished_saving_s": round(means["whole"]["finished_s"] - means["pieces"]["finished_s"], 4)},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
