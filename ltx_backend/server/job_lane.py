"""A lane of jobs: those waiting, in order, and the one its worker thread runs; positions, cancels and a stop.

The server has two lanes, the model worker's (load, generate, unload, inspect) and the downloads'. Both answer
`accepted` positions, `cancel` and a stop the same way, so that bookkeeping lives here once; what a job does and
how its terminal message is written stay with the lane's owner (`finish`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from ltx_backend.server import messages as m


class JobLane:
    def __init__(self, lock: threading.Lock, finish: Callable[[object, m.Reply], None]) -> None:
        """`lock` guards `pending` and `running`: the owner may share it with what must change in the same step
        (the server clears `running` and writes the terminal message under one lock, so positions stay exact).
        `finish(job, terminal)` writes a job's terminal message; it is called without `lock` held."""
        self.lock = lock
        self.pending: list = []  # queued, not started
        self.running = None  # started, until its owner clears it
        self._finish = finish
        self._queue: queue.Queue = queue.Queue()

    def add(self, job) -> int:
        """Queue `job`; its position (0: it runs next). The worker sees it only after `release(job)`, so the owner
        answers `accepted` before anything about the job can be written."""
        with self.lock:
            position = len(self.pending) + (self.running is not None)
            self.pending.append(job)
        return position

    def release(self, job) -> None:
        self._queue.put(job)

    def jobs(self) -> list:
        """The running job, then the queued ones in order."""
        with self.lock:
            return ([self.running] if self.running is not None else []) + list(self.pending)

    def next(self, refuse: Callable[[], bool] = lambda: False):
        """The next job to run, marked running (blocks until there is one); None once the lane is stopped.
        Jobs cancelled while queued are skipped, as is every job while `refuse()` is true."""
        while (job := self._queue.get()) is not None:
            with self.lock:
                if job in self.pending and not refuse():
                    self.pending.remove(job)
                    self.running = job
                    return job
        return None

    def cancel(self, job_id: str | None) -> bool:
        """Cancel job `job_id` (None: the running one): a queued job is answered `cancelled` now, a running one
        when it stops. False: no such job in this lane."""
        with self.lock:
            running = self.running
            target = job_id if job_id is not None else (running.job_id if running is not None else None)
            queued = next((job for job in self.pending if job.job_id == target), None)
            if queued is not None:
                self.pending.remove(queued)
            running = running if running is not None and running.job_id == target else None
        if queued is not None:
            self._finish(queued, m.Cancelled(queued.request.id, queued.job_id))
        if running is not None:
            running.cancel.cancel()
        return queued is not None or running is not None

    def stop(self) -> None:
        """Answer every queued job `cancelled`, cancel the running one, and let the worker's `next` return None."""
        with self.lock:
            pending, self.pending = self.pending, []
            running = self.running
        for job in pending:
            self._finish(job, m.Cancelled(job.request.id, job.job_id))
        if running is not None:
            running.cancel.cancel()
        self._queue.put(None)
