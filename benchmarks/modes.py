"""A2V and retake jobs against plain T2V in the same run, through the real engine (issue 17's closing timing).

    python benchmarks/modes.py                 # 768x512x121, LTX-2.0 distilled, random weights (GPU)
    python benchmarks/modes.py --tiny          # CPU smoke run: the tiny model at 128x128x17

As benchmarks/generate.py: every model has its real size and config but random weights (the loaders are swapped for
builders of random-weight modules; the audio VAE encoder too), so load times are not representative
(``wall_excluding_load_s`` leaves them out) and the rest is the code a user runs. The inputs are made with ffmpeg
first: a soundtrack of the clip's duration for a2v (two tones, 44.1 kHz stereo WAV) and a source clip of the job's
size with sound for retake (ffmpeg's testsrc2 + a tone, H.264 / AAC), whose [1.5, 3.5) s window is regenerated.
Each job runs ``--runs`` times (the first warms up kernels; the last is reported). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import soundfile

from ltx_backend.media.video import ffmpeg_exe
from ltx_backend.models.audio_vae import AudioEncoder, AudioVAEConfig
from ltx_backend.pipeline import engine as engine_module
from ltx_backend.pipeline.request import GenerationRequest
from ltx_backend.tiny import write_tiny_model

PROMPT = "A singer on a small stage at night sings into a microphone; the crowd claps along to the beat."


def make_inputs(folder: Path, width: int, height: int, frames: int, fps: float) -> dict[str, Path]:
    seconds = frames / fps + 0.5
    t = np.arange(int(44100 * seconds)) / 44100
    wave = 0.5 * np.sin(2 * np.pi * np.array([[220.0], [330.0]]) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    soundfile.write(folder / "song.wav", wave.T.astype(np.float32), 44100, subtype="PCM_16")
    source = folder / "source.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size={width}x{height}:rate={fps:g}", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=48000", "-ac", "2", "-c:a", "aac", "-frames:v", str(frames),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", str(source)], check=True)  # fmt: skip
    return {"wav": folder / "song.wav", "source": source}


def jobs(inputs: dict[str, Path], frames: int, fps: float) -> dict[str, dict]:
    duration = frames / fps
    window = (round(duration * 0.3, 2), round(duration * 0.7, 2))  # 1.5 .. 3.5 s of a 5 s clip
    return {
        "t2v": {},
        "a2v": {"mode": "a2v", "audio_input_path": str(inputs["wav"])},
        "retake": {"mode": "retake", "source_path": str(inputs["source"]), "retake_window": window},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--runs", type=int, default=2, help="per job; the first warms up kernels, the last counts")
    parser.add_argument("--tiny", action="store_true", help="the tiny model (real loaders) at 128x128x17, on CPU")
    args = parser.parse_args()
    if args.tiny:
        args.width, args.height, args.frames = 128, 128, 17
    fps = 24.0

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        tiny = write_tiny_model(folder / "tiny")
        if not args.tiny:
            from generate import install_random_loaders  # benchmarks/ is on sys.path when this script runs

            install_random_loaders(tiny / "text_encoder")
            engine_module.load_audio_encoder = lambda ckpt, dtype=None: AudioEncoder(AudioVAEConfig.from_config({}))
        inputs = make_inputs(folder, args.width, args.height, args.frames, fps)
        engine = engine_module.Engine(tiny)
        results = {}
        for name, fields in jobs(inputs, args.frames, fps).items():
            runs = []
            for run in range(args.runs):
                request = GenerationRequest(
                    prompt=f"{PROMPT} Take {name} {run}.",  # new per job: a cached prompt skips the text encoder
                    output_path=str(folder / f"{name}{run}.mp4"), width=args.width,
                    height=args.height, num_frames=args.frames, fps=fps, seed=run, **fields,
                )  # fmt: skip
                start = time.perf_counter()
                result = engine.generate(request)
                wall = time.perf_counter() - start
                runs.append({"wall_s": round(wall, 2), "wall_excluding_load_s": round(wall - result.timings["load"], 2),
                             "phases_s": result.timings, "steps": list(result.steps),
                             "peak_memory_gb": result.peak_memory_gb})  # fmt: skip
            results[name] = runs[-1] | {"warmup_wall_s": [r["wall_s"] for r in runs[:-1]]}
        base = results["t2v"]["wall_excluding_load_s"]
        for name in ("a2v", "retake"):
            results[name]["vs_t2v"] = round(results[name]["wall_excluding_load_s"] / base, 3) if base else None
    print(json.dumps({
        "benchmark": "modes", "model": "tiny (random weights)" if args.tiny else
        "LTX-2.0 distilled (random weights) + Gemma 3 12B", "device": str(mx.default_device()),
        "machine": platform.machine(), "dtype": str(engine.dtype), "size": [args.width, args.height, args.frames],
        "note": "load phases build random modules: compare wall_excluding_load_s", "jobs": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
