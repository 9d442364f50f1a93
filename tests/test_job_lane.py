"""The job lane both server lanes use: positions, the accepted-before-start order, cancels and a stop."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ltx_backend.pipeline.engine import CancelToken
from ltx_backend.server import messages as m
from ltx_backend.server.job_lane import JobLane


@dataclass
class FakeJob:
    job_id: str
    request: m.Status = field(default_factory=lambda: m.Status(id="r"))
    cancel: CancelToken = field(default_factory=CancelToken)


def lane() -> tuple[JobLane, list[tuple[str, str]]]:
    answered: list[tuple[str, str]] = []

    def finish(job: FakeJob, reply: m.Reply) -> None:
        answered.append((job.job_id, type(reply).__name__.lower()))

    return JobLane(threading.Lock(), finish), answered


def test_positions_count_the_running_job_and_the_queue() -> None:
    jobs, _ = lane()
    a, b, c = FakeJob("a"), FakeJob("b"), FakeJob("c")
    assert [jobs.add(a), jobs.add(b)] == [0, 1]
    jobs.release(a)
    assert jobs.next() is a and jobs.running is a
    assert jobs.add(c) == 2  # a runs, b waits
    assert [job.job_id for job in jobs.jobs()] == ["a", "b", "c"]


def test_a_job_reaches_the_worker_only_once_released() -> None:
    """The owner answers `accepted` between `add` and `release`: nothing about the job can come before it."""
    jobs, _ = lane()
    job = FakeJob("a")
    jobs.add(job)
    taken: list = []
    worker = threading.Thread(target=lambda: taken.append(jobs.next()))
    worker.start()
    worker.join(0.2)
    assert worker.is_alive() and jobs.running is None
    jobs.release(job)
    worker.join(5)
    assert taken == [job]


def test_cancel_answers_a_queued_job_now_and_signals_the_running_one() -> None:
    jobs, answered = lane()
    a, b = FakeJob("a"), FakeJob("b")
    for job in (a, b):
        jobs.add(job)
        jobs.release(job)
    assert jobs.next() is a
    assert jobs.cancel("b") and answered == [("b", "cancelled")]
    assert not a.cancel.cancelled
    assert jobs.cancel(None) and a.cancel.cancelled  # no id: the running job; it answers when it stops
    assert answered == [("b", "cancelled")]
    assert not jobs.cancel("nope")


def test_a_cancelled_job_is_skipped_and_a_stop_ends_the_worker() -> None:
    jobs, answered = lane()
    a, b, c = FakeJob("a"), FakeJob("b"), FakeJob("c")
    for job in (a, b, c):
        jobs.add(job)
        jobs.release(job)
    jobs.cancel("a")
    assert jobs.next() is b  # a was answered while queued
    jobs.stop()
    assert answered == [("a", "cancelled"), ("c", "cancelled")] and b.cancel.cancelled
    assert jobs.next() is None  # c is no longer pending; then the stop's end marker


def test_refused_jobs_are_not_started() -> None:
    jobs, _ = lane()
    job = FakeJob("a")
    jobs.add(job)
    jobs.release(job)
    jobs.release(None)  # the end marker, so `next` returns once it has skipped the refused job
    assert jobs.next(refuse=lambda: True) is None and jobs.running is None
