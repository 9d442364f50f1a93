"""The streamed transformer's reader: a tensor's stored bits with preads, stacked parts in order, a short file named."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.safetensors_file import SafetensorsFile
from ltx_backend.weights.tensor_reader import Descriptors, read_stored

SPECIAL = [0.0, -0.0, 1.5, -3.25, float("inf"), float("-inf"), float("nan"), 1e-30]


def bits(array: mx.array) -> np.ndarray:
    return np.array(array.view({1: mx.uint8, 2: mx.uint16, 4: mx.uint32}[array.itemsize]))


def test_every_stored_dtype_is_read_bit_for_bit(tmp_path: Path) -> None:
    arrays = {"bf16": mx.array(SPECIAL, dtype=mx.bfloat16), "f16": mx.array(SPECIAL, dtype=mx.float16),
              "f32": mx.array(SPECIAL, dtype=mx.float32), "u32": mx.array([0, 7, 2**32 - 1], dtype=mx.uint32),
              "i8": mx.array([-128, -1, 0, 127], dtype=mx.int8), "u8": mx.array([0, 255], dtype=mx.uint8)}  # fmt: skip
    path = tmp_path / "w.safetensors"
    mx.save_safetensors(str(path), arrays)
    files = Descriptors("test")
    try:
        for info in SafetensorsFile(path).tensors.values():
            stored = mx.array(read_stored(files, [info], info.shape))
            read = stored.view(mx.bfloat16) if info.dtype == "BF16" else stored
            assert read.dtype == arrays[info.name].dtype and np.array_equal(bits(read), bits(arrays[info.name]))
    finally:
        files.close()


def test_parts_are_stacked_in_the_order_given_and_a_short_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    q, k = mx.arange(6, dtype=mx.float32).reshape(2, 3), -mx.arange(3, dtype=mx.float32).reshape(1, 3)
    mx.save_safetensors(str(path), {"q": q, "k": k})
    tensors = SafetensorsFile(path).tensors
    files = Descriptors("test")
    try:
        stacked = read_stored(files, [tensors["k"], tensors["q"]], (3, 3))
        assert np.array_equal(stacked, np.concatenate([np.array(k), np.array(q)]))
    finally:
        files.close()
    last = max(tensors.values(), key=lambda info: info.offset)
    with path.open("r+b") as handle:  # cut the file inside its last tensor
        handle.truncate(last.offset + 2)
    files = Descriptors("test")
    with pytest.raises(LtxError) as caught:
        read_stored(files, [last], last.shape)
    files.close()
    assert caught.value.code is ErrorCode.CHECKPOINT_CORRUPT and repr(last.name) in caught.value.message
