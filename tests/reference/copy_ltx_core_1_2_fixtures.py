"""Copy ltx-core 1.2.0's LTX-2.3 transformer fixture (``b_*``) into ``tests/fixtures/ltx_core_1_2/``, slimmed.

The ``b_*`` files (tiny LTX-2.3 transformer, one I2V-style forward with sigma_video 0.909375 != sigma_audio 0.725,
outputs of ltx-core 1.2.0 and of ltx-core 1.0.0 beside them) were produced by running ltx-core 1.2.0 from source
(Lightricks/LTX-2 tag v1.2.0): it is not on PyPI, so they cannot be regenerated here and are read-only reference
data. To keep the committed fixtures small this copies only what the tests read: the transformer weights without
the two text connectors stored beside them (``*_embeddings_connector.*``: the tests feed connector outputs), the
inputs, the final outputs and the A<->V AdaLN intermediates (the per-block states, RoPE tables and other
intermediates are left out). Values and metadata are copied unchanged. Run from the repository root with the
directory that holds the delivered fixture set:

    /tmp/ltx-ref-venv/bin/python tests/reference/copy_ltx_core_1_2_fixtures.py <fixtures-ltx-core-1.2.0 directory>

Fixture ``a`` (the tiny LTX-2.5 transformer: no video feed-forward biases, the keyframe marker) shares every other
tensor and its inputs with ``b`` (checked here), so it is stored as a delta: ``a_transformer_ltx25_delta`` holds the
marker parameter and ``a``'s metadata (the weights are ``b``'s without the 4 video FFN biases, plus the marker), and
``a_transformer_ltx25_io`` the keyframes mask and the outputs (with and without the mask) plus the video ``x_in``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

OUT_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "ltx_core_1_2"
IO_OUTPUTS = (
    "out.video_velocity", "out.audio_velocity", "out.video_x0", "out.audio_x0",
    "out.video_velocity_pre_1_1_4_rule", "out.audio_velocity_pre_1_1_4_rule",
    "out.video.cross_scale_shift_timestep", "out.video.cross_gate_timestep",
    "out.audio.cross_scale_shift_timestep", "out.audio.cross_gate_timestep",
)  # fmt: skip


def keep(name: str, key: str) -> bool:
    if name.endswith("_weights"):
        return "_embeddings_connector." not in key
    if name.endswith("_io"):
        return not key.startswith("out.") or key in IO_OUTPUTS
    return True


A_OUTPUTS = (
    "video.keyframes_mask", "out.video_velocity", "out.audio_velocity", "out.video_x0", "out.audio_x0",
    "out.video_velocity_without_keyframes_mask", "out.video.x_in",
)  # fmt: skip
A_ONLY = "model.diffusion_model.keyframes_abs_pos_embedding"


def copy_a_as_delta(source: Path) -> None:
    """Fixture a as a delta on b: check that it is one, store what differs."""
    with (
        safe_open(source / "a_transformer_ltx25_weights.safetensors", "np") as a,
        safe_open(source / "b_transformer_ltx23_weights.safetensors", "np") as b,
    ):
        a_keys, b_keys = set(a.keys()), set(b.keys())
        assert a_keys - b_keys == {A_ONLY}, a_keys - b_keys
        assert all(".ff.net." in key and key.endswith(".bias") for key in b_keys - a_keys), b_keys - a_keys
        for key in a_keys & b_keys:
            assert np.array_equal(a.get_tensor(key), b.get_tensor(key)), key
        save_file({A_ONLY: a.get_tensor(A_ONLY)}, OUT_DIR / "a_transformer_ltx25_delta.safetensors", a.metadata())
    with (
        safe_open(source / "a_transformer_ltx25_io.safetensors", "np") as a,
        safe_open(source / "b_transformer_ltx23_io.safetensors", "np") as b,
    ):
        for key in a.keys():  # noqa: SIM118
            if not key.startswith("out.") and key in b.keys():  # noqa: SIM118 (b lacks a's unused image_latent etc.)
                assert np.array_equal(a.get_tensor(key), b.get_tensor(key)), f"input {key} differs from b's"
        save_file({key: a.get_tensor(key) for key in A_OUTPUTS}, OUT_DIR / "a_transformer_ltx25_io.safetensors",
                  a.metadata())  # fmt: skip


def main(source: Path) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("b_transformer_ltx23_weights", "b_transformer_ltx23_io", "b_transformer_ltx23_v100_outputs"):
        with safe_open(source / f"{name}.safetensors", "np") as f:
            tensors = {key: f.get_tensor(key) for key in sorted(f.keys()) if keep(name, key)}
            metadata = f.metadata()
        save_file(tensors, OUT_DIR / f"{name}.safetensors", metadata=metadata)
        size = (OUT_DIR / f"{name}.safetensors").stat().st_size
        print(f"{name}: {len(tensors)} tensors, {size / 1024:.0f} KiB")
    copy_a_as_delta(source)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
