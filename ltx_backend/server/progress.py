"""Engine events -> the protocol's `progress` fields: one overall fraction that only grows, elapsed and ETA."""

from __future__ import annotations

import time

from ltx_backend import events
from ltx_backend.events import Phase
from ltx_backend.pipeline.request import SINGLE_STAGE, GenerationRequest

# Share of a typical distilled job's time per phase (H100 and M-series profiles are alike within a few %).
PHASE_WEIGHTS = {
    Phase.DOWNLOAD: 0.0, Phase.TEXT_ENCODING: 0.08, Phase.PROMPT_ENHANCEMENT: 0.0, Phase.IMAGE_ENCODING: 0.02,
    Phase.LOAD: 0.04, Phase.STAGE1: 0.36, Phase.UPSAMPLE: 0.03, Phase.STAGE2: 0.22, Phase.AUDIO_DECODE: 0.05,
    Phase.VIDEO_DECODE: 0.20, Phase.MUX: 0.0, Phase.SOURCE_ENCODING: 0.03,
}  # fmt: skip
STAGE_PHASES = {1: Phase.STAGE1, 2: Phase.STAGE2}


class ProgressTracker:
    def __init__(self, request: GenerationRequest | None) -> None:
        """`request` None: a load job (downloads only)."""
        self.start = time.monotonic()
        self.fraction = 0.0
        self.phase = "queued"
        self._done = 0.0  # weight of finished phases
        skipped = {Phase.IMAGE_ENCODING} if request is None or not request.keyframes else set()
        skipped |= {Phase.AUDIO_DECODE} if request is not None and not request.audio else set()
        encodes_media = request is not None and request.mode in ("a2v", "retake", "extend")
        skipped |= set() if encodes_media else {Phase.SOURCE_ENCODING}
        skipped |= {Phase.UPSAMPLE, Phase.STAGE2} if request is not None and request.layout in SINGLE_STAGE else set()
        self._total = sum(weight for phase, weight in PHASE_WEIGHTS.items() if phase not in skipped)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def update(self, event: events.Event) -> dict | None:
        """The `progress` fields for an event, or None for events a host does not need."""
        extra: dict = {}
        if isinstance(event, events.PhaseStarted):
            self.phase = event.phase.value
        elif isinstance(event, events.PhaseFinished):  # folded into the next phase's start
            self._done += PHASE_WEIGHTS.get(event.phase, 0.0)
            self._advance(self._done)
            return None
        elif isinstance(event, events.DenoiseStep):
            phase = STAGE_PHASES.get(event.stage, Phase.STAGE2)
            self.phase = phase.value
            self._advance(self._done + PHASE_WEIGHTS[phase] * event.step / event.total)
            extra = {"stage": event.stage, "step": event.step, "total": event.total}
        elif isinstance(event, events.DecodeProgress):  # decode moves too, rather than stalling at its start
            self.phase = Phase.VIDEO_DECODE.value
            self._advance(self._done + PHASE_WEIGHTS[Phase.VIDEO_DECODE] * event.fraction)
        elif isinstance(event, events.DownloadProgress):
            self.phase = Phase.DOWNLOAD.value
            extra = {"bytes": event.bytes, "total_bytes": event.total}
            if event.speed is not None:
                extra["speed"] = event.speed
            if event.total:  # a load job's fraction is its download's
                self._advance(self._total * event.bytes / event.total)
            if event.eta is not None or event.speed is not None:  # measured: better than the elapsed-time guess
                extra["eta"] = event.eta
        elif isinstance(event, (events.Warning, events.EnhancedPrompt)):
            extra = {"message": event.message if isinstance(event, events.Warning) else event.prompt}
        elif isinstance(event, (events.MemoryPlan, events.DurationChosen)):
            extra = {"message": event.text()}
        else:
            return None
        elapsed = self.elapsed
        eta = elapsed * (1 - self.fraction) / self.fraction if self.fraction >= 0.05 else None
        return {"phase": self.phase, "fraction": round(self.fraction, 4), "elapsed": round(elapsed, 2),
                "eta": None if eta is None else round(eta, 1), **extra}  # fmt: skip

    def _advance(self, done: float) -> None:
        self.fraction = max(self.fraction, min(done / self._total, 1.0))
