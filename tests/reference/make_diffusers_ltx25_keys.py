"""List the tensor keys and shapes of the LTX-2.5 Diffusers layout, from diffusers 0.42.1's own LTX-2 classes.

``Lightricks/LTX-2.5-Diffusers`` stores each component with the parameter names of diffusers' classes
(``transformer/``: ``LTX2VideoTransformer3DModel``; ``connectors/``: ``LTX2TextConnectors``; ``duration_head/``:
``LTX2DurationHead``). This builds those classes at the real LTX-2.5 size on torch's meta device (no memory, no
download) with configs translated from the 2.5 transformer config (the derived manifest's ``config_used``; ff_bias
false and the keyframe marker on, gated attention and cross-attention modulation on, 8-layer 32x128 / 32x64
connectors with per-modality projections with bias) and writes ``tests/fixtures/manifests/ltx-2.5-diffusers.json``:
``{component: {key: shape}}``, block stacks compressed to blocks 0 and 1 with ``repeated_blocks`` counts (as
tests/reference/extract_ltx25_manifest.py does). The config actually shipped in the Diffusers repo was not seen;
what is checked is that these class names map one to one onto the official keys.

    /tmp/venv-ltx25/bin/python tests/reference/make_diffusers_ltx25_keys.py   # torch 2.13 + diffusers==0.42.1
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import diffusers
import torch
from diffusers import LTX2VideoTransformer3DModel
from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "manifests" / "ltx-2.5-diffusers.json"
BLOCK = re.compile(r"^(?P<stack>.*?(?:transformer_blocks))\.(?P<index>\d+)\.(?P<suffix>.+)$")

TRANSFORMER = dict(
    in_channels=128, out_channels=128, num_attention_heads=32, attention_head_dim=128, cross_attention_dim=4096,
    gated_attn=True, cross_attn_mod=True, audio_in_channels=128, audio_out_channels=128, audio_num_attention_heads=32,
    audio_attention_head_dim=64, audio_cross_attention_dim=2048, audio_gated_attn=True, audio_cross_attn_mod=True,
    num_layers=48, caption_channels=3840, rope_type="split", use_prompt_embeddings=False, ff_bias=False,
    audio_ff_bias=True, use_prompt_adaln_single=True, use_keyframes_abs_pos_embedding=True,
)  # fmt: skip
CONNECTORS = dict(
    caption_channels=3840, text_proj_in_factor=49, video_connector_num_attention_heads=32,
    video_connector_attention_head_dim=128, video_connector_num_layers=8, video_gated_attn=True,
    audio_connector_num_attention_heads=32, audio_connector_attention_head_dim=64, audio_connector_num_layers=8,
    audio_gated_attn=True, rope_type="split", per_modality_projections=True, proj_bias=True,
)  # fmt: skip
DURATION_HEAD = dict(video_cross_attention_dim=4096, audio_cross_attention_dim=2048)


def listing(module: torch.nn.Module) -> tuple[dict, dict]:
    keys, stacks = {}, {}
    for key, value in module.state_dict().items():
        block = BLOCK.match(key)
        if block:
            stacks[block["stack"]] = max(stacks.get(block["stack"], 0), int(block["index"]) + 1)
            if int(block["index"]) >= 2:
                continue
        keys[key] = list(value.shape)
    return keys, stacks


def main() -> None:
    assert diffusers.__version__ == "0.42.1", diffusers.__version__
    out: dict = {"source": f"diffusers {diffusers.__version__}", "configs": {}, "repeated_blocks": {}, "tensors": {}}
    with torch.device("meta"):
        built = {
            "transformer": (LTX2VideoTransformer3DModel(**TRANSFORMER), TRANSFORMER),
            "connectors": (LTX2TextConnectors(**CONNECTORS), CONNECTORS),
            "duration_head": (LTX2DurationHead(**DURATION_HEAD), DURATION_HEAD),
        }
    for name, (module, config) in built.items():
        keys, stacks = listing(module)
        out["configs"][name] = config
        out["tensors"][name] = keys
        out["repeated_blocks"][name] = stacks
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print({name: len(keys) for name, keys in out["tensors"].items()})


if __name__ == "__main__":
    main()
