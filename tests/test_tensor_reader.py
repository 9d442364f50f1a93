"""A load's tensors read ahead of the loader with preads: the same weights as MLX's lazy `mx.load`, in order only."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.models.transformer import sanitize_transformer_key
from ltx_backend.tiny import write_tiny_model
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.load import load_module
from ltx_backend.weights.safetensors_file import SafetensorsFile
from ltx_backend.weights.tensor_reader import ReadAhead
from ltx_backend.weights.transformer import prepare_transformer


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def loaded(model: Path, dtype, read_ahead: bool) -> dict[str, np.ndarray]:
    module, component = prepare_transformer(open_checkpoint(model))
    load_module(module, component, sanitize_transformer_key, dtype, read_ahead=read_ahead)
    return {key: np.array(value.astype(mx.float32)) for key, value in tree_flatten(module.parameters())}


@pytest.mark.parametrize("dtype", [None, mx.float32, mx.bfloat16])
def test_read_ahead_loads_exactly_what_lazy_loading_loads(model: Path, dtype, monkeypatch) -> None:
    taken: list[str] = []
    original = ReadAhead.take
    monkeypatch.setattr(ReadAhead, "take", lambda self, info: taken.append(info.name) or original(self, info))
    ahead, lazy = loaded(model, dtype, True), loaded(model, dtype, False)
    assert ahead.keys() == lazy.keys() and all(np.array_equal(ahead[key], lazy[key]) for key in ahead)
    stored = {info.dtype for info in open_checkpoint(model).component("transformer").tensors.values()}
    if dtype is not None and dtype == mx.bfloat16 and stored == {"F32"}:  # all cast: all stay lazy
        assert taken == []
    else:
        assert taken  # read ahead: the tensors used as stored


def test_tensors_are_taken_in_the_order_given_and_a_short_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    mx.save_safetensors(str(path), {"a": mx.arange(8, dtype=mx.float32), "b": mx.ones((2, 3), dtype=mx.bfloat16)})
    file = SafetensorsFile(path)
    a, b = file.tensors["a"], file.tensors["b"]
    with ReadAhead([a, b], threads=1) as reader:
        with pytest.raises(ValueError, match="out of order"):
            reader.take(b)
        assert reader.take(a).tolist() == list(range(8))
        second = reader.take(b)
        assert second.dtype == mx.bfloat16 and second.tolist() == [[1.0] * 3] * 2
    with path.open("r+b") as handle:  # cut the file inside the last tensor
        handle.truncate(b.offset + 2)
    with pytest.raises(LtxError) as caught, ReadAhead([b]) as reader:
        reader.take(b)
    assert caught.value.code is ErrorCode.CHECKPOINT_CORRUPT and "'b'" in caught.value.message


@pytest.mark.parametrize("to_device", [False, True])
def test_the_copy_to_the_device_keeps_every_bit(tmp_path: Path, to_device: bool) -> None:
    """On CUDA the loader copies each tensor into device memory (times one): the bits must not change, -0.0,
    infinities and NaNs included, at every stored dtype. Forced on here, where it is only a copy."""
    special = [0.0, -0.0, 1.5, -3.25, float("inf"), float("-inf"), float("nan"), 1e-30]
    arrays = {"bf16": mx.array(special, dtype=mx.bfloat16), "f16": mx.array(special, dtype=mx.float16),
              "f32": mx.array(special, dtype=mx.float32), "u32": mx.array([0, 7, 2**32 - 1], dtype=mx.uint32),
              "i8": mx.array([-128, -1, 0, 127], dtype=mx.int8), "u8": mx.array([0, 255], dtype=mx.uint8)}  # fmt: skip
    path = tmp_path / "w.safetensors"
    mx.save_safetensors(str(path), arrays)
    file = SafetensorsFile(path)
    with ReadAhead(list(file.tensors.values()), to_device=to_device) as reader:
        taken = {info.name: reader.take(info) for info in file.tensors.values()}
    for name, array in arrays.items():
        bits = {1: mx.uint8, 2: mx.uint16, 4: mx.uint32}[array.itemsize]
        assert taken[name].dtype == array.dtype, name
        assert np.array_equal(np.array(taken[name].view(bits)), np.array(array.view(bits))), name


def test_a_transformer_quantized_on_load_stays_lazy(model: Path, monkeypatch) -> None:
    """Quantizing a bf16/f32 checkpoint as it loads: read ahead, every source tensor would be held at once beside
    the quantized result; lazily, one at a time."""
    from ltx_backend.weights.transformer import load_transformer

    monkeypatch.setattr(ReadAhead, "take", lambda self, info: pytest.fail(f"read ahead: {info.name}"))
    transformer = load_transformer(open_checkpoint(model), mx.float32, quantize=8)
    mx.eval(transformer.parameters())
