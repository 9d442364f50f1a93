"""Write the small files protocol/examples/lora.ndjson uses (run from the repository root, in the project's venv):

    python tests/reference/make_protocol_lora_media.py

* ``ic-lora-tiny.safetensors``: an IC-LoRA (rank 2, ``reference_downscale_factor`` 2) for the built-in ``tiny`` model
* ``lora-tiny-2.3.safetensors``: a LoRA for ``tiny-2.3`` (other widths: a ``lora_mismatch`` on ``tiny``)
* ``control.mp4``: a 96x80, 12-frame H.264 control video (noise)

Random values with fixed seeds: the files only need to fit the tiny models' shapes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from lora_files import write_lora  # noqa: E402

from ltx_backend.media.video import ffmpeg_exe  # noqa: E402
from ltx_backend.tiny import write_tiny_model  # noqa: E402

MEDIA = ROOT / "protocol" / "examples" / "media"


def main() -> None:
    MEDIA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_tiny_model(Path(tmp) / "tiny", "2.0")
        tiny23 = write_tiny_model(Path(tmp) / "tiny-2.3", "2.3")
        write_lora(MEDIA / "ic-lora-tiny.safetensors", tiny, rank=2, seed=11, every=4,
                   metadata={"reference_downscale_factor": "2"})  # fmt: skip
        write_lora(MEDIA / "lora-tiny-2.3.safetensors", tiny23, rank=2, seed=12, every=8)
    pixels = np.random.default_rng(13).integers(0, 256, (12, 80, 96, 3), dtype=np.uint8)
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "96x80", "-r", "24",
         "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(MEDIA / "control.mp4")],
        input=pixels.tobytes(), check=True, capture_output=True,
    )  # fmt: skip
    for path in sorted(MEDIA.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
