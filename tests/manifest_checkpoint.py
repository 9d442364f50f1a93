"""Checkpoints built from key manifests: tensor listings without any tensor data.

`tests/fixtures/manifests/*.json` hold the audio, video-VAE/upscaler, transformer, text-connector and text-projection
tensors of the real LTX-2 checkpoints (written by `tests/reference/extract_manifests.py`; the transformer listing is
stored with its block stacks compressed to blocks 0 and 1, which `load_manifest` expands back). A `Checkpoint` only
needs each file's path and tensor listing to plan a load, so these let the tests check the loaders against the real
key sets and shapes without the weights.

`gemma-3-12b-it-mlx.json` lists the Gemma 3 12B text-encoder repos (mlx-community bf16 and 4-bit) the same way, with
their decoder and vision-encoder layer stacks compressed to layers 0 and 1 (`load_gemma_manifest` expands them) and
the config.json each repo carries.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ltx_backend.weights.checkpoint import Checkpoint, Component, Layout
from ltx_backend.weights.plan import LoadPlan, PlannedTensor, expected_params
from ltx_backend.weights.safetensors_file import TensorInfo

MANIFEST_DIR = Path(__file__).resolve().parent / "fixtures" / "manifests"
LTX_MANIFESTS = ("ltx-2-19b-official", "ltx-2.3-22b-official", "ltx2-mlx-av-unified", "ltx-2.3-mlx-q4-split")
# Manifest dtype spelling -> safetensors spelling.
DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32", "uint32": "U32", "int32": "I32"}

Listing = Mapping[str, list]  # {key: [shape, dtype]}, as in the manifests
# A key inside a block stack: ``<stack>.<index>.<suffix>``, the stack ending in ``transformer_blocks`` (the 48 blocks of
# the transformer) or ``transformer_1d_blocks`` (the connectors' blocks), after any component or file prefix.
BLOCK_KEY = re.compile(r"^(?P<stack>.*?(?:transformer_blocks|transformer_1d_blocks))\.(?P<index>\d+)\.(?P<suffix>.+)$")
KEPT_BLOCKS = 2  # blocks 0 and 1 of each stack are stored in the fixtures
GEMMA_MANIFEST = "gemma-3-12b-it-mlx"
GEMMA_LISTINGS = ("tensors", "tensors_4bit")  # mlx-community/gemma-3-12b-it-bf16 and gemma-3-12b-it-4bit
# A key inside a layer stack of the Gemma repos: the language model's decoder layers, the SigLIP encoder layers.
GEMMA_LAYER_KEY = re.compile(
    r"^(?P<stack>(?:language_model\.model|vision_tower\.vision_model\.encoder)\.layers)\.(?P<index>\d+)\.(?P<suffix>.+)$"
)


@dataclass
class ListedFile:
    """A `TensorFile` that knows its tensor names and shapes but holds no data."""

    path: Path
    tensors: dict[str, TensorInfo]

    def array(self, name: str) -> mx.array:
        raise AssertionError(f"{self.path}:{name}: a manifest checkpoint has no tensor data")


def expand_blocks(tensors: Listing, counts: Mapping[str, int], pattern: re.Pattern = BLOCK_KEY) -> dict[str, list]:
    """A compressed listing with every block stack expanded to ``counts[stack]`` copies of block 0.

    The extractor stores blocks 0 and 1 only, having checked that every block of a stack holds the same keys, shapes
    and dtypes; block 1 is kept as evidence of that and must equal block 0. `pattern` tells the stacks' keys
    (`BLOCK_KEY` for the LTX transformer listings, `GEMMA_LAYER_KEY` for the Gemma ones).
    """
    blocks: dict[str, dict[int, dict[str, list]]] = {}
    out: dict[str, list] = {}
    for key, value in tensors.items():
        match = pattern.match(key)
        if match is None:
            out[key] = value
            continue
        stack, index = match["stack"], int(match["index"])
        assert stack in counts and index < min(KEPT_BLOCKS, counts[stack]), f"{key}: not a stored block"
        blocks.setdefault(stack, {}).setdefault(index, {})[match["suffix"]] = value
    assert set(blocks) == set(counts), "a block stack without its stored blocks"
    for stack, stored in blocks.items():
        assert sorted(stored) == list(range(min(KEPT_BLOCKS, counts[stack])))
        assert all(block == stored[0] for block in stored.values()), f"{stack}: the stored blocks differ"
        for index in range(counts[stack]):
            out.update({f"{stack}.{index}.{suffix}": value for suffix, value in stored[0].items()})
    return out


def load_manifest(name: str) -> dict:
    """The fixture, with ``tensors`` the full listing: audio/video keys plus the expanded transformer keys."""
    manifest = json.loads((MANIFEST_DIR / f"{name}.json").read_text())
    transformer = expand_blocks(manifest.pop("transformer_tensors"), manifest["repeated_blocks"])
    assert not manifest["tensors"].keys() & transformer.keys()
    manifest["tensors"] = {**manifest["tensors"], **transformer}
    return manifest


def load_gemma_manifest() -> dict:
    """The Gemma fixture, with both listings (``tensors``: bf16, ``tensors_4bit``) expanded to every layer."""
    manifest = json.loads((MANIFEST_DIR / f"{GEMMA_MANIFEST}.json").read_text())
    for name in GEMMA_LISTINGS:
        manifest[name] = expand_blocks(manifest[name], manifest["repeated_blocks"], GEMMA_LAYER_KEY)
    return manifest


def with_possible_extras(manifest: dict) -> dict[str, list]:
    """The listing plus the tensors the file may also carry (``possible_extra_tensors``: unread VAE statistics)."""
    return {**manifest["tensors"], **manifest.get("possible_extra_tensors", {}).get("tensors", {})}


def listed_file(path: Path, listing: Listing) -> ListedFile:
    tensors = {
        key: TensorInfo(file=path, name=key, shape=tuple(shape), dtype=DTYPES[dtype])
        for key, (shape, dtype) in listing.items()
    }
    return ListedFile(path, tensors)


def split_files(listing: Listing) -> dict[str, dict[str, list]]:
    """``{"<file>.safetensors:<key>": v}`` -> ``{"<file>": {"<key>": v}}``."""
    files: dict[str, dict[str, list]] = {}
    for key, value in listing.items():
        file, sep, name = key.partition(".safetensors:")
        assert sep, f"split manifest key without a file: {key!r}"
        files.setdefault(file, {})[name] = value
    return files


def join_files(files: Mapping[str, Listing]) -> dict[str, list]:
    return {f"{file}.safetensors:{key}": value for file, listing in files.items() for key, value in listing.items()}


def manifest_checkpoint(manifest: dict, tensors: Listing | None = None) -> Checkpoint:
    """The checkpoint a manifest describes (`tensors` replaces its listing, for synthesized variants)."""
    listing = manifest["tensors"] if tensors is None else tensors
    root = Path("/manifests") / manifest["layout"] / manifest["version"]
    layout = Layout(manifest["layout"])
    if layout is Layout.OFFICIAL:
        # The official file carries its config in the safetensors metadata: `config_used`.
        return Checkpoint(root, layout, [listed_file(root / "ltx-2.safetensors", listing)], config=manifest["config"])
    if layout is Layout.UNIFIED:
        return Checkpoint(
            root,
            layout,
            [listed_file(root / "model.safetensors", listing)],
            config=manifest["config"],  # {} for LTX-2.0: no embedded_config.json, the LTX-2.0 defaults apply
            model_info=manifest["model_info"],
        )
    files = [listed_file(root / f"{name}.safetensors", keys) for name, keys in split_files(listing).items()]
    return Checkpoint(
        root,
        layout,
        files,
        config=manifest["config"],
        model_info=manifest["model_info"],
        split_manifest=manifest["split_manifest"],
    )


def planned_shape(entry: PlannedTensor) -> tuple[int, ...]:
    """The stored shape after the plan's permutation (and its singleton-axis reshape, for plain tensors)."""
    shape = entry.source.shape
    if entry.permutation is not None:
        shape = tuple(shape[axis] for axis in entry.permutation)
    if shape != entry.param.shape and entry.param.kind == "plain":
        assert math.prod(shape) == math.prod(entry.param.shape)
        assert tuple(d for d in shape if d != 1) == tuple(d for d in entry.param.shape if d != 1)
        return entry.param.shape
    return shape


def param_count(plan: LoadPlan) -> int:
    return sum(math.prod(entry.param.shape) for entry in plan.entries)


def stored_keys(component: Component, keys=None) -> set[tuple[str, str]]:
    """(file, key-in-file) of the component's tensors (all, or those with the given component keys)."""
    keys = component.tensors if keys is None else keys
    return {(str(component.tensors[k].file), component.tensors[k].name) for k in keys}


def used_keys(plan: LoadPlan) -> set[tuple[str, str]]:
    """(file, key-in-file) of the tensors a plan reads."""
    return {(str(entry.source.file), entry.source.name) for entry in plan.entries}


def check_plan(module, plan: LoadPlan) -> None:
    """Every parameter of `module` is planned once, and the stored shape fits it after the planned permutation."""
    params = {spec.key: spec.shape for spec in expected_params(module)}
    planned = {entry.param.key for entry in plan.entries}
    assert planned == set(params), "every parameter is planned, once"
    assert len(plan.entries) == len(planned)
    for entry in plan.entries:
        assert planned_shape(entry) == params[entry.param.key], entry.source.name
        assert math.prod(entry.source.shape) == math.prod(entry.param.shape)
