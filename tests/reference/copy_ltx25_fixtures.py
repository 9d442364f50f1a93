"""Copy the parts of the ltx-core 1.2.0 LTX-2.5 reference fixtures that the tests read into tests/fixtures/ltx25/.

The reference fixtures (tiny random configs, float32, produced by ltx-core 1.2.0 + transformers 5.14.1; ltx-core 1.2.0
is not on PyPI, so they cannot be regenerated here) are given as a folder. This script only selects and re-packs,
it computes nothing:

* ``te.safetensors``: ``c_text_encoder_weights`` unchanged (the official Comfy-flat text-encoder layout: Gemma 4
  language model, tiny vision/audio embedders, ``text_embedding_projection.*``, tokenizer blobs, metadata).
* ``connectors.safetensors``: the ``model.diffusion_model.{video,audio}_embeddings_connector.*`` tensors of
  ``a_transformer_ltx25_weights`` with that file's metadata (``config``, ``model_version``,
  ``gemma_source_checkpoint``).
* ``duration_head.safetensors``: ``d_duration_head_weights`` unchanged.
* ``refs.npz``: from ``c_text_path_io`` the prompt's ids, mask, hidden states on the valid rows, features and
  connector outputs; from ``c2_text_tower_sliding40_io`` rows 40.. (where the window of 40 cuts) of hidden states
  1..6; ``d_duration_head_io`` without its inputs (they equal c's connector outputs, checked); from
  ``e_euler_ancestral_loop`` the states, masks, recorded noise and model outputs of the loop;
  ``e2_euler_ancestral_step_cases`` whole.

    .venv/bin/python tests/reference/copy_ltx25_fixtures.py FIXTURES_DIR   # from the repository root
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "ltx25"
C2_FIRST_ROW = 40  # rows before it see fewer than 40 keys: the window does not cut there
CONNECTOR_PREFIXES = (
    "model.diffusion_model.video_embeddings_connector.",
    "model.diffusion_model.audio_embeddings_connector.",
)


def main(source: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "c_text_encoder_weights.safetensors", OUT / "te.safetensors")
    shutil.copyfile(source / "d_duration_head_weights.safetensors", OUT / "duration_head.safetensors")
    with safe_open(source / "a_transformer_ltx25_weights.safetensors", "np") as f:
        metadata = f.metadata()
        connectors = {key: f.get_tensor(key) for key in f.keys() if key.startswith(CONNECTOR_PREFIXES)}  # noqa: SIM118
    save_file(connectors, OUT / "connectors.safetensors", metadata=metadata)

    refs: dict[str, np.ndarray] = {}
    c = load_file(source / "c_text_path_io.safetensors")
    with safe_open(source / "c_text_path_io.safetensors", "np") as f:
        refs["c.prompt"] = np.array(f.metadata()["prompt"])
    valid = c["attention_mask"].astype(bool)
    refs["c.input_ids"], refs["c.attention_mask"] = c["input_ids"], c["attention_mask"]
    refs["c.hidden_states_valid"] = np.stack([c[f"hidden_state.{i:02d}"][valid] for i in range(7)])
    for key in ("video_features", "audio_features", "video_encoding", "audio_encoding", "encoding_mask"):
        refs[f"c.{key}"] = c[key]
    for key in ("rope.sliding_attention.inv_freq", "rope.full_attention.inv_freq"):
        refs[f"c.{key}"] = c[key]
    c2 = load_file(source / "c2_text_tower_sliding40_io.safetensors")
    refs["c2.input_ids"] = c2["input_ids"]
    refs["c2.first_row"] = np.array(C2_FIRST_ROW)
    # state 0 (the embeddings) does not depend on the window
    refs["c2.hidden_states_tail"] = np.stack([c2[f"hidden_state.{i:02d}"][C2_FIRST_ROW:] for i in range(1, 7)])
    d = load_file(source / "d_duration_head_io.safetensors")
    # the head's inputs are fixture c's connector outputs: stored once, as c.{video,audio}_encoding
    assert np.array_equal(d.pop("video_tokens"), c["video_encoding"])
    assert np.array_equal(d.pop("audio_tokens"), c["audio_encoding"])
    for key, value in d.items():
        refs[f"d.{key}"] = value
    e = load_file(source / "e_euler_ancestral_loop.safetensors")
    for key, value in e.items():
        if not key.endswith((".context", ".positions")):
            refs[f"e.{key}"] = value
    e2 = load_file(source / "e2_euler_ancestral_step_cases.safetensors")
    with safe_open(source / "e2_euler_ancestral_step_cases.safetensors", "np") as f:
        refs["e2.cases"] = np.array(json.loads(f.metadata()["cases_sigma_sigma_next_eta"]), dtype=np.float64)
    for key, value in e2.items():
        refs[f"e2.{key}"] = value
    np.savez(OUT / "refs.npz", **refs)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
