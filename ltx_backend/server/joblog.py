"""Per-job log files: what a host attaches to a bug report about one job.

A job's log holds its request, every log record its worker thread writes while it runs (the engine logs the memory
plan there), one line per phase with its timing, the warnings, any traceback, and its terminal message. The file is
created when the request is accepted (an unwritable path is refused up front, as `output_write_failed`).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path

import msgspec

from ltx_backend import __version__, events
from ltx_backend.errors import ErrorCode, LtxError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JobLog:
    def __init__(self, path: Path, job_id: str, request: msgspec.Struct) -> None:
        self.path = path
        self.job_id = job_id
        self._handler: logging.Handler | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LtxError(ErrorCode.OUTPUT_WRITE_FAILED, f"cannot write the job log {path}: {reason}",
                           "Give a log_file in a writable folder, or leave it out.", field="log_file",
                           path=str(path)) from exc  # fmt: skip
        self._lock = threading.Lock()
        self.write(f"ltx-backend {__version__}, job {job_id}")
        self.write("request: " + msgspec.json.encode(request).decode())

    @classmethod
    def for_job(cls, job_id: str, request: msgspec.Struct, log_file: str | None, log_dir: str | None) -> JobLog | None:
        """The job's log: `log_file` if the request names one, else a new file in `log_dir`, else none."""
        if log_file:
            path = Path(log_file).expanduser().absolute()
        elif log_dir:
            path = Path(log_dir).expanduser().absolute() / f"{time.strftime('%Y%m%d-%H%M%S')}-{job_id}.log"
        else:
            return None
        return cls(path, job_id, request)

    def write(self, text: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
                self._file.flush()

    def start(self) -> None:
        """Capture the log records of the calling (worker) thread until `close`."""
        thread = threading.get_ident()
        self._handler = _Forward(self)
        self._handler.addFilter(lambda record: record.thread == thread)
        self._handler.setFormatter(logging.Formatter(FORMAT))
        logging.getLogger().addHandler(self._handler)
        package = logging.getLogger("ltx_backend")
        if package.getEffectiveLevel() > logging.INFO:
            package.setLevel(logging.INFO)  # the memory plan and the phases' details are INFO records
        self.write("started")

    def event(self, event: events.Event) -> None:
        if isinstance(event, events.PhaseStarted):
            self.write(f"phase {event.phase.value} started" + (f": {event.detail}" if event.detail else ""))
        elif isinstance(event, events.PhaseFinished):
            self.write(f"phase {event.phase.value} finished in {event.seconds:.3f} s")
        elif isinstance(event, events.Warning):
            self.write(f"warning: {event.message}")
        elif isinstance(event, events.EnhancedPrompt):
            self.write(f"enhanced prompt: {event.prompt}")

    def failure(self) -> None:
        """The traceback of the exception being handled."""
        self.write("failed:\n" + traceback.format_exc().rstrip())

    def close(self, terminal: msgspec.Struct) -> None:
        """Write the terminal message and close; later writes (a job unwinding after a stop) are dropped."""
        self.write("ended: " + msgspec.json.encode(terminal).decode())
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
        with self._lock:
            self._file.close()


class _Forward(logging.Handler):
    def __init__(self, log: JobLog) -> None:
        super().__init__(logging.DEBUG)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log.write("log: " + self.format(record))
        except Exception:  # a log line must never fail the job
            self.handleError(record)
