"""The model-management messages: `models`, `download`, `delete`, `inspect` (PROTOCOL.md, "Model management").

`models` and `delete` are answered at once by the reader (they read and remove files; nothing runs on the GPU).
`inspect` builds modules (lazily, no weights) and so runs on the model worker like `load`. Downloads run in their
own lane, one at a time on their own thread, so a host can fetch the next model while a video generates; a
download is a job like any other (`accepted`, `progress` with bytes, speed and ETA, then `downloaded`, `error` or
`cancelled`), and a cancelled download keeps its partial file for the next one to resume.

The work itself is the CLI's (`weights/cache.py`, `weights/download.py`, `weights/verify.py`): one implementation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ltx_backend import events
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.pipeline.engine import Cancelled
from ltx_backend.server import messages as m
from ltx_backend.server.job_lane import JobLane

log = logging.getLogger(__name__)


# --- models -----------------------------------------------------------------------------------------------------


def _problem(error: dict | None) -> m.ProblemInfo | None:
    return None if error is None else m.ProblemInfo(error["code"], error["message"], error.get("hint", ""))


def models_report(request: m.Models) -> m.ModelsReport:
    from ltx_backend.weights.cache import list_models
    from ltx_backend.weights.download import free_bytes

    report = list_models()
    listed = []
    for entry in report["models"]:
        fields = {name: entry[name] for name in m.CachedModel.__struct_fields__ if name != "error"}
        listed.append(m.CachedModel(**fields, error=_problem(entry["error"])))
    cache = Path(report["cache"])
    return m.ModelsReport(request.id, report["cache"], listed, report["total_bytes"], free_bytes(cache))


# --- delete -----------------------------------------------------------------------------------------------------


def delete(request: m.Delete, in_use: Callable[[], dict[Path, str]]) -> m.Deleted:
    """Delete a cached model unless a loaded model or a queued/running job uses it. `in_use`: path -> by what."""
    from ltx_backend.weights.cache import delete_model, plan_deletion

    if not request.model:
        raise LtxError(ErrorCode.INVALID_PARAMS, "model is required", "Give a repo id from `models`.", field="model")
    deletion = plan_deletion(request.model, request.revision)
    doomed = [path.absolute() for path in deletion.snapshots]
    for path, user in in_use().items():
        if any(path == folder or folder in path.parents or path in folder.parents for folder in doomed):
            raise LtxError(
                ErrorCode.MODEL_IN_USE,
                f"cannot delete {request.model}: it is {user}",
                "Wait for the job to end (or cancel it), or `unload` the model, then delete it.",
                field="model",
            )
    freed = delete_model(deletion)
    log.info("deleted %s (%d bytes): %s", request.model, freed, ", ".join(map(str, deletion.paths)))
    return m.Deleted(request.id, request.model, request.revision, [str(p) for p in deletion.paths], freed)


# --- inspect ----------------------------------------------------------------------------------------------------


def check_inspect(request: m.Inspect) -> None:
    """Refuse an `inspect` without a model before it is queued."""
    if not request.model.strip():
        raise LtxError(ErrorCode.INVALID_PARAMS, "model is required", "Give a path, a cached repo id or `tiny`.",
                       field="model")  # fmt: skip


def inspect(request: m.Inspect, job_id: str) -> m.Inspected:
    from ltx_backend.weights.verify import inspect_model

    report = inspect_model(request.model, request.text_encoder)
    components = [
        m.ComponentInfo(c.name, c.tensors, c.bytes, c.dtypes, c.quantization, c.ok, _problem(c.error))
        for c in report.components
    ]
    return m.Inspected(
        request.id, job_id, report.model, report.path, report.layout, report.model_version, report.variant,
        report.quantization, report.config_sections, components, report.text_encoder, report.ok,
        [m.ProblemInfo(p["code"], p["message"], p["hint"]) for p in report.problems],
        report.transformer_bits, report.unsupported,
    )  # fmt: skip


# --- download ---------------------------------------------------------------------------------------------------


def check_download(request: m.Download) -> None:
    """Refuse a malformed request before it is queued."""
    from ltx_backend.weights import download as downloads
    from ltx_backend.weights.resolve import REPO_ID

    if not REPO_ID.match(request.repo):
        raise LtxError(ErrorCode.INVALID_PARAMS, f"repo must be a Hugging Face repo id (org/name), not "
                       f"{request.repo!r:.200}", "Use org/name, e.g. notapalindrome/ltx2-mlx-av.",
                       field="repo")  # fmt: skip
    if not request.revision.strip():
        raise LtxError(ErrorCode.INVALID_PARAMS, "revision is empty", "Leave it out for main.", field="revision")
    if request.variant not in downloads.VARIANTS:
        raise LtxError(ErrorCode.INVALID_PARAMS, f"variant {request.variant!r:.50} is not one of "
                       f"{', '.join(downloads.VARIANTS)}", "Leave it out for distilled, or use dev.",
                       field="variant")  # fmt: skip
    if request.files is not None and not all(pattern.strip() for pattern in request.files):
        raise LtxError(ErrorCode.INVALID_PARAMS, "files holds an empty pattern", "Give glob patterns such as "
                       "*.safetensors, or leave `files` out.", field="files")  # fmt: skip


def run_download(request: m.Download, job_id: str, check: Callable[[], None], emit: events.Emit) -> m.Downloaded:
    """The download job: plan, check the disk, fetch (resuming partial files), validate, describe."""
    from ltx_backend.weights import download as downloads
    from ltx_backend.weights.cache import describe_model

    emit(events.PhaseStarted(events.Phase.DOWNLOAD, request.repo))
    plan = downloads.plan_download(request.repo, request.revision, request.files, request.variant)
    check()
    downloads.check_disk_space(plan)
    before = plan.cached_bytes
    path = downloads.fetch(plan, emit, check)
    check()
    if request.files is None:
        downloads.validate_download(path, request.repo)
    entry = describe_model(path, request.repo)
    return m.Downloaded(
        request.id, job_id, request.repo, request.revision, plan.commit, str(path), entry.kind, plan.total_bytes,
        plan.total_bytes - before, sorted(plan.skipped), entry.layout, entry.model_version, entry.quantization,
        entry.text_encoder,
    )  # fmt: skip


class DownloadLane:
    """Download jobs, one at a time on their own thread; `run` turns a job into its terminal message."""

    def __init__(self, run: Callable[[object], m.Reply], finish: Callable[[object, m.Reply], None]) -> None:
        self._run = run
        self._finish = finish
        self.lane = JobLane(threading.Lock(), finish)
        self._thread = threading.Thread(target=self._work, name="ltx-downloads", daemon=True)
        self._start_once = threading.Lock()

    @property
    def running(self):
        return self.lane.running

    def enqueue(self, job) -> int:
        """Queue `job`; its position in this lane (0: starts now). It starts only after `release(job)`: answer
        `accepted` in between. The lane's thread starts with its first job."""
        position = self.lane.add(job)
        with self._start_once:
            if self._thread.ident is None:
                self._thread.start()
        return position

    def join(self, deadline: float):
        """Wait for the running download to stop until `deadline` (monotonic); the job still running, if any."""
        if self._thread.ident is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return self.lane.running

    def _work(self) -> None:
        while (job := self.lane.next()) is not None:
            job.started = job.last_sent = time.monotonic()
            try:
                terminal = self._run(job)
            except Cancelled:
                terminal = m.Cancelled(job.request.id, job.job_id)
            with self.lane.lock:
                self.lane.running = None
            self._finish(job, terminal)
