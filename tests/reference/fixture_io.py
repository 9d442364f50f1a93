"""Writing reference fixtures reproducibly: the file helpers every ``make_*_refs.py`` script shares.

Run inside the reference venv (PyTorch + ltx-core); the scripts import this module from their own directory.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

FIXED_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, *, dtype: torch.dtype, root: Path, metadata: dict | None = None
) -> None:
    """Store `tensors` as `dtype` and print a line about the file (its path relative to `root`)."""
    tensors = {key: value.detach().to(dtype).contiguous().clone() for key, value in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)
    print(f"  {path.relative_to(root)}: {len(tensors)} tensors, {path.stat().st_size / 1024:.0f} KiB")


def write_json(obj: dict, path: Path, ensure_ascii: bool = True) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=ensure_ascii) + "\n")


def save_npz(arrays: dict[str, np.ndarray], path: Path, dtype: type | None = None) -> None:
    """Like np.savez, but with fixed zip timestamps so the file is byte-identical across runs."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array, dtype=dtype))
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=FIXED_ZIP_DATE), buf.getvalue())


def fresh_dir(root: Path, name: str) -> Path:
    """``root/name``, emptied."""
    directory = root / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory
