"""Cancel latency per phase: how long after `CancelToken.cancel()` the engine raises `Cancelled`.

    python benchmarks/cancel_latency.py                                  # the tiny model on this machine (CPU: seconds)
    python benchmarks/cancel_latency.py --model REPO --width 768 --height 512 --frames 121 --trials 3   # a real one

For each phase a thread cancels the job at delays spread over the phase's wall time (from a first, complete run);
the latency is the time from that cancel to the `Cancelled` exception. A cancel that lands while the phase loads
its weights waits for the load to finish (loading is not interruptible), so `worst_s` includes that. Text encoding
is checked after every Gemma layer, video decode after every decoder up block of every tile, denoising after every
step.
`longest_gap_between_checks_s` times the checks themselves in one uncancelled run: per phase, the longest stretch
without a check, i.e. the worst latency of a cancel landing in it. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import mlx.core as mx

from ltx_backend import events
from ltx_backend.events import Phase
from ltx_backend.pipeline.engine import Cancelled, CancelToken, Engine
from ltx_backend.pipeline.request import GenerationRequest

PHASES = (Phase.TEXT_ENCODING, Phase.STAGE1, Phase.STAGE2, Phase.AUDIO_DECODE, Phase.VIDEO_DECODE)


def trial(engine: Engine, request: GenerationRequest, phase: Phase, delay: float) -> float | None:
    """Seconds from cancel to `Cancelled` with the cancel `delay` s into `phase`; None if the job ended first."""
    token = CancelToken()
    stamp: dict[str, float] = {}

    def fire() -> None:
        time.sleep(delay)
        stamp["cancel"] = time.perf_counter()
        token.cancel()

    def emit(event: events.Event) -> None:
        if isinstance(event, events.PhaseStarted) and event.phase is phase and "cancel" not in stamp:
            threading.Thread(target=fire, daemon=True).start()

    try:
        engine.generate(request, token, emit)
    except Cancelled:
        return time.perf_counter() - stamp["cancel"]
    return None


class TimedToken(CancelToken):
    """Records when the engine checks for a cancel, and in which phase: the longest gap between two checks is the
    worst cancel latency there (what a cancel landing just after a check waits for)."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "start"
        self.last = time.perf_counter()
        self.gaps: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        self.phase = phase

    def check(self) -> None:
        now = time.perf_counter()
        self.gaps[self.phase] = max(self.gaps.get(self.phase, 0.0), now - self.last)
        self.last = now
        super().check()


def check_gaps(engine: Engine, request: GenerationRequest) -> dict[str, float]:
    """The longest time without a cancel check, per phase (a gap is charged to the phase its check falls in)."""
    token = TimedToken()

    def emit(event: events.Event) -> None:
        if isinstance(event, events.PhaseStarted):
            token.mark(event.phase.value)

    engine.generate(request, token, emit)
    return {phase: round(gap, 4) for phase, gap in token.gaps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--tiling", default="aggressive")
    parser.add_argument("--trials", type=int, default=3, help="cancels per phase")
    args = parser.parse_args()

    engine = Engine(args.model)
    with tempfile.TemporaryDirectory() as folder:
        request = GenerationRequest(
            prompt="a fox runs through the snow, wind howls", output_path=str(Path(folder) / "v.mp4"), seed=1,
            width=args.width, height=args.height, num_frames=args.frames, tiling=args.tiling,
        )  # fmt: skip
        started: dict[Phase, float] = {}
        walls: dict[Phase, float] = {}

        def clock(event: events.Event) -> None:
            if isinstance(event, events.PhaseStarted):
                started[event.phase] = time.perf_counter()
            elif isinstance(event, events.PhaseFinished):
                walls[event.phase] = time.perf_counter() - started[event.phase]

        engine.generate(request, emit=clock)  # also the warm-up
        gaps = check_gaps(engine, request)
        phases = {}
        for phase in PHASES:
            seconds = round(walls.get(phase, 0.0), 4)  # wall time, weight loading at the phase's start included
            delays = [seconds * (i + 0.5) / args.trials for i in range(args.trials)]
            latencies = [t for t in (trial(engine, request, phase, d) for d in delays) if t is not None]
            phases[phase.value] = {
                "phase_seconds": seconds,
                "cancels": len(latencies),
                "worst_s": round(max(latencies), 4) if latencies else None,
                "median_s": round(statistics.median(latencies), 4) if latencies else None,
            }
    print(json.dumps({
        "model": args.model, "size": [args.width, args.height, args.frames], "tiling": args.tiling,
        "device": str(mx.default_device()), "machine": platform.machine(), "longest_gap_between_checks_s": gaps,
        "phases": phases,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
