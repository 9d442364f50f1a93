"""Component loads read on several threads (`weights/parallel_load.py`): same bytes as one thread, each lane evaluates
only its share, errors reach the borrower as they were raised, and `borrow(wait=False)` is joined before any use."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.pipeline import resident as r
from ltx_backend.pipeline.engine import Engine
from ltx_backend.pipeline.request import GenerationRequest
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights import parallel_load
from ltx_backend.weights.checkpoint import Component
from ltx_backend.weights.load import load_module
from ltx_backend.weights.safetensors_file import SafetensorsFile


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 5, kernel_size=2)  # stored in PyTorch layout: read, then transposed
        self.layers = [nn.Linear(8, 8 * (i + 1)) for i in range(5)]  # tensors of different sizes
        self.norm = nn.LayerNorm(8)


def write_weights(path: Path) -> Path:
    mx.random.seed(3)
    tensors = {"conv.weight": mx.random.normal((5, 3, 2)), "conv.bias": mx.random.normal((5,))}
    for i in range(5):
        tensors[f"layers.{i}.weight"] = mx.random.normal((8 * (i + 1), 8)).astype(mx.bfloat16)
        tensors[f"layers.{i}.bias"] = mx.random.normal((8 * (i + 1),))
    tensors |= {"norm.weight": mx.random.normal((8,)), "norm.bias": mx.random.normal((8,))}
    mx.save_safetensors(str(path), tensors)
    return path


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    return write_weights(tmp_path / "tiny.safetensors")


def loader(path: Path, derive: bool = False, after=None):
    """What an engine loader does: build, plan and load (lazily); optionally derive a weight afterwards, as fused
    projections or quantization at load time do."""

    def load() -> Tiny:
        file = SafetensorsFile(path)
        module = Tiny()
        load_module(module, Component("tiny", file.tensors, {file.path: file}, "torch"), dtype=mx.float32)
        if derive:
            first, second = module.layers[0], module.layers[1]
            first.weight = first.weight * 2 + second.weight[:8]  # across lanes; made on the default stream
        if after is not None:
            after()
        return module

    return load


def params(module: nn.Module) -> dict[str, bytes]:
    return {key: np.array(value).tobytes() for key, value in tree_flatten(module.parameters())}


def derived_rests(monkeypatch: pytest.MonkeyPatch) -> list[list[mx.array]]:
    """What each parallel load started from now on left to the calling thread (arrays no lane recorded)."""
    rests: list[list[mx.array]] = []
    start = parallel_load.ParallelLoad.start

    def spy(self: parallel_load.ParallelLoad, final):
        rests.append(self.shares(final)[1])
        return start(self, final)

    monkeypatch.setattr(parallel_load.ParallelLoad, "start", spy)
    return rests


def borrowed(monkeypatch: pytest.MonkeyPatch, threads: int, load, wait: bool = True):
    monkeypatch.setenv(parallel_load.ENV_THREADS, str(threads))
    models = r.ResidentSet()
    value = models.borrow(r.VOCODER, ("k",), load, wait)
    return models, value


@pytest.mark.parametrize("derive", [False, True])
def test_one_thread_and_four_load_the_same_bytes(monkeypatch: pytest.MonkeyPatch, weights: Path, derive: bool) -> None:
    _, one = borrowed(monkeypatch, 1, loader(weights, derive))
    _, four = borrowed(monkeypatch, 4, loader(weights, derive))
    assert params(one) == params(four)
    stored = mx.load(str(weights))  # what was written, read plainly
    assert params(four)["layers.4.weight"] == np.array(stored["layers.4.weight"].astype(mx.float32)).tobytes()
    assert params(four)["conv.weight"] == np.array(stored["conv.weight"].transpose(0, 2, 1)).tobytes()


def test_each_lane_evaluates_its_share_only(monkeypatch: pytest.MonkeyPatch, weights: Path) -> None:
    seen: list[tuple[str, int, list[int]]] = []
    original = parallel_load._read_share

    def read_share(lane: parallel_load.Lane, share: list[mx.array]) -> None:
        index = parallel_load.lanes(4).index(lane)
        seen.append((threading.current_thread().name, index, [id(array) for array in share]))
        original(lane, share)

    monkeypatch.setattr(parallel_load, "_read_share", read_share)
    rest = derived_rests(monkeypatch)
    _, module = borrowed(monkeypatch, 4, loader(weights))
    assert rest == [[]]  # every parameter was recorded on a lane
    assert sorted(index for _, index, _ in seen) == [0, 1, 2, 3]
    for name, index, _ in seen:  # each share on its own lane's thread
        assert name.startswith(f"ltx-load-{index}")
    ids = [one for _, _, share in seen for one in share]
    final = [value for _, value in tree_flatten(module.parameters())]
    assert sorted(ids) == sorted(id(value) for value in final)  # the shares split the parameters: no overlap
    sizes = {id(value): value.nbytes for value in final}
    shares = [sum(sizes[one] for one in share) for _, _, share in seen]
    assert max(shares) - min(shares) <= max(sizes.values())  # balanced by bytes (the stored ones: bf16 is 2 a value)


def test_lanes_and_streams_are_made_once(monkeypatch: pytest.MonkeyPatch, weights: Path) -> None:
    first = parallel_load.lanes(4)
    made: list[object] = []
    original = mx.new_thread_unsafe_stream
    monkeypatch.setattr(mx, "new_thread_unsafe_stream", lambda device: made.append(device) or original(device))
    for _ in range(3):
        borrowed(monkeypatch, 4, loader(weights))
    borrowed(monkeypatch, 2, loader(weights))
    assert made == [] and parallel_load.lanes(4) == first


def test_one_thread_is_the_single_threaded_load(monkeypatch: pytest.MonkeyPatch, weights: Path) -> None:
    streams: list[mx.Stream | None] = []
    original = SafetensorsFile.array

    def array(self: SafetensorsFile, name: str, stream: mx.Stream | None = None) -> mx.array:
        streams.append(stream)
        return original(self, name, stream)

    monkeypatch.setattr(SafetensorsFile, "array", array)
    monkeypatch.setattr(parallel_load.ParallelLoad, "start", lambda *_: pytest.fail("no parallel load"))
    borrowed(monkeypatch, 1, loader(weights))
    assert streams and set(streams) == {None}


def test_the_thread_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(parallel_load.ENV_THREADS, raising=False)
    for cuda, threads in ((True, 4), (False, 1)):  # measured on CUDA only: elsewhere the plain load by default
        monkeypatch.setattr(parallel_load, "cuda_gpu", lambda cuda=cuda: cuda)
        assert parallel_load.load_threads() == threads
    monkeypatch.setenv(parallel_load.ENV_THREADS, " 2 ")
    assert parallel_load.load_threads() == 2
    for bad in ("0", "-1", "two", "1.5", "1000"):
        monkeypatch.setenv(parallel_load.ENV_THREADS, bad)
        with pytest.raises(LtxError) as caught:
            parallel_load.load_threads()
        assert caught.value.code == ErrorCode.INVALID_PARAMS and parallel_load.ENV_THREADS in caught.value.message


@pytest.mark.parametrize("wait", [True, False])
def test_an_error_in_a_lane_reaches_the_borrower(monkeypatch: pytest.MonkeyPatch, weights: Path, wait: bool) -> None:
    original = parallel_load._read_share

    def read_share(lane: parallel_load.Lane, share: list[mx.array]) -> None:
        if lane is parallel_load.lanes(4)[2]:
            raise LtxError(ErrorCode.CHECKPOINT_CORRUPT, f"{weights}: truncated", "download it again")
        original(lane, share)

    monkeypatch.setattr(parallel_load, "_read_share", read_share)
    monkeypatch.setenv(parallel_load.ENV_THREADS, "4")
    models = r.ResidentSet()
    with pytest.raises(LtxError) as caught:
        models.borrow(r.VOCODER, ("k",), loader(weights), wait)
        models.borrow(r.VOCODER, ("k",), loader(weights))  # wait=False: the next use joins the reads
    assert caught.value.code == ErrorCode.CHECKPOINT_CORRUPT and caught.value.message == f"{weights}: truncated"
    assert models.names() == []  # a component that failed to load is not held


def test_a_file_that_fails_to_read_fails_alike_on_one_thread_and_four(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    errors = []
    for threads in (1, 4):
        path = write_weights(tmp_path / f"cut-{threads}.safetensors")
        cut = loader(path, after=lambda path=path: os.truncate(path, 300))  # shortened after its header was read
        with pytest.raises(Exception) as caught:
            borrowed(monkeypatch, threads, cut)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]


def test_wait_false_then_borrow_again_or_drop(monkeypatch: pytest.MonkeyPatch, weights: Path) -> None:
    gate = threading.Event()
    original = parallel_load._read_share
    done: list[int] = []

    def read_share(lane: parallel_load.Lane, share: list[mx.array]) -> None:
        assert gate.wait(10)
        original(lane, share)
        done.append(len(share))

    monkeypatch.setattr(parallel_load, "_read_share", read_share)
    _, expected = borrowed(monkeypatch, 1, loader(weights, derive=True))
    models, value = borrowed(monkeypatch, 4, loader(weights, derive=True), wait=False)
    assert done == []  # borrow returned while the lanes were still held back: the reads overlap what comes next
    gate.set()
    again = models.borrow(r.VOCODER, ("k",), loader(weights))
    assert again is value and len(done) == 4 and params(again) == params(expected)

    gate.clear()
    done.clear()
    models.borrow(r.VOCODER, ("other",), loader(weights, derive=True), wait=False)
    threading.Timer(0.2, gate.set).start()
    models.drop(r.VOCODER)  # waits for the reads begun (or cancels those not begun)
    assert models.names() == [] and all(not lane.lock.locked() for lane in parallel_load.lanes(4))


def test_two_components_in_flight(monkeypatch: pytest.MonkeyPatch, weights: Path) -> None:
    """The engine's preload: each component's reads start before the next is built; then each is borrowed again."""
    monkeypatch.setenv(parallel_load.ENV_THREADS, "4")
    models = r.ResidentSet()
    names = (r.VOCODER, r.UPSAMPLER, r.AUDIO_DECODER)
    for name in names:
        models.borrow(name, ("k",), loader(weights, derive=True), wait=False)
    values = [models.borrow(name, ("k",), loader(weights)) for name in names]
    mx.eval([array for value in values for array in r.arrays(value)])
    _, expected = borrowed(monkeypatch, 1, loader(weights, derive=True))
    assert all(params(value) == params(expected) for value in values)


SMALL = {"width": 128, "height": 128, "num_frames": 9, "fps": 24.0}


def test_a_generation_is_the_same_bytes_with_one_thread_and_four(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = write_tiny_model(tmp_path / "tiny")
    digests = []
    for threads, preload, residency in ((1, False, "auto"), (4, False, "auto"), (4, True, "auto"), (4, False, "none")):
        monkeypatch.setenv(parallel_load.ENV_THREADS, str(threads))
        engine = Engine(model, residency=residency)  # none: every phase loads its component and frees it
        if preload:
            engine.preload()  # borrow(wait=False) for each component, then joined
        out = tmp_path / f"{threads}-{preload}-{residency}.mp4"
        result = engine.generate(GenerationRequest(prompt="a red fox", seed=7, output_path=str(out), **SMALL))
        digests.append(hashlib.sha256(Path(result.video_path).read_bytes()).hexdigest())
        engine.unload()
    assert len(set(digests)) == 1


@pytest.mark.parametrize(("version", "mixed"), [("2.0", False), ("2.3", False), ("2.3", True)])
def test_stacked_projections_are_read_on_the_lanes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str, mixed: bool
) -> None:
    """A transformer's q/k/v share a lane, so their stacking (`fuse_projections`) is read there too: nothing is
    left to the calling thread's single-threaded evaluation, and the weights are those of a one-thread load (bf16,
    4-bit and mixed-precision packs: a quantized layer's weight, scales and biases are stacked alike)."""
    from ltx_backend.weights.checkpoint import open_checkpoint
    from ltx_backend.weights.transformer import load_transformer

    ckpt = open_checkpoint(write_tiny_model(tmp_path / "tiny", version, mixed=mixed))
    rest = derived_rests(monkeypatch)
    _, one = borrowed(monkeypatch, 1, lambda: load_transformer(ckpt, mx.float32))
    _, four = borrowed(monkeypatch, 4, lambda: load_transformer(ckpt, mx.float32))
    assert rest == [[]]
    assert any(".to_qkv." in key or ".to_kv." in key for key in params(four))
    assert params(one) == params(four)
