"""`models`, `download`, `delete`, `inspect` and per-job logs over the stdio protocol, on the tiny model and a
loopback fake Hub (tests/fake_hub.py): nothing touches the network."""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fake_hub import FakeHub
from server_harness import JOB, Host, Sink, check_stopped, run

from ltx_backend.server.server import Server
from ltx_backend.tiny import write_tiny_model

COMMIT = "d" * 40
EVENTS = {"accepted", "progress", "heartbeat", "ready"}
TERMINAL = {"downloaded", "error", "cancelled", "inspected", "result", "loaded", "unloaded"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("LTX_BACKEND_HOME", str(tmp_path / "home"))
    return tmp_path / "hub"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    with FakeHub(commit=COMMIT) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def _server(sink: Sink, **options) -> Server:
    return Server(sink, heartbeat_s=5.0, progress_interval_s=0, **options)


def _end(sink: Sink, request_id: str) -> dict:
    return sink.wait_for(lambda msg: msg.get("id") == request_id and msg["type"] in TERMINAL | {"models", "deleted"})


def test_download_job_reports_bytes_is_cancelled_mid_file_and_resumes(cache: Path, tiny_model: Path, hub: FakeHub):
    files = hub.add_folder("test/tiny", tiny_model, {"ltx-2-19b-lora-384.safetensors": b"l" * 1000})
    weights = files["model.safetensors"]
    hub.pause_at["model.safetensors"] = 300_000
    hub.piece_delay = 0.05  # the bytes before the pause take a few progress intervals
    blobs = cache / "models--test--tiny" / "blobs"
    partial = blobs / (hashlib.sha256(weights).hexdigest() + ".incomplete")
    sink = Sink()
    seen: dict[str, int] = {}

    def script(host: Host) -> None:
        host.send(type="download", id="d1", repo="test/tiny")
        accepted = sink.wait_for(lambda msg: msg["type"] == "accepted" and msg["id"] == "d1")
        assert hub.paused.wait(30), "the download never reached the pause"
        host.send(type="status", id="s")  # the reader answers while the download runs
        sink.wait_for(lambda msg: msg["type"] == "status" and msg["id"] == "s")
        host.send(type="cancel", id="c", job_id=accepted["job_id"])
        hub.release.set()  # the next bytes arrive; the download sees the cancel and stops
        assert _end(sink, "d1")["type"] == "cancelled"
        seen["partial"] = partial.stat().st_size
        del hub.pause_at["model.safetensors"]
        hub.requests.clear()
        host.send(type="download", id="d2", repo="test/tiny")
        _end(sink, "d2")
        host.stop("shutdown")

    run(_server(sink), script)
    messages = sink.messages()
    check_stopped(messages, bye="bye")
    assert 300_000 <= seen["partial"] < len(weights)
    progress = [msg for msg in messages if msg["type"] == "progress" and msg["id"] == "d1" and "bytes" in msg]
    assert progress[0]["bytes"] == 0 and progress[-1]["bytes"] > 0 and progress[-1]["phase"] == "download"
    assert progress[-1]["total_bytes"] == sum(len(data) for name, data in files.items() if "lora" not in name)
    assert any(msg.get("speed", 0) > 0 and msg.get("eta") is not None for msg in progress)
    done = next(msg for msg in messages if msg.get("id") == "d2" and msg["type"] == "downloaded")
    total = sum(len(data) for name, data in files.items() if "lora" not in name)
    assert done["size_bytes"] == total
    fetched_first = sum(len(files[name]) for name in ("config.json", "embedded_config.json"))  # before the cancel
    assert done["downloaded_bytes"] == total - fetched_first - seen["partial"]  # resumed, not fetched again
    assert done["skipped"] == ["ltx-2-19b-lora-384.safetensors"]
    assert (done["commit"], done["kind"], done["layout"]) == (COMMIT, "ltx", "unified")
    url = f"/{COMMIT}/model.safetensors"
    resumed = [rng for method, path, rng in hub.requests if path.endswith(url) and method == "GET"]
    assert resumed == [f"bytes={seen['partial']}-"]
    snapshot = Path(done["path"])
    assert hashlib.sha256((snapshot / "model.safetensors").read_bytes()).digest() == hashlib.sha256(weights).digest()
    assert not partial.exists()
    second = [msg for msg in messages if msg["type"] == "progress" and msg["id"] == "d2" and "bytes" in msg]
    assert second[0]["bytes"] >= seen["partial"] and second[-1]["bytes"] == total == second[-1]["total_bytes"]


def test_download_refuses_when_the_disk_is_too_small(cache: Path, tiny_model: Path, hub: FakeHub, monkeypatch):
    hub.add_folder("test/tiny", tiny_model)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    sink = Sink()

    def script(host: Host) -> None:
        host.send(type="download", id="d", repo="test/tiny")
        _end(sink, "d")
        host.send(type="download", id="bad", repo="not a repo")
        host.send(type="download", id="variant", repo="test/tiny", variant="pro")
        host.send(type="models", id="m")
        _end(sink, "m")
        host.stop("shutdown")

    run(_server(sink), script)
    by_id = {msg.get("id"): msg for msg in sink.messages() if msg["type"] in {"error", "models"}}
    error = by_id["d"]
    needed = sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    assert error["code"] == "disk_full" and error["job_id"]
    assert f"needs {needed} bytes" in error["message"] and "only 4096 bytes" in error["message"]
    assert "HF_HUB_CACHE" in error["hint"]
    assert not list((cache / "models--test--tiny").rglob("*.incomplete"))  # nothing was written
    assert (by_id["bad"]["code"], by_id["bad"]["field"], by_id["bad"]["job_id"]) == ("invalid_params", "repo", None)
    assert (by_id["variant"]["code"], by_id["variant"]["field"]) == ("invalid_params", "variant")
    assert by_id["m"]["free_bytes"] == 4096 and by_id["m"]["models"] == []


def test_models_lists_and_delete_refuses_a_loaded_model_then_frees_it(cache: Path, tiny_model: Path, hub: FakeHub):
    hub.add_folder("test/tiny", tiny_model)
    sink = Sink()

    def script(host: Host) -> None:
        host.send(type="download", id="d", repo="test/tiny")
        _end(sink, "d")
        host.send(type="load", id="l", model="test/tiny")
        _end(sink, "l")
        host.send(type="models", id="m")
        _end(sink, "m")
        host.send(type="delete", id="busy", model="test/tiny")
        _end(sink, "busy")
        host.send(type="unload", id="u")
        _end(sink, "u")
        host.send(type="delete", id="del", model="test/tiny")
        _end(sink, "del")
        host.send(type="delete", id="again", model="test/tiny")
        host.send(type="delete", id="path", model="/tmp/x")
        host.send(type="models", id="m2")
        _end(sink, "m2")
        host.stop("shutdown")

    run(_server(sink), script)
    messages = sink.messages()
    check_stopped(messages, bye="bye")
    by_id = {msg.get("id"): msg for msg in messages if msg["type"] not in EVENTS}
    listed = {entry["name"]: entry for entry in by_id["m"]["models"]}
    entry = listed["test/tiny"]
    size = sum(p.stat().st_size for p in tiny_model.rglob("*") if p.is_file())
    assert (entry["kind"], entry["layout"], entry["model_version"]) == ("ltx", "unified", "2.0") and entry["complete"]
    assert entry["size_bytes"] == size and entry["refs"] == ["main"] and entry["last_used"] > 0
    assert entry["text_encoder"] == "text_encoder" and entry["error"] is None
    assert by_id["m"]["total_bytes"] == size and by_id["m"]["free_bytes"] > 0
    assert (by_id["busy"]["code"], by_id["busy"]["field"]) == ("model_in_use", "model")
    assert "loaded" in by_id["busy"]["message"] and "unload" in by_id["busy"]["hint"]
    deleted = by_id["del"]
    assert deleted["type"] == "deleted" and size <= deleted["freed_bytes"] <= size + 4096  # + refs and locks
    assert deleted["paths"] == [str(cache / "models--test--tiny")] and not (cache / "models--test--tiny").exists()
    assert by_id["again"]["code"] == "model_not_found"
    assert (by_id["path"]["code"], by_id["path"]["field"]) == ("invalid_params", "model")
    assert "test/tiny" not in {entry["name"] for entry in by_id["m2"]["models"]}


def _mismatched(tiny_model: Path, folder: Path) -> Path:
    """A copy of the tiny model whose transformer config has one layer more than its weights."""
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "embedded_config.json").read_text())
    config["transformer"]["num_layers"] += 1
    (folder / "embedded_config.json").write_text(json.dumps(config))
    return folder


def test_inspect_finds_what_loading_would_fail_on_and_job_logs_hold_the_traceback(
    cache: Path, tiny_model: Path, tmp_path: Path
) -> None:
    broken = _mismatched(tiny_model, tmp_path / "broken")
    logs = tmp_path / "logs"
    sink = Sink()

    def script(host: Host) -> None:
        host.send(type="inspect", id="good", model=str(tiny_model))
        host.send(type="inspect", id="bad", model=str(broken))
        host.send(type="inspect", id="none", model=str(tmp_path / "missing"))
        _end(sink, "none")
        host.send(type="load", id="l", model=str(broken))  # opening it works: the layout and configs parse
        _end(sink, "l")
        host.send(type="generate", id="g", output_path=str(tmp_path / "g.mp4"), **JOB)
        _end(sink, "g")
        host.send(type="generate", id="nolog", output_path=str(tmp_path / "n.mp4"),
                  log_file=str(tmp_path / "file" / "x.log" / "y.log"), **JOB)  # fmt: skip
        host.stop("shutdown")

    (tmp_path / "file").write_text("a file where a folder should be")
    run(_server(sink, log_dir=str(logs)), script)
    messages = sink.messages()
    by_id = {msg.get("id"): msg for msg in messages if msg["type"] not in EVENTS}
    good, bad = by_id["good"], by_id["bad"]
    assert good["type"] == "inspected" and good["ok"] and good["problems"] == []
    assert {c["name"] for c in good["components"]} >= {"text_encoder", "transformer", "vae_decoder", "vocoder"}
    assert all(c["ok"] and c["tensors"] > 0 and c["bytes"] > 0 for c in good["components"])
    assert (good["layout"], good["model_version"], good["variant"]) == ("unified", "2.0", "distilled")
    assert not bad["ok"] and bad["problems"][0]["code"] == "weights_missing_key"
    assert "transformer" in bad["problems"][0]["message"]
    assert [c["name"] for c in bad["components"] if not c["ok"]] == ["transformer"]
    assert by_id["none"]["code"] == "model_not_found"
    # What inspect predicted is what the job meets, and its log says so with the traceback.
    failed = by_id["g"]
    assert failed["type"] == "error" and failed["code"] == "weights_missing_key"
    log_path = Path(failed["log_path"])
    assert log_path.parent == logs
    text = log_path.read_text()
    assert '"prompt":"a fox"' in text and "memory plan: {'peak_gb'" in text
    assert "phase text_encoding started" in text and "Traceback (most recent call last)" in text
    assert '"code":"weights_missing_key"' in text.splitlines()[-1]
    assert (by_id["nolog"]["code"], by_id["nolog"]["field"]) == ("output_write_failed", "log_file")


def test_a_job_log_holds_phase_timings_and_the_result(cache: Path, tmp_path: Path) -> None:
    sink = Sink()
    log_file = tmp_path / "logs" / "one.log"

    def script(host: Host) -> None:
        host.send(type="load", id="l", model="tiny")
        host.send(type="generate", id="g", output_path=str(tmp_path / "a.mp4"), log_file=str(log_file), **JOB)
        _end(sink, "g")
        host.stop("shutdown")

    run(_server(sink), script)
    result = next(msg for msg in sink.messages() if msg.get("id") == "g" and msg["type"] == "result")
    assert result["log_path"] == str(log_file)
    text = log_file.read_text()
    for phase in ("text_encoding", "stage1", "upsample", "stage2", "audio_decode", "video_decode"):
        assert f"phase {phase} finished in " in text
    assert "memory plan:" in text and '"type":"result"' in text.splitlines()[-1]
    assert "Traceback" not in text


def test_a_stalled_download_sends_heartbeats_and_a_stop_cancels_it_keeping_its_partial_file(
    cache: Path, tiny_model: Path, hub: FakeHub
) -> None:
    files = hub.add_folder("test/tiny", tiny_model)
    hub.pause_at["model.safetensors"] = 200_000  # the Hub stalls mid-file until the test ends
    partial = cache / "models--test--tiny" / "blobs" / (hashlib.sha256(files["model.safetensors"]).hexdigest()
                                                         + ".incomplete")  # fmt: skip
    sink = Sink()

    def script(host: Host) -> None:
        host.send(type="download", id="d", repo="test/tiny")
        assert hub.paused.wait(30)
        sink.wait_for(lambda msg: msg["type"] == "heartbeat" and msg["id"] == "d", timeout=10)
        host.stop("shutdown")

    run(Server(sink, heartbeat_s=0.3, progress_interval_s=0, grace_s=0.5), script)
    hub.release.set()
    messages = sink.messages()
    terminals = check_stopped(messages, bye="bye")
    assert [t["type"] for t in terminals.values()] == ["cancelled"]
    beat = next(msg for msg in messages if msg["type"] == "heartbeat")
    assert (beat["phase"], beat["job_id"]) == ("download", terminals["job-1"]["job_id"]) and beat["elapsed"] > 0
    assert partial.stat().st_size >= 200_000  # kept for the next download to resume


def test_load_of_an_uncached_repo_downloads_it_from_the_hub(cache: Path, tiny_model: Path, hub: FakeHub) -> None:
    hub.add_folder("test/tiny", tiny_model)
    sink = Sink()

    def script(host: Host) -> None:
        host.send(type="load", id="l", model="test/tiny")
        _end(sink, "l")
        host.stop("shutdown")

    run(_server(sink), script)
    messages = sink.messages()
    loaded = next(msg for msg in messages if msg["type"] == "loaded")
    assert loaded["path"] == str(cache / "models--test--tiny" / "snapshots" / COMMIT)
    progress = [msg for msg in messages if msg["type"] == "progress" and "bytes" in msg]
    size = sum(len(data) for data in hub.repos["test/tiny"].values())
    assert progress[-1]["bytes"] == progress[-1]["total_bytes"] == size


def test_a_queued_job_cancelled_before_it_ran_closes_its_log(cache: Path, tmp_path: Path) -> None:
    sink = Sink()
    logs = tmp_path / "logs"

    def script(host: Host) -> None:
        host.send(type="load", id="l", model="tiny")
        host.send(type="generate", id="g1", output_path=str(tmp_path / "1.mp4"), **JOB)
        host.send(type="generate", id="g2", output_path=str(tmp_path / "2.mp4"), **JOB)
        queued = sink.wait_for(lambda msg: msg["type"] == "accepted" and msg["id"] == "g2")
        host.send(type="cancel", id="c", job_id=queued["job_id"])
        _end(sink, "g2")
        _end(sink, "g1")
        host.stop("shutdown")

    run(_server(sink, log_dir=str(logs)), script)
    check_stopped(sink.messages(), bye="bye")
    texts = {path.name.split("-", 2)[-1]: path.read_text() for path in logs.iterdir()}
    assert sorted(texts) == ["job-2.log", "job-3.log"]
    assert '"type":"cancelled"' in texts["job-3.log"].splitlines()[-1] and "started" not in texts["job-3.log"]
    assert '"type":"result"' in texts["job-2.log"].splitlines()[-1]
