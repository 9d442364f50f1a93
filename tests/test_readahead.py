"""Read-ahead: the tensors a loader asks for are read into the page cache in file order, as a hint only."""

from __future__ import annotations

import os
import time
from pathlib import Path

import mlx.core as mx
import pytest

from ltx_backend.weights import readahead
from ltx_backend.weights.readahead import ReadAhead
from ltx_backend.weights.safetensors_file import SafetensorsFile


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "w.safetensors"
    mx.save_safetensors(str(path), {f"t{i}": mx.full((64, 64), i, dtype=mx.float32) for i in range(6)})
    return path


def test_reads_what_the_loader_asks_for_lowest_offset_first(weights: Path, monkeypatch) -> None:
    reads: list[tuple[int, int]] = []
    original = os.preadv

    def recorded(descriptor, buffers, offset):
        reads.append((offset, sum(len(b) for b in buffers)))
        return original(descriptor, buffers, offset)

    monkeypatch.setattr(readahead.os, "preadv", recorded)
    file = SafetensorsFile(weights)
    wanted = ["t5", "t1", "t3"]  # the module's order, not the file's
    total = sum(file.tensors[name].nbytes for name in wanted)
    with ReadAhead(threads=1, chunk=4096) as ahead:
        with ahead._condition:  # the worker waits until all three are queued
            arrays = [file.array(name) for name in wanted]
        deadline = time.monotonic() + 30
        while ahead.bytes_read < total and time.monotonic() < deadline:
            time.sleep(0.01)
        mx.eval(arrays)
    offsets = sorted(file.tensors[name].offset for name in wanted)
    assert reads == [(o + k * 4096, 4096) for o in offsets for k in range(64 * 64 * 4 // 4096)]
    assert [float(a[0, 0]) for a in arrays] == [5.0, 1.0, 3.0]  # the loaded values themselves are untouched


def test_nothing_asked_starts_nothing_and_a_vanished_file_is_left_to_the_loader(weights: Path) -> None:
    with ReadAhead() as ahead:
        pass
    assert ahead._workers == [] and ahead.bytes_read == 0
    file = SafetensorsFile(weights)
    with ReadAhead() as ahead:
        info = file.tensors["t0"]
        weights.unlink()
        ahead.add(info)  # cannot be opened: no error here
    assert ahead.bytes_read == 0
