"""Copy the derived LTX-2.5 key manifest (``ltx-2.5-official-derived.json``) into tests/fixtures/manifests/, compressed.

The manifest (derived from ltx-core 1.2.0 + transformers 5.14.1 on the meta device, medium confidence; see its own
``derivation``/``confidence``) lists the 2.5 transformer, Gemma 4 text-encoder and duration-head files. Written:
``source``, ``derivation``, ``confidence``, ``summary``, ``config_used``, ``diff_vs_ltx_2_3_transformer_keys``
verbatim, and ``tensors`` compressed exactly:

* transformer file: keys outside block stacks unchanged; of each stack (``transformer_blocks``,
  ``transformer_1d_blocks``) blocks 0 and 1, with ``repeated_blocks`` giving each stack's block count;
* text-encoder file: decoder layers 0..5 (one period of the sliding x5 / full layer pattern) with
  ``gemma_layer_period`` 6 and ``gemma_layers`` 48: layer i holds layer (i mod 6)'s keys and shapes;
* duration-head file: unchanged.

Before writing, the script checks that expanding the compressed listing gives back the original exactly.

    python tests/reference/extract_ltx25_manifest.py PATH/TO/ltx-2.5-official-derived.json   # from the repo root
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "manifests" / "ltx-2.5-official-derived.json"
BLOCK = re.compile(r"^(?P<stack>.*?(?:transformer_blocks|transformer_1d_blocks))\.(?P<index>\d+)\.(?P<suffix>.+)$")
LAYER = re.compile(r"^(?P<stack>text_encoders/[^:]+:model\.layers)\.(?P<index>\d+)\.(?P<suffix>.+)$")
GEMMA_PERIOD = 6


def compress(tensors: dict) -> tuple[dict, dict, int]:
    kept, stacks, gemma_layers = {}, {}, 0
    for key, value in tensors.items():
        block, layer = BLOCK.match(key), LAYER.match(key)
        if layer:
            gemma_layers = max(gemma_layers, int(layer["index"]) + 1)
            if int(layer["index"]) < GEMMA_PERIOD:
                kept[key] = value
        elif block:
            stacks[block["stack"]] = max(stacks.get(block["stack"], 0), int(block["index"]) + 1)
            if int(block["index"]) < 2:
                kept[key] = value
        else:
            kept[key] = value
    return kept, stacks, gemma_layers


def expand(kept: dict, stacks: dict, gemma_layers: int) -> dict:
    out = {}
    for key, value in kept.items():
        block, layer = BLOCK.match(key), LAYER.match(key)
        if layer:
            for index in range(int(layer["index"]), gemma_layers, GEMMA_PERIOD):
                out[f"{layer['stack']}.{index}.{layer['suffix']}"] = value
        elif block and block["index"] == "0":
            for index in range(stacks[block["stack"]]):
                out[f"{block['stack']}.{index}.{block['suffix']}"] = value
        elif not block:
            out[key] = value
    return out


def main(source: Path) -> None:
    manifest = json.loads(source.read_text())
    kept, stacks, layers = compress(manifest["tensors"])
    assert expand(kept, stacks, layers) == manifest["tensors"], "compression is not exact"
    out = {key: manifest[key] for key in ("source", "derivation", "confidence", "summary", "config_used")}
    out["diff_vs_ltx_2_3_transformer_keys"] = manifest["diff_vs_ltx_2_3_transformer_keys"]
    out.update(repeated_blocks=stacks, gemma_layers=layers, gemma_layer_period=GEMMA_PERIOD, tensors=kept)
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
