"""Drive `Server.serve` in this process: stdin is a real pipe, stdout a list of lines, and a host script runs on a
thread while `serve` runs on the main thread (so its signal handlers are the real ones).

`phase_hook` slows or interrupts a job at an engine event (a phase start, a denoising step) without reaching into
the engine: it wraps the server's progress sink, which the engine calls on its own thread.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from ltx_backend import events
from ltx_backend.server import messages as m
from ltx_backend.server.server import Server

TERMINAL = {"result", "error", "cancelled", "loaded", "unloaded", "downloaded", "inspected"}
JOB = {"prompt": "a fox", "width": 128, "height": 128, "num_frames": 9, "seed": 1}


class Sink:
    """The server's stdout: whole lines, waitable; `fail_after` lines it raises BrokenPipeError (host gone)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.lines: list[bytes] = []
        self.times: list[float] = []
        self.fail_after = fail_after
        self._cond = threading.Condition()

    def write(self, data: bytes) -> int:
        with self._cond:
            if self.fail_after is not None and len(self.lines) >= self.fail_after:
                raise BrokenPipeError(32, "Broken pipe")
            self.lines.append(bytes(data))
            self.times.append(time.monotonic())
            self._cond.notify_all()
        return len(data)

    def flush(self) -> None:
        pass

    def messages(self) -> list[dict]:
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            assert line.endswith(b"\n") and line.count(b"\n") == 1, line
            msgspec.json.decode(line, type=m.BackendMessage)  # only protocol messages
        return [json.loads(line) for line in lines]

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    message = json.loads(line)
                    if predicate(message):
                        return message
                seen = len(self.lines)
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; last lines: {self.lines[-5:]}"
                self._cond.wait(left)


class Host:
    """The host side of the pipe, used by the script thread."""

    def __init__(self, fd: int, sink: Sink) -> None:
        self.fd = fd
        self.sink = sink
        self.stopped_at: float | None = None  # when the stop (EOF, signal, shutdown) was sent

    def send(self, **message: object) -> None:
        self.raw(json.dumps(message).encode() + b"\n")

    def raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def stop(self, how: str) -> None:
        """`shutdown`, `eof`, or a signal name (`SIGTERM`, `SIGINT`, ...) sent to this process."""
        self.stopped_at = time.monotonic()
        if how == "shutdown":
            self.send(type="shutdown", id="bye")
        elif how == "eof":
            self.eof()
        else:
            os.kill(os.getpid(), getattr(signal, how))

    def eof(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def run(server: Server, script: Callable[[Host], None], timeout: float = 120.0) -> tuple[Host, float]:
    """Serve until the script's stop; returns the host and when `serve` returned (monotonic)."""
    read_fd, write_fd = os.pipe()
    host = Host(write_fd, server._output)  # type: ignore[arg-type]
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            script(host)
        except BaseException as exc:  # reported by the test, after serve returns
            failure.append(exc)
            host.eof()

    thread = threading.Thread(target=drive, name="test-host", daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb", buffering=0) as stdin:
        server.serve(stdin)
    returned = time.monotonic()
    host.eof()
    thread.join(timeout)
    if failure:
        raise failure[0]
    return host, returned


def phase_hook(server: Server, on_event: Callable[[events.Event], None]) -> None:
    """Call `on_event` (on the engine's thread) for every engine event before the server sees it."""
    original = server._progress_sink

    def sink(job, tracker):
        emit = original(job, tracker)

        def hooked(event: events.Event) -> None:
            on_event(event)
            emit(event)

        return hooked

    server._progress_sink = sink  # type: ignore[method-assign]


def in_phase(event: events.Event, phase: str) -> bool:
    """Whether `event` is the start of `phase`, or (for stage1/stage2) its first denoising step."""
    if isinstance(event, events.PhaseStarted):
        return event.phase.value == phase
    if isinstance(event, events.DenoiseStep):
        return f"stage{event.stage}" == phase and event.step == 1
    return False


def check_stopped(messages: list[dict], bye: str | None = None) -> dict[str, dict]:
    """Every accepted job has exactly one terminal message, all before `bye` (the last line when asked for);
    nothing about a job follows its terminal message. Returns job_id -> terminal message."""
    accepted = [msg["job_id"] for msg in messages if msg["type"] == "accepted"]
    terminals: dict[str, dict] = {}
    for index, msg in enumerate(messages):
        job = msg.get("job_id")
        if job in terminals and msg["type"] in {"progress", "heartbeat"} | TERMINAL:
            raise AssertionError(f"{msg} after the terminal message of {job}")
        if msg["type"] in TERMINAL and job is not None and msg.get("code") != "job_not_found":
            terminals[job] = msg | {"index": index}
    assert sorted(terminals) == sorted(accepted), f"jobs without one terminal: {set(accepted) ^ set(terminals)}"
    if bye is not None:
        assert messages[-1] == {"type": "bye", "id": bye}, messages[-3:]
        assert sum(msg["type"] == "bye" for msg in messages) == 1
    else:
        assert not any(msg["type"] == "bye" for msg in messages)
    return terminals


def leftovers(folder: Path, keep: set[str] = frozenset()) -> list[str]:
    """Everything in `folder` but the names in `keep` (what successful jobs wrote), hidden files included."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)
