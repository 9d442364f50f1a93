"""Stopping `serve` from every phase, and `load`'s checks: in process on the tiny model (tests/server_harness.py).

Each stop test asserts the promises of protocol/PROTOCOL.md "Stopping": every accepted job gets exactly one
terminal message, all before `bye`; `serve` returns within 2 s of the stop; the output folder holds nothing.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from server_harness import JOB, Host, Sink, check_stopped, in_phase, leftovers, phase_hook, run

from ltx_backend import events
from ltx_backend.server.server import Server

EXIT_S = 2.0  # the protocol's promise, from the stop to `serve` returning (the process exits right after)


@pytest.fixture(scope="module", autouse=True)
def tiny_home(tmp_path_factory: pytest.TempPathFactory):
    """One LTX_BACKEND_HOME for the module, so the tiny model is written once."""
    previous = os.environ.get("LTX_BACKEND_HOME")
    os.environ["LTX_BACKEND_HOME"] = str(tmp_path_factory.mktemp("home"))
    yield
    if previous is None:
        os.environ.pop("LTX_BACKEND_HOME", None)
    else:
        os.environ["LTX_BACKEND_HOME"] = previous


def _server(sink: Sink) -> Server:
    return Server(sink, heartbeat_s=0.5, progress_interval_s=0)


def _finish(server: Server) -> None:
    """Let a worker that was answered for (or is still unwinding) end before the next test uses MLX."""
    server._worker.join(60)
    assert not server._worker.is_alive()


STOPS = [  # every phase once, every way to stop at least once (each case runs a tiny job: a few seconds)
    ("text_encoding", "SIGTERM"),
    ("stage1", "shutdown"),
    ("stage2", "SIGINT"),
    ("audio_decode", "eof"),
    ("video_decode", "shutdown"),
    ("video_decode", "SIGTERM"),
    ("mux", "SIGINT"),
]


@pytest.mark.parametrize(("phase", "how"), STOPS, ids=[f"{p}-{h}" for p, h in STOPS])
def test_stop_in_a_phase_ends_every_job_once_before_exit(phase: str, how: str, tmp_path: Path) -> None:
    sink = Sink()
    server = _server(sink)
    reached = threading.Event()

    def hook(event: events.Event) -> None:
        if in_phase(event, phase) and not reached.is_set():
            reached.set()
            time.sleep(0.3)  # the stop lands inside the phase

    phase_hook(server, hook)

    first_succeeds = (phase, how) == ("video_decode", "shutdown")  # the folder then holds exactly its two files
    wav = {"audio_output_path": str(tmp_path / "a.wav")}

    def script(host: Host) -> None:
        host.send(type="load", id="l", model="tiny")
        if first_succeeds:
            reached.set()  # not this job
            host.send(type="generate", id="ok", output_path=str(tmp_path / "ok.mp4"),
                      audio_output_path=str(tmp_path / "ok.wav"), **JOB)  # fmt: skip
            sink.wait_for(lambda msg: msg.get("id") == "ok" and msg["type"] == "result")
            reached.clear()
        host.send(type="generate", id="a", output_path=str(tmp_path / "a.mp4"), **wav, **JOB)
        host.send(type="generate", id="b", output_path=str(tmp_path / "b.mp4"), **JOB)
        assert reached.wait(60), f"the job never reached {phase}"
        host.stop(how)

    host, returned = run(server, script)
    assert returned - host.stopped_at < EXIT_S
    terminals = check_stopped(sink.messages(), bye="bye" if how == "shutdown" else None)
    expected = ["loaded", *(["result"] if first_succeeds else []), "cancelled", "cancelled"]
    assert [t["type"] for t in terminals.values()] == expected
    # no output, no partial file, no temporary folder: only what the successful job wrote
    assert leftovers(tmp_path) == (["ok.mp4", "ok.wav"] if first_succeeds else [])
    _finish(server)


def test_a_job_stuck_past_the_grace_period_is_answered_by_the_stop(tmp_path: Path) -> None:
    """A worker inside one long kernel cannot unwind in time: the stop sends its `cancelled`, and the worker's own
    terminal message, when it finally comes, is dropped."""
    sink = Sink()
    server = _server(sink)
    reached = threading.Event()

    def hook(event: events.Event) -> None:
        if in_phase(event, "text_encoding"):
            reached.set()
            time.sleep(4.0)  # longer than the grace period, and no cancel check inside

    phase_hook(server, hook)

    def script(host: Host) -> None:
        host.send(type="load", id="l", model="tiny")
        host.send(type="generate", id="a", output_path=str(tmp_path / "a.mp4"), **JOB)
        assert reached.wait(60)
        host.stop("SIGTERM")

    host, returned = run(server, script)
    assert returned - host.stopped_at < EXIT_S
    at_exit = sink.messages()
    assert [t["type"] for t in check_stopped(at_exit).values()] == ["loaded", "cancelled"]
    _finish(server)  # the worker unwinds later: nothing more reaches stdout
    assert sink.messages() == at_exit
    assert leftovers(tmp_path) == []


def test_repeated_signals_while_stopping_are_harmless(tmp_path: Path) -> None:
    sink = Sink()
    server = _server(sink)
    reached = threading.Event()

    def hook(event: events.Event) -> None:
        if in_phase(event, "stage1") and not reached.is_set():
            reached.set()
            time.sleep(0.8)

    phase_hook(server, hook)

    def script(host: Host) -> None:
        host.send(type="load", id="l", model="tiny")
        host.send(type="generate", id="a", output_path=str(tmp_path / "a.mp4"), **JOB)
        assert reached.wait(60)
        host.stop("eof")
        for name in ("SIGTERM", "SIGINT", "SIGTERM", "SIGHUP"):
            time.sleep(0.05)
            os.kill(os.getpid(), getattr(__import__("signal"), name))

    host, returned = run(server, script)  # a KeyboardInterrupt or an exception here fails the test
    assert returned - host.stopped_at < EXIT_S
    assert [t["type"] for t in check_stopped(sink.messages()).values()] == ["loaded", "cancelled"]
    assert leftovers(tmp_path) == []
    _finish(server)


def test_closed_stdout_cancels_everything_and_runs_nothing_queued(tmp_path: Path) -> None:
    sink = Sink()
    server = _server(sink)
    broken_at: list[float] = []
    started: list[str] = []

    def hook(event: events.Event) -> None:
        if isinstance(event, events.PhaseStarted) and event.phase is events.Phase.TEXT_ENCODING:
            started.append("job")
        if in_phase(event, "stage1") and not broken_at:
            sink.fail_after = 0  # the host closed its end of our stdout
            broken_at.append(time.monotonic())

    phase_hook(server, hook)

    def script(host: Host) -> None:
        host.send(type="load", id="l", model="tiny")
        host.send(type="generate", id="a", output_path=str(tmp_path / "a.mp4"), **JOB)
        host.send(type="generate", id="b", output_path=str(tmp_path / "b.mp4"), **JOB)
        deadline = time.monotonic() + 60
        while not broken_at and time.monotonic() < deadline:
            time.sleep(0.02)
        # stdin stays open: the broken stdout alone must stop the server

    _, returned = run(server, script)
    assert broken_at and returned - broken_at[0] < EXIT_S
    _finish(server)
    assert started == ["job"]  # b never started
    assert leftovers(tmp_path) == []


# --- load ------------------------------------------------------------------------------------------------------


def test_load_refuses_bad_models_before_any_download_and_keeps_the_loaded_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltx_backend.weights import download

    def no_download(repo: str, *args: object, **kwargs: object) -> Path:
        raise AssertionError(f"downloaded {repo}")

    monkeypatch.setattr(download, "download_model", no_download)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "empty").mkdir()
    bad = ["TINY", "", "/", str(fifo), str(tmp_path / "missing"), str(tmp_path / "empty"), "./typo", "x" * 5000]
    sink = Sink()
    server = _server(sink)

    def script(host: Host) -> None:
        host.send(type="load", id="ok", model="tiny", quantize=8)
        for index, model in enumerate(bad):
            host.send(type="load", id=f"bad{index}", model=model)
        host.send(type="load", id="enc", model="tiny", text_encoder=str(tmp_path / "no-encoder"))
        for value in (3, 0, -1, 2**40, 16):
            host.send(type="load", id=f"q{value}", model="tiny", quantize=value)
        sink.wait_for(lambda msg: msg.get("id") == "enc" and msg["type"] == "error")
        host.send(type="status", id="s")
        sink.wait_for(lambda msg: msg.get("id") == "s")
        host.send(type="unload", id="u")
        sink.wait_for(lambda msg: msg.get("id") == "u" and msg["type"] != "accepted")
        host.stop("shutdown")

    run(server, script)
    messages = sink.messages()
    by_id = {msg["id"]: msg for msg in messages if msg["type"] not in ("ready", "accepted", "progress", "heartbeat")}
    loaded = by_id["ok"]
    assert loaded["type"] == "loaded" and loaded["job_id"] and loaded["quantization"] == {"bits": 8, "group_size": 64}
    for index, model in enumerate(bad):
        error = by_id[f"bad{index}"]
        assert (error["type"], error["code"], error["field"]) == ("error", "model_not_found", "model"), error
        assert error["job_id"] and (model[:50] in error["message"] or not model), error
    assert "did you mean 'tiny'" in by_id["bad0"]["hint"]
    assert (by_id["enc"]["code"], by_id["enc"]["field"]) == ("model_not_found", "text_encoder")
    for value in (3, 0, -1, 2**40, 16):  # refused before they are jobs
        error = by_id[f"q{value}"]
        assert (error["code"], error["field"], error["job_id"]) == ("invalid_params", "quantize", None)
    assert by_id["s"]["model"] == "tiny"  # the failed loads kept it
    assert by_id["u"]["type"] == "unloaded" and by_id["u"]["job_id"]
    check_stopped(messages, bye="bye")


def test_a_running_load_is_cancelled_during_its_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ltx_backend.weights import download

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    stopped = threading.Event()

    def slow_download(repo: str, revision: str = "main", emit=events.ignore, check=lambda: None, **_) -> Path:
        for done in range(0, 10**9, 1000):  # a download that would take minutes; `check` raises once cancelled
            emit(events.DownloadProgress(repo, done, 10**9))
            check()
            time.sleep(0.02)
        raise AssertionError("not cancelled")

    def watched(*args: object, **kwargs: object) -> Path:
        try:
            return slow_download(*args, **kwargs)
        finally:
            stopped.set()

    monkeypatch.setattr(download, "download_model", watched)
    sink = Sink()
    server = _server(sink)
    latency: list[float] = []

    def script(host: Host) -> None:
        host.send(type="load", id="tiny", model="tiny")
        host.send(type="load", id="big", model="test/big-model")
        accepted = sink.wait_for(lambda msg: msg["type"] == "accepted" and msg["id"] == "big")
        sink.wait_for(lambda msg: msg["type"] == "progress" and msg["id"] == "big" and msg.get("bytes", 0) > 0)
        start = time.monotonic()
        host.send(type="cancel", id="c", job_id=accepted["job_id"])
        end = sink.wait_for(lambda msg: msg.get("id") == "big" and msg["type"] not in ("accepted", "progress"))
        latency.append(time.monotonic() - start)
        assert end["type"] == "cancelled", end
        assert stopped.wait(5), "the download thread kept going"
        host.send(type="status", id="s")
        sink.wait_for(lambda msg: msg.get("id") == "s")
        host.stop("shutdown")

    run(server, script)
    messages = sink.messages()
    assert latency[0] < 0.5
    assert not [msg for msg in messages if msg.get("code") == "job_not_found"]
    assert next(msg for msg in messages if msg.get("id") == "s")["model"] == "tiny"
    check_stopped(messages, bye="bye")
