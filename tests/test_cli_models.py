"""`ltx-backend models`, `download` and `delete` on a fake hub cache and a loopback fake Hub; no network."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import httpx2
import pytest
from click.testing import CliRunner
from fake_hub import FakeHub
from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from ltx_backend import events
from ltx_backend.cli.main import cli
from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights.download import download_model
from ltx_backend.weights.resolve import resolve_model

COMMIT = "a" * 40
OTHER_COMMIT = "b" * 40


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache and an empty backend home (so no tiny model is listed unless a test writes one)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("LTX_BACKEND_HOME", str(tmp_path / "home"))
    (tmp_path / "hub").mkdir()
    return tmp_path / "hub"


def add_snapshot(cache: Path, repo: str, source: Path, commit: str = COMMIT, ref: str | None = "main") -> Path:
    """Lay `source` out the way huggingface_hub does: content-addressed blobs, a snapshot of relative symlinks."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    blobs, snapshot = repo_dir / "blobs", repo_dir / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


def unique_size(folder: Path) -> int:
    return sum(len(p.read_bytes()) for p in folder.rglob("*") if p.is_file())


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def by_name(report: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in report["models"]}


def test_models_lists_ltx_checkpoints_text_encoders_and_the_tiny_model(cache: Path, tiny_model: Path) -> None:
    snapshot = add_snapshot(cache, "test/tiny", tiny_model)
    add_snapshot(cache, "test/tiny", tiny_model, OTHER_COMMIT, ref=None)  # an older revision: same blobs
    add_snapshot(cache, "test/gemma", tiny_model / "text_encoder")
    other = cache.parent / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (other / "model.safetensors").write_bytes(b"not looked at")
    add_snapshot(cache, "test/bert", other)
    shutil.copytree(tiny_model, cache.parent / "home" / "tiny")
    assert resolve_model("test/tiny") == snapshot  # the fake cache is one huggingface_hub itself can read

    result = run("models", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["cache"] == str(cache)
    entries = report["models"]
    assert [(e["name"], e["revision"]) for e in entries] == [
        ("test/bert", COMMIT),
        ("test/gemma", COMMIT),
        ("test/tiny", COMMIT),
        ("test/tiny", OTHER_COMMIT),
        ("tiny", None),
    ]
    tiny = entries[2]
    assert tiny["kind"] == "ltx" and tiny["layout"] == "unified" and tiny["model_version"] == "2.0"
    assert tiny["text_encoder"] == "text_encoder" and tiny["quantization"] is None and tiny["error"] is None
    assert tiny["repo"] == "test/tiny" and tiny["refs"] == ["main"] and tiny["path"] == str(snapshot)
    assert {"transformer", "vae_decoder", "audio_vae", "vocoder"} <= set(tiny["components"])
    model_bytes = unique_size(tiny_model)
    assert tiny["size_bytes"] == model_bytes and entries[3]["size_bytes"] == model_bytes
    assert entries[3]["refs"] == [] and entries[3]["error"] is None
    gemma, bert, builtin = by_name(report)["test/gemma"], entries[0], entries[4]
    assert gemma["kind"] == "text_encoder" and gemma["error"] is None
    assert bert["kind"] == "other" and bert["error"] is None
    assert builtin["kind"] == "ltx" and builtin["repo"] is None and builtin["text_encoder"] == "text_encoder"
    # The two snapshots of test/tiny share their blobs, and the gemma repo holds copies of the same files as
    # blobs of its own: the total counts every blob once.
    gemma_blobs = unique_size(cache / "models--test--gemma" / "blobs")
    assert report["total_bytes"] == 2 * model_bytes + gemma_blobs + bert["size_bytes"]

    text = run("models")
    assert text.exit_code == 0
    assert "LTX 2.0 unified + text encoder" in text.stdout and "Gemma 3 text encoder" in text.stdout


def test_models_lists_damaged_entries_with_their_error_code(cache: Path, tiny_model: Path) -> None:
    corrupt = cache.parent / "corrupt"
    shutil.copytree(tiny_model, corrupt, ignore=shutil.ignore_patterns("text_encoder"))
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00")  # truncated
    add_snapshot(cache, "test/corrupt", corrupt)
    partial = add_snapshot(cache, "test/partial", tiny_model)
    blob = (partial / "model.safetensors").resolve()
    blob.unlink()  # a pruned or interrupted download: the symlink dangles
    (cache / "models--test--interrupted" / "blobs").mkdir(parents=True)
    (cache / "models--test--interrupted" / "blobs" / "abc.incomplete").write_bytes(b"1234")
    add_snapshot(cache, "test/gemma-broken", tiny_model / "text_encoder")
    (cache / "models--test--gemma-broken" / "snapshots" / COMMIT / "tokenizer.json").unlink()  # incomplete

    result = run("models", "--json")
    assert result.exit_code == 0, result.output
    models = by_name(json.loads(result.stdout))
    assert models["test/corrupt"]["kind"] == "ltx"
    assert models["test/corrupt"]["error"]["code"] == "checkpoint_corrupt"
    assert models["test/partial"]["error"]["code"] == "checkpoint_corrupt"
    assert "model.safetensors" in models["test/partial"]["error"]["message"]
    assert "ltx-backend download test/partial" in models["test/partial"]["error"]["hint"]
    assert models["test/interrupted"]["error"]["code"] == "model_not_found"
    assert models["test/interrupted"]["size_bytes"] == 4
    assert models["test/gemma-broken"]["error"]["code"] == "text_encoder_invalid"

    text = run("models")
    assert text.exit_code == 0 and "error [checkpoint_corrupt]" in text.stdout and "hint:" in text.stdout


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    with FakeHub(commit=COMMIT) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def test_download_model_reports_byte_progress_and_validates(cache: Path, tiny_model: Path, hub: FakeHub) -> None:
    weights = (tiny_model / "model.safetensors").read_bytes()
    hub.add_folder("test/tiny", tiny_model, {"copy/model.safetensors": weights, "card.png": b"png", "empty.txt": b""})
    hub.piece_delay = 0.01  # so that progress has something to throttle and a speed to measure (>= 0.2 s in all)
    seen: list[events.Event] = []
    path = download_model("test/tiny", "main", emit=seen.append, progress_interval=0)
    assert path == cache / "models--test--tiny" / "snapshots" / COMMIT
    assert (cache / "models--test--tiny" / "refs" / "main").read_text() == COMMIT
    assert resolve_model("test/tiny") == path
    total = unique_size(tiny_model)
    assert all(isinstance(e, events.DownloadProgress) and e.repo == "test/tiny" for e in seen)
    assert len(seen) > 10
    done = [e.bytes for e in seen]
    assert done == sorted(done) and all(e.total == total for e in seen)  # the duplicate and the picture: not fetched
    assert (seen[0].bytes, seen[-1].bytes) == (0, total)
    assert any(e.speed and e.eta is not None for e in seen)
    assert not (path / "copy").exists() and not (path / "card.png").exists()
    gets = [p for method, p, _ in hub.requests if method == "GET" and "/resolve/" in p]
    assert len(gets) == len(list(p for p in tiny_model.rglob("*") if p.is_file()))  # the empty file needs none
    assert (path / "empty.txt").read_bytes() == b""

    # Already cached: nothing fetched, one event with the size.
    hub.requests.clear()
    seen.clear()
    assert download_model("test/tiny", emit=seen.append) == path
    assert seen == [events.DownloadProgress("test/tiny", total, total)]
    assert not [p for _, p, _ in hub.requests if "/resolve/" in p]


def test_download_command_streams_json_events_and_a_result(cache: Path, tiny_model: Path, hub: FakeHub) -> None:
    hub.add_folder("test/tiny", tiny_model)
    result = run("download", "test/tiny", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {line["type"] for line in lines[:-1]} == {"download_progress"}
    assert lines[-2]["bytes"] == lines[-2]["total"] == unique_size(tiny_model)
    final = lines[-1]
    assert final["type"] == "download_result" and final["path"] == str(
        cache / "models--test--tiny" / "snapshots" / COMMIT
    )
    assert (final["kind"], final["layout"], final["model_version"], final["text_encoder"]) == (
        "ltx",
        "unified",
        "2.0",
        "text_encoder",
    )

    text = run("download", "test/tiny")
    assert text.exit_code == 0, text.output
    assert "downloaded test/tiny (LTX 2.0 unified + text encoder" in text.stdout
    assert "downloading test/tiny" in text.stderr  # the progress bar's label


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/test/x"))


@pytest.mark.parametrize(
    ("error", "code", "message", "hint"),
    [
        (RepositoryNotFoundError("404", response=_response(401)), "model_not_found", "was not found", "HF_TOKEN"),
        (GatedRepoError("403", response=_response(403)), "model_access_denied", "gated", "Accept the model's terms"),
        (httpx2.ConnectError("connection refused"), "network_unavailable", "cannot reach", "internet connection"),
        (OSError(errno.ENOSPC, "No space left on device"), "disk_full", "disk is full", "Free some space"),
        (RuntimeError("xet reconstruction failed"), "download_failed", "xet reconstruction failed", "again"),
    ],
)
def test_download_errors_have_codes_and_hints(
    cache: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch, error, code, message, hint
) -> None:
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(HfApi, "repo_info", fail)
    result = run("download", "test/x", "--json")
    assert result.exit_code == 1
    assert f"error [{code}]" in result.stderr and message in result.stderr
    assert "hint: " in result.stderr and hint in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1]["type"] == "error"
    assert lines[-1]["code"] == code and message in lines[-1]["message"] and hint in lines[-1]["hint"]


def test_download_unknown_repo_unreachable_hub_and_bad_ids(cache: Path, hub: FakeHub, monkeypatch) -> None:
    result = run("download", "test/missing")  # the fake Hub answers 404 RepoNotFound
    assert result.exit_code == 1 and "error [model_not_found]" in result.stderr

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    result = run("download", "test/x")
    assert result.exit_code == 1 and "error [network_unavailable]" in result.stderr

    with pytest.raises(LtxError) as raised:
        download_model("not a repo id")
    assert raised.value.code is ErrorCode.INVALID_PARAMS


def test_download_rejects_a_damaged_checkpoint(cache: Path, tiny_model: Path, hub: FakeHub) -> None:
    damaged = cache.parent / "damaged"
    shutil.copytree(tiny_model, damaged)
    with (damaged / "model.safetensors").open("r+b") as handle:
        handle.truncate(1000)
    hub.add_folder("test/damaged", damaged)
    result = run("download", "test/damaged")
    assert result.exit_code == 1
    assert "error [checkpoint_corrupt]" in result.stderr and "hint:" in result.stderr


def test_delete_a_revision_keeps_shared_blobs_and_a_repo_frees_everything(cache: Path, tiny_model: Path) -> None:
    add_snapshot(cache, "test/tiny", tiny_model)
    changed = cache.parent / "changed"
    shutil.copytree(tiny_model, changed)
    (changed / "config.json").write_text((changed / "config.json").read_text() + " ")  # one file differs
    add_snapshot(cache, "test/tiny", changed, OTHER_COMMIT, ref="v2")
    result = run("delete", "test/tiny", "--revision", "v2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["freed_bytes"] == (changed / "config.json").stat().st_size  # only its own blob
    assert not (cache / "models--test--tiny" / "snapshots" / OTHER_COMMIT).exists()
    assert not (cache / "models--test--tiny" / "refs" / "v2").exists()
    assert resolve_model("test/tiny") == cache / "models--test--tiny" / "snapshots" / COMMIT  # still loads

    assert "error [model_not_found]" in run("delete", "test/tiny", "--revision", "v2", "-y").stderr
    result = run("delete", "test/tiny", "-y")
    assert result.exit_code == 0 and "deleted test/tiny" in result.stdout
    assert not (cache / "models--test--tiny").exists()
    assert json.loads(run("models", "--json").stdout)["models"] == []
    assert "error [invalid_params]" in run("delete", str(tiny_model), "-y").stderr
    assert tiny_model.is_dir()  # folders outside the cache are never deleted


def test_a_download_fetches_only_the_files_a_job_needs() -> None:
    from ltx_backend.weights.download import RemoteFile, select_files

    def listing(*names: str, same: dict[str, str] | None = None) -> list[RemoteFile]:
        return [RemoteFile(name, 10, (same or {}).get(name, hashlib.sha1(name.encode()).hexdigest())) for name in names]

    # Lightricks/LTX-2 as published: several full checkpoints, FP8/FP4 variants, LoRAs, upscalers, a card.
    official = listing(
        ".gitattributes", "README.md", "ltx-2-19b-dev.safetensors", "ltx-2-19b-distilled.safetensors",
        "ltx-2-19b-dev-fp8.safetensors", "ltx-2-19b-dev-fp4.safetensors", "ltx-2-19b-distilled-lora-384.safetensors",
        "ltx-2-spatial-upscaler-x2-1.0.safetensors", "ltx-2-temporal-upscaler-x2-1.0.safetensors", "assets/demo.mp4",
        "pytorch_model.bin",
    )  # fmt: skip
    kept, skipped = select_files(official)
    assert [f.path for f in kept] == [
        ".gitattributes", "README.md", "ltx-2-19b-distilled.safetensors", "ltx-2-spatial-upscaler-x2-1.0.safetensors",
        "ltx-2-temporal-upscaler-x2-1.0.safetensors",
    ]  # fmt: skip
    assert skipped["ltx-2-19b-dev.safetensors"] == "another variant of the checkpoint"
    assert skipped["ltx-2-19b-dev-fp8.safetensors"] == skipped["ltx-2-19b-distilled-lora-384.safetensors"]
    assert (skipped["assets/demo.mp4"], skipped["pytorch_model.bin"]) == ("media", "not safetensors")

    # A newer distilled checkpoint wins over the older one, as `open_checkpoint` would pick it.
    kept, _ = select_files(listing("ltx-2.3-22b-distilled.safetensors", "ltx-2.3-22b-distilled-1.1.safetensors"))
    assert [f.path for f in kept] == ["ltx-2.3-22b-distilled-1.1.safetensors"]

    # The same weights stored twice (mlx-video-with-audio's repo layout): fetched once, the root copy.
    kept, skipped = select_files(
        listing(
            "model.safetensors",
            "config.json",
            "unified/model.safetensors",
            same={"model.safetensors": "x", "unified/model.safetensors": "x"},
        )
    )
    assert [f.path for f in kept] == ["config.json", "model.safetensors"]
    assert skipped == {"unified/model.safetensors": "same content as model.safetensors"}

    # A split repo keeps every component; `files` patterns pick by hand.
    split = listing("split_model.json", "transformer.safetensors", "vae_decoder.safetensors", "config.json")
    assert len(select_files(split)[0]) == 4
    kept, skipped = select_files(split, ["*.json"])
    assert [f.path for f in kept] == ["config.json", "split_model.json"] and len(skipped) == 2


def test_a_download_picks_one_variant_of_an_official_release() -> None:
    """Of the two transformers an LTX-2.5 release ships in diffusion_models/, only the one `load` uses; `variant`
    dev fetches the dev one and the distilled LoRA its two-stage flow fuses in stage 2 (root layouts too)."""
    from ltx_backend.errors import ErrorCode, LtxError
    from ltx_backend.weights.download import RemoteFile, select_files

    def listing(*names: str) -> list[RemoteFile]:
        return [RemoteFile(name, 10, hashlib.sha1(name.encode()).hexdigest()) for name in names]

    release = listing(
        "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors",
        "diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors",
        "loras/ltx-2.5-22b-distilled-lora-bf16.safetensors", "text_encoders/gemma-4-12b-unified.safetensors",
        "vae/ltx-2.5-video-vae.safetensors", "latent_upscale_models/ltx-2.5-spatial-upscaler-x2.safetensors",
    )  # fmt: skip
    kept, skipped = select_files(release)
    assert [f.path for f in kept] == [
        "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors",
        "latent_upscale_models/ltx-2.5-spatial-upscaler-x2.safetensors",
        "text_encoders/gemma-4-12b-unified.safetensors", "vae/ltx-2.5-video-vae.safetensors",
    ]  # fmt: skip
    dev = "diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors"
    assert skipped[dev] == "another variant of the checkpoint"
    assert skipped["loras/ltx-2.5-22b-distilled-lora-bf16.safetensors"] == "FP8/FP4 or LoRA weights"

    kept, skipped = select_files(release, variant="dev")
    paths = [f.path for f in kept]
    assert "diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors" in paths
    assert "loras/ltx-2.5-22b-distilled-lora-bf16.safetensors" in paths
    assert "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors" in skipped

    root = listing("ltx-2.3-22b-dev.safetensors", "ltx-2.3-22b-distilled.safetensors",
                   "ltx-2.3-22b-distilled-lora-384.safetensors", "ltx-2.3-22b-dev-fp8.safetensors")  # fmt: skip
    kept, _ = select_files(root, variant="dev")
    assert [f.path for f in kept] == ["ltx-2.3-22b-dev.safetensors", "ltx-2.3-22b-distilled-lora-384.safetensors"]
    with pytest.raises(LtxError) as error:
        select_files(root, variant="pro")
    assert error.value.code is ErrorCode.INVALID_PARAMS and error.value.details["field"] == "variant"
