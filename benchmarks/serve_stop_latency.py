"""Worst cancel and stop latency of `ltx-backend serve` per phase, on the tiny model (CPU by default).

    python benchmarks/serve_stop_latency.py [--repeats 2] [--model tiny] [--size 128x128x9]

For every phase, a `generate` job runs in an in-process server (stdin a real pipe) and the host acts the moment
the job reports that phase (its start; for stage1/stage2 the first denoising step):

- cancel: `{"type":"cancel"}` -> the job's `cancelled` (`terminal_s`);
- shutdown: `{"type":"shutdown"}` -> the job's terminal message (`terminal_s`), `serve` returning (`exit_s`, the
  process exits right after), and the engine itself unwinding (`unwound_s`). When `unwound_s` > `exit_s`, the
  job was still inside one computation at the grace period's end and the server answered for it.

Prints one JSON object: per phase and action, the worst of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from server_harness import Host, Sink, in_phase, phase_hook, run

from ltx_backend import events
from ltx_backend.server.server import Server

PHASES = ["text_encoding", "load", "stage1", "upsample", "stage2", "audio_decode", "video_decode"]


def _job(args: argparse.Namespace, folder: Path, name: str) -> dict:
    width, height, frames = (int(x) for x in args.size.split("x"))
    return {"type": "generate", "id": name, "prompt": "a fox", "output_path": str(folder / f"{name}.mp4"),
            "width": width, "height": height, "num_frames": frames, "seed": 1}  # fmt: skip


def _reached(server: Server, phase: str) -> threading.Event:
    reached = threading.Event()

    def hook(event: events.Event) -> None:
        if in_phase(event, phase):
            reached.set()

    phase_hook(server, hook)
    return reached


def _terminal_time(sink: Sink, job_id: str) -> float:
    message = sink.wait_for(lambda msg: msg.get("id") == job_id and msg["type"] in ("result", "error", "cancelled"))
    index = next(i for i, line in enumerate(sink.lines) if json.loads(line) == message)
    return sink.times[index], message["type"]


def cancel_latencies(args: argparse.Namespace, folder: Path) -> dict[str, list[dict]]:
    """One session: a job per phase and repeat, each cancelled as it enters the phase."""
    sink = Sink()
    server = Server(sink, progress_interval_s=0)
    current = {"phase": None}
    reached = threading.Event()

    def hook(event: events.Event) -> None:
        if current["phase"] and in_phase(event, current["phase"]):
            reached.set()

    phase_hook(server, hook)
    results: dict[str, list[dict]] = {phase: [] for phase in PHASES}

    def script(host: Host) -> None:
        host.send(type="load", id="l", model=args.model)
        sink.wait_for(lambda msg: msg.get("id") == "l" and msg["type"] in ("loaded", "error"))
        for repeat in range(args.repeats):
            for phase in PHASES:
                name = f"{phase}-{repeat}"
                reached.clear()
                current["phase"] = phase
                host.send(**_job(args, folder, name))
                if not reached.wait(300):
                    raise RuntimeError(f"never reached {phase}")
                start = time.monotonic()
                host.send(type="cancel", id=f"c-{name}")
                end, kind = _terminal_time(sink, name)
                results[phase].append({"terminal_s": round(end - start, 3), "terminal": kind})
        host.stop("shutdown")

    run(server, script, timeout=3600)
    return results


def stop_latency(args: argparse.Namespace, folder: Path, phase: str) -> dict:
    """One session stopped by `shutdown` as the job enters `phase`."""
    sink = Sink()
    server = Server(sink, progress_interval_s=0)
    reached = _reached(server, phase)
    name = f"stop-{phase}"

    def script(host: Host) -> None:
        host.send(type="load", id="l", model=args.model)
        host.send(**_job(args, folder, name))
        if not reached.wait(300):
            raise RuntimeError(f"never reached {phase}")
        host.stop("shutdown")

    host, returned = run(server, script, timeout=3600)
    end, kind = _terminal_time(sink, name)
    server._worker.join(600)
    unwound = time.monotonic()  # an upper bound: joined after serve returned
    return {
        "terminal_s": round(end - host.stopped_at, 3),
        "terminal": kind,
        "exit_s": round(returned - host.stopped_at, 3),
        "unwound_s": round(unwound - host.stopped_at, 3) if unwound - returned > 0.05 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", default="128x128x9", help="WIDTHxHEIGHTxFRAMES")
    args = parser.parse_args()
    os.environ.setdefault("LTX_BACKEND_HOME", tempfile.mkdtemp(prefix="ltx-home-"))
    import mlx.core as mx

    with tempfile.TemporaryDirectory() as folder:
        cancels = cancel_latencies(args, Path(folder))
        stops = {phase: [stop_latency(args, Path(folder), phase) for _ in range(args.repeats)] for phase in PHASES}
        leftovers = sorted(p.name for p in Path(folder).iterdir())

    def worst(runs: list[dict], key: str) -> float | None:
        values = [run[key] for run in runs if run.get(key) is not None]
        return max(values) if values else None

    table = {
        phase: {
            "cancel_terminal_s": worst(cancels[phase], "terminal_s"),
            "shutdown_terminal_s": worst(stops[phase], "terminal_s"),
            "shutdown_exit_s": worst(stops[phase], "exit_s"),
            "engine_unwound_after_exit_s": worst(stops[phase], "unwound_s"),
            "terminals": sorted({run["terminal"] for run in cancels[phase] + stops[phase]}),
        }
        for phase in PHASES
    }
    print(json.dumps({"device": str(mx.default_device()), "model": args.model, "size": args.size,
                      "repeats": args.repeats, "phases": table, "leftover_files": leftovers}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
