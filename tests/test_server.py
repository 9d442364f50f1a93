"""`ltx-backend serve` as a host drives it: a real subprocess on the tiny model, lines in, lines out."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

from ltx_backend.server import messages as m

JOB = {"prompt": "a fox", "width": 128, "height": 128, "num_frames": 9, "seed": 1}


class Backend:
    def __init__(self, home: Path) -> None:
        env = {**os.environ, "LTX_BACKEND_HOME": str(home)}
        command = [sys.executable, "-m", "ltx_backend.cli.main", "serve", "--heartbeat", "0.5"]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.seen: list[dict] = []

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, **message: object) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def next(self, timeout: float = 60) -> dict:
        line = self.lines.get(timeout=timeout)
        assert line is not None, "the backend closed stdout"
        msgspec.json.decode(line, type=m.BackendMessage)  # every stdout line is a protocol message
        message = json.loads(line)
        self.seen.append(message)
        return message

    def until(self, predicate, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.1, deadline - time.monotonic()))
            if predicate(message):
                return message

    def close(self) -> int:
        if self.process.poll() is None:
            self.process.stdin.close()
        return self.process.wait(10)


@pytest.fixture
def backend(tmp_path: Path):
    server = Backend(tmp_path / "home")
    assert server.next()["type"] == "ready"
    yield server
    if server.process.poll() is None:
        server.process.kill()


def terminal(message: dict) -> bool:
    return message["type"] in ("result", "error", "cancelled")


def test_generate_lifecycle_and_status(backend: Backend, tmp_path: Path) -> None:
    backend.send(type="load", id="l", model="tiny")
    backend.send(type="generate", id="g", output_path=str(tmp_path / "a.mp4"), **JOB)
    assert backend.next()["type"] == "accepted"
    accepted = backend.next()
    assert accepted["type"] == "accepted" and accepted["id"] == "g" and accepted["queue_position"] == 1
    assert backend.until(lambda msg: msg.get("id") == "l" and msg["type"] != "heartbeat")["type"] == "loaded"
    backend.send(type="status", id="s")  # answered while the job runs
    status = backend.until(lambda msg: msg["type"] == "status")
    assert status["model"] == "tiny"
    end = backend.until(lambda msg: msg.get("id") == "g" and terminal(msg))
    assert end["type"] == "result" and Path(end["video_path"]).is_file() and end["job_id"] == accepted["job_id"]
    fractions = [msg["fraction"] for msg in backend.seen if msg["type"] == "progress"]
    assert fractions and fractions == sorted(fractions) and all(0 <= f <= 1 for f in fractions)
    assert [msg for msg in backend.seen if msg.get("id") == "g" and terminal(msg)] == [end]  # exactly one
    assert backend.close() == 0


def test_cancel_running_and_queued_jobs_and_keep_serving(backend: Backend, tmp_path: Path) -> None:
    backend.send(type="load", id="l", model="tiny")
    backend.send(type="generate", id="run", output_path=str(tmp_path / "run.mp4"), **JOB)
    backend.send(type="generate", id="wait", output_path=str(tmp_path / "wait.mp4"), **JOB)
    queued = backend.until(lambda msg: msg["type"] == "accepted" and msg["id"] == "wait")
    backend.send(type="cancel", id="c1", job_id=queued["job_id"])
    assert backend.until(lambda msg: msg.get("id") == "wait")["type"] == "cancelled"
    backend.until(lambda msg: msg["type"] == "progress" and msg.get("stage") == 1 and msg["id"] == "run")
    backend.send(type="cancel", id="c2")  # no job_id: the running job
    assert backend.until(lambda msg: msg.get("id") == "run" and terminal(msg))["type"] == "cancelled"
    assert not any(p.suffix == ".mp4" for p in tmp_path.iterdir())  # nothing partial left
    backend.send(type="cancel", id="c3", job_id="job-404")
    missing = backend.until(lambda msg: msg.get("id") == "c3")
    assert missing["type"] == "error" and missing["code"] == "job_not_found"
    backend.send(type="generate", id="again", output_path=str(tmp_path / "again.mp4"), **JOB)
    assert backend.until(lambda msg: msg.get("id") == "again" and terminal(msg))["type"] == "result"


@pytest.mark.parametrize("stop", ["eof", "sigterm"])
def test_eof_or_sigterm_cancels_and_exits_fast(backend: Backend, tmp_path: Path, stop: str) -> None:
    backend.send(type="load", id="l", model="tiny")
    backend.send(type="generate", id="g", output_path=str(tmp_path / "g.mp4"), **JOB)
    backend.until(lambda msg: msg["type"] == "progress" and msg["id"] == "g")
    start = time.monotonic()
    if stop == "eof":
        backend.process.stdin.close()
    else:
        backend.process.send_signal(signal.SIGTERM)
    assert backend.process.wait(10) == 0
    assert time.monotonic() - start < 2.5
    assert not (tmp_path / "g.mp4").exists()
    rest = _drain(backend)
    assert [msg["type"] for msg in rest if msg.get("id") == "g" and terminal(msg)] == ["cancelled"]


def _drain(backend: Backend) -> list[dict]:
    """Every line the (exited) backend still had in the pipe, checked as protocol messages."""
    rest = []
    while (line := backend.lines.get(timeout=10)) is not None:
        msgspec.json.decode(line, type=m.BackendMessage)
        rest.append(json.loads(line))
    return rest


def test_repeated_signals_while_stopping_never_crash(backend: Backend, tmp_path: Path) -> None:
    """EOF, then SIGTERM, SIGINT and SIGTERM again while the job is still unwinding: exit 0, one `cancelled`."""
    backend.send(type="load", id="l", model="tiny")
    backend.send(type="generate", id="g", output_path=str(tmp_path / "g.mp4"), **JOB)
    backend.until(lambda msg: msg["type"] == "progress" and msg["id"] == "g")
    start = time.monotonic()
    backend.process.stdin.close()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        time.sleep(0.05)
        if backend.process.poll() is None:
            backend.process.send_signal(sig)
    assert backend.process.wait(10) == 0
    assert time.monotonic() - start < 2.5
    rest = _drain(backend)
    assert [msg["type"] for msg in backend.seen + rest if msg.get("id") == "g" and terminal(msg)] == ["cancelled"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == []


def test_closed_stdout_stops_the_server_and_runs_nothing_queued(tmp_path: Path) -> None:
    env = {**os.environ, "LTX_BACKEND_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [sys.executable, "-m", "ltx_backend.cli.main", "serve", "--heartbeat", "0.2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    for message in ({"type": "load", "id": "l", "model": "tiny"},
                    {"type": "generate", "id": "a", "output_path": str(out / "a.mp4"), **JOB},
                    {"type": "generate", "id": "b", "output_path": str(out / "b.mp4"), **JOB}):  # fmt: skip
        process.stdin.write(json.dumps(message).encode() + b"\n")
    process.stdin.flush()
    while (message := json.loads(process.stdout.readline()))["type"] != "progress":
        pass
    start = time.monotonic()
    process.stdout.close()  # the host stops listening; stdin stays open
    assert process.wait(10) == 0
    assert time.monotonic() - start < 2.5  # noticed at the next write (a progress or heartbeat line)
    assert list(out.iterdir()) == []  # a was cancelled, b never ran
    process.stdin.close()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_serve_refuses_a_heartbeat_that_is_not_positive(value: str) -> None:
    command = [sys.executable, "-m", "ltx_backend.cli.main", "serve", "--heartbeat", value]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert "Invalid value for '--heartbeat'" in done.stderr and "Traceback" not in done.stderr


def test_serve_reports_an_unwritable_log_file_before_ready(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    for log_file in ("/proc/no-such-dir/serve.log", str(tmp_path / "file" / "serve.log"), str(tmp_path)):
        command = [sys.executable, "-m", "ltx_backend.cli.main", "serve", "--log-file", log_file]
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        assert done.returncode == 2 and b"Traceback" not in done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 1, lines
        error = msgspec.json.decode(lines[0], type=m.BackendMessage)
        assert isinstance(error, m.Error) and error.code == "output_write_failed" and error.field == "--log-file"
        assert log_file in error.message


def test_bad_lines_never_stop_the_server(backend: Backend) -> None:
    backend.process.stdin.write("{oops\n")
    backend.send(type="nope", id="1")
    backend.send(type="generate", id="2", prompt="x", output_path="/tmp/x.mp4", width="wide")
    backend.send(type="shutdown", id="3")
    codes = [backend.next() for _ in range(4)]
    assert [c.get("code") for c in codes[:3]] == ["parse_error", "unknown_type", "invalid_params"]
    assert codes[2]["field"] == "width" and all(c["hint"] for c in codes[:3])
    assert codes[3] == {"type": "bye", "id": "3"}
    assert backend.process.wait(10) == 0


def test_load_downloads_a_missing_repo_with_byte_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, with the hub faked: `load` of an uncached repo id downloads it, reporting bytes, then loads."""
    import io

    from ltx_backend import events
    from ltx_backend.pipeline import engine as engine_module
    from ltx_backend.server import server as server_module
    from ltx_backend.tiny import write_tiny_model
    from ltx_backend.weights import download

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    fetched: dict[str, Path] = {}

    def fake_download(repo: str, revision: str = "main", emit=events.ignore, **_: object) -> Path:
        for done in (0, 500, 1000):
            emit(events.DownloadProgress(repo, done, 1000))
        fetched[repo] = write_tiny_model(tmp_path / repo.replace("/", "--"))
        return fetched[repo]

    from ltx_backend.weights import resolve

    real_resolve = resolve.resolve_model

    def resolve_fetched(model: str) -> Path:
        return fetched.get(model) or real_resolve(model)

    monkeypatch.setattr(download, "download_model", fake_download)
    monkeypatch.setattr(engine_module, "resolve_model", resolve_fetched)  # as if it had landed in the hub cache
    monkeypatch.setattr(resolve, "resolve_model", resolve_fetched)
    output = io.BytesIO()
    server = server_module.Server(output, progress_interval_s=0)
    server._worker.start()
    server.handle_line('{"type":"load","id":"l","model":"test/tiny-ltx"}')
    deadline = time.monotonic() + 30
    while b'"loaded"' not in output.getvalue() and b'"error"' not in output.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    server._stop()
    sent = [json.loads(line) for line in output.getvalue().splitlines()]
    downloads = [msg for msg in sent if msg["type"] == "progress" and msg.get("bytes") is not None]
    assert [msg["bytes"] for msg in downloads] == [0, 500, 1000] and downloads[-1]["fraction"] == 1.0
    assert sent[-1]["type"] == "loaded" and sent[-1]["path"] == str(fetched["test/tiny-ltx"])
