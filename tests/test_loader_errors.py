"""Every error path of the checkpoint loaders gives an `LtxError` with its stable code.

Broken checkpoints are made in `tmp_path` from the tiny audio fixtures (copied, then damaged) or written from
scratch (raw safetensors bytes, `safetensors.numpy`, or an MLX module's own parameters).
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from safetensors import safe_open
from safetensors.numpy import save_file

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.audio import load_audio_decoder, load_audio_encoder, load_vocoder
from ltx_backend.weights.checkpoint import Layout, open_checkpoint
from ltx_backend.weights.plan import ParamSpec, expected_params, plan_load
from ltx_backend.weights.resolve import resolve_model
from ltx_backend.weights.safetensors_file import SafetensorsFile, TensorInfo

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "audio"
# The vocoder file of each LTX-2.0 fixture layout, and the prefix of the vocoder keys inside it.
VOCODER_FILES = {
    "ltx20_split": ("vocoder.safetensors", ""),
    "ltx20_unified": ("model.safetensors", "vocoder."),
    "ltx20_official": ("ltx-tiny-ltx20.safetensors", "vocoder."),
}


def fixture_copy(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def read_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str] | None]:
    with safe_open(str(path), framework="np") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()  # noqa: SIM118


def edit_file(path: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Rewrite a safetensors file after `edit` changed its tensors in place (metadata kept)."""
    tensors, metadata = read_file(path)
    edit(tensors)
    save_file(tensors, str(path), metadata=metadata)


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def raises(code: ErrorCode, call: Callable, *args) -> LtxError:
    with pytest.raises(LtxError) as info:
        call(*args)
    assert info.value.code is code, str(info.value)
    assert info.value.hint, "every error carries a fix hint"
    return info.value


def raw_safetensors(path: Path, header: dict | bytes, data: bytes = b"", header_len: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return path


def test_intact_copies_load(tmp_path: Path) -> None:
    """The baseline: the fixtures copied to tmp_path load; every damage below is what breaks them."""
    for name in ("ltx20_split", "ltx20_unified", "ltx20_official", "ltx23_split"):
        ckpt = open_checkpoint(fixture_copy(tmp_path, name))
        load_audio_decoder(ckpt)
        load_vocoder(ckpt)


# --- Damaged safetensors files -> CHECKPOINT_CORRUPT ---

F32_2 = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
CORRUPT_FILES: dict[str, tuple[dict | bytes, bytes, int | None, str]] = {
    # name: (header, data, header length written (None: the real one), words of the message)
    "shorter_than_prefix": (b"", b"", 0, "too short"),  # rewritten as 3 bytes below
    "header_longer_than_file": (F32_2, bytes(8), 10_000, "does not fit"),
    "header_length_huge": (F32_2, bytes(8), 2**63, "does not fit"),
    "header_not_json": (b"\xff{not json", bytes(8), None, "not valid JSON"),
    "header_not_object": (b"[1, 2]", b"", None, "not a JSON object"),
    "metadata_not_object": ({"__metadata__": [1], **F32_2}, bytes(8), None, "__metadata__"),
    "bad_dtype": ({"x": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), None, "unknown dtype"),
    "offsets_shorter_than_shape": ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(12), None,
                                   "needs 12"),
    "offsets_longer_than_shape": ({"x": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16), None,
                                  "needs 8"),
    "negative_offset": ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [-4, 4]}}, bytes(8), None, "claims"),
    "negative_dimension": ({"x": {"dtype": "F32", "shape": [-2, -1], "data_offsets": [0, 8]}}, bytes(8), None,
                           "claims"),
    "data_past_end": (F32_2, bytes(4), None, "truncated"),
    "entry_without_offsets": ({"x": {"dtype": "F32", "shape": [2]}}, bytes(8), None, "malformed"),
    "entry_not_object": ({"x": [1, 2]}, b"", None, "malformed"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CORRUPT_FILES))
def test_corrupt_safetensors_header(tmp_path: Path, case: str) -> None:
    header, data, header_len, words = CORRUPT_FILES[case]
    path = raw_safetensors(tmp_path / "broken.safetensors", header, data, header_len)
    if case == "shorter_than_prefix":
        path.write_bytes(b"\x01\x02\x03")
    error = raises(ErrorCode.CHECKPOINT_CORRUPT, SafetensorsFile, path)
    assert str(path) in error.message and words in error.message
    assert error.details["file"] == str(path)


@pytest.mark.parametrize(("name", "file"), [
    ("ltx20_split", "vocoder.safetensors"),
    ("ltx20_split", "audio_vae.safetensors"),
    ("ltx20_unified", "model.safetensors"),
    ("ltx20_official", "ltx-tiny-ltx20.safetensors"),
])  # fmt: skip
@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file_in_checkpoint(tmp_path: Path, name: str, file: str, keep: float) -> None:
    root = fixture_copy(tmp_path, name)
    path = root / file
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    error = raises(ErrorCode.CHECKPOINT_CORRUPT, open_checkpoint, root)
    assert file in error.message and "truncated" in error.message
    assert error.details["file"] == str(path)


# --- Tensors that do not fit the model ---


@pytest.mark.parametrize("name", list(VOCODER_FILES))
def test_wrong_shape(tmp_path: Path, name: str) -> None:
    root = fixture_copy(tmp_path, name)
    file, prefix = VOCODER_FILES[name]
    edit_file(root / file, lambda t: t.update({f"{prefix}conv_pre.bias": np.zeros(31, np.float32)}))
    error = raises(ErrorCode.WEIGHTS_SHAPE_MISMATCH, load_vocoder, open_checkpoint(root))
    assert error.details == {"file": str(root / file), "key": f"{prefix}conv_pre.bias", "expected": [32], "found": [31]}
    assert f"{prefix}conv_pre.bias" in error.message and file in error.message


def test_wrong_shape_names_both_layouts(tmp_path: Path) -> None:
    root = fixture_copy(tmp_path, "ltx20_split")
    edit_file(root / "vocoder.safetensors", lambda t: t.update({"conv_pre.weight": np.zeros((32, 5, 128), "f4")}))
    error = raises(ErrorCode.WEIGHTS_SHAPE_MISMATCH, load_vocoder, open_checkpoint(root))
    assert error.details["expected"] == [32, 7, 128] and error.details["found"] == [32, 5, 128]
    assert "PyTorch layout [32, 128, 7]" in error.message


@pytest.mark.parametrize("name", list(VOCODER_FILES))
def test_missing_tensor(tmp_path: Path, name: str) -> None:
    root = fixture_copy(tmp_path, name)
    file, prefix = VOCODER_FILES[name]
    edit_file(root / file, lambda t: t.pop(f"{prefix}conv_post.bias"))
    error = raises(ErrorCode.WEIGHTS_MISSING_KEY, load_vocoder, open_checkpoint(root))
    assert error.details["keys"] == ["conv_post.bias"]
    assert error.details["files"] == [str(root / file)]


@pytest.mark.parametrize("name", list(VOCODER_FILES))
def test_unexpected_tensor(tmp_path: Path, name: str) -> None:
    root = fixture_copy(tmp_path, name)
    file, prefix = VOCODER_FILES[name]
    edit_file(root / file, lambda t: t.update({f"{prefix}conv_mid.weight": np.zeros((4, 3), np.float32)}))
    error = raises(ErrorCode.WEIGHTS_UNEXPECTED_KEY, load_vocoder, open_checkpoint(root))
    assert error.details["keys"] == ["conv_mid.weight"]  # keyed as in the component
    assert error.details["file"] == str(root / file)


def test_missing_component(tmp_path: Path) -> None:
    """A unified file without vocoder tensors."""
    root = fixture_copy(tmp_path, "ltx20_unified")
    edit_file(root / "model.safetensors", lambda t: [t.pop(k) for k in list(t) if k.startswith("vocoder.")])
    ckpt = open_checkpoint(root)
    load_audio_decoder(ckpt)
    error = raises(ErrorCode.WEIGHTS_MISSING_KEY, load_vocoder, ckpt)
    assert error.details["component"] == "vocoder"


@pytest.mark.parametrize(("name", "file", "key", "axes"), [
    # split files are MLX layout: one Conv1d / Conv2d weight turned to PyTorch layout
    ("ltx20_split", "vocoder.safetensors", "conv_pre.weight", (0, 2, 1)),
    ("ltx20_split", "vocoder.safetensors", "resblocks.3.convs2.1.weight", (0, 2, 1)),
    ("ltx20_split", "audio_vae.safetensors", "conv_in.conv.weight", (0, 3, 1, 2)),
    # official files are PyTorch layout: one Conv1d / Conv2d weight turned to MLX layout
    ("ltx20_official", "ltx-tiny-ltx20.safetensors", "vocoder.conv_post.weight", (0, 2, 1)),
    ("ltx20_official", "ltx-tiny-ltx20.safetensors", "audio_vae.decoder.conv_out.conv.weight", (0, 2, 3, 1)),
])  # fmt: skip
def test_mixed_layouts_in_one_file(tmp_path: Path, name: str, file: str, key: str, axes: tuple[int, ...]) -> None:
    root = fixture_copy(tmp_path, name)
    edit_file(root / file, lambda t: t.update({key: np.ascontiguousarray(t[key].transpose(axes))}))
    ckpt = open_checkpoint(root)
    load = load_vocoder if "vocoder" in key or file.startswith("vocoder") else load_audio_decoder
    error = raises(ErrorCode.WEIGHTS_LAYOUT_CONFLICT, load, ckpt)
    assert error.details["file"] == str(root / file)
    assert repr(key) in error.message


@pytest.mark.parametrize(("name", "file", "stored", "twin"), [
    ("ltx20_split", "audio_vae.safetensors", "per_channel_statistics._mean_of_means",
     "per_channel_statistics.mean-of-means"),
    ("ltx20_official", "ltx-tiny-ltx20.safetensors", "audio_vae.per_channel_statistics.std-of-means",
     "audio_vae.per_channel_statistics._std_of_means"),
    ("ltx23_split", "audio_vae.safetensors", "decoder.conv_in.conv.weight", "conv_in.conv.weight"),
])  # fmt: skip
def test_parameter_stored_twice(tmp_path: Path, name: str, file: str, stored: str, twin: str) -> None:
    root = fixture_copy(tmp_path, name)
    edit_file(root / file, lambda t: t.update({twin: t[stored].copy()}))
    error = raises(ErrorCode.WEIGHTS_UNEXPECTED_KEY, load_audio_decoder, open_checkpoint(root))
    # Both spellings are named (the message may give one of them relative to the component, without `audio_vae.`).
    for key in (stored, twin):
        assert key.removeprefix("audio_vae.") + "'" in error.message


# --- Layout detection and configs ---


def test_not_a_checkpoint(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "empty directory" in raises(ErrorCode.LAYOUT_UNKNOWN, open_checkpoint, empty).message
    (tmp_path / "notes.txt").write_text("hello")
    assert "notes.txt" in raises(ErrorCode.LAYOUT_UNKNOWN, open_checkpoint, tmp_path).message


def test_safetensors_without_ltx_config(tmp_path: Path) -> None:
    """A plain safetensors file (no "config" metadata) is not an official LTX-2 checkpoint."""
    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "weights.safetensors"), metadata={"format": "pt"})
    raises(ErrorCode.LAYOUT_UNKNOWN, open_checkpoint, tmp_path)
    raises(ErrorCode.LAYOUT_UNKNOWN, open_checkpoint, tmp_path / "weights.safetensors")


def test_several_official_files(tmp_path: Path) -> None:
    root = fixture_copy(tmp_path, "ltx20_official")
    shutil.copy(root / "ltx-tiny-ltx20.safetensors", root / "ltx-tiny-other.safetensors")
    error = raises(ErrorCode.LAYOUT_UNKNOWN, open_checkpoint, root)
    assert "ltx-tiny-ltx20.safetensors" in error.message and "ltx-tiny-other.safetensors" in error.message
    # The file itself, or a "distilled" file among several, is unambiguous.
    assert open_checkpoint(root / "ltx-tiny-other.safetensors").layout is Layout.OFFICIAL
    (root / "ltx-tiny-other.safetensors").rename(root / "ltx-tiny-distilled.safetensors")
    assert open_checkpoint(root).files[0].path.name == "ltx-tiny-distilled.safetensors"


@pytest.mark.parametrize("manifest", [{"format": "unified"}, {"components": ["audio_vae", "vocoder"]}])
def test_split_manifest_wrong_format(tmp_path: Path, manifest: dict) -> None:
    root = fixture_copy(tmp_path, "ltx20_split")
    (root / "split_model.json").write_text(json.dumps(manifest))
    assert "split_model.json" in raises(ErrorCode.LAYOUT_UNKNOWN, open_checkpoint, root).message


def test_split_component_file_missing(tmp_path: Path) -> None:
    root = fixture_copy(tmp_path, "ltx20_split")
    (root / "vocoder.safetensors").unlink()
    error = raises(ErrorCode.WEIGHTS_MISSING_KEY, open_checkpoint, root)
    assert "'vocoder'" in error.message and error.details["file"] == str(root / "vocoder.safetensors")


@pytest.mark.parametrize("path", ["no-such-dir", "no-such-file.safetensors", "a/b/c"])
def test_nonexistent_path(tmp_path: Path, path: str) -> None:
    error = raises(ErrorCode.MODEL_NOT_FOUND, open_checkpoint, tmp_path / path)
    assert path in error.message


@pytest.mark.parametrize(("name", "file", "text"), [
    ("ltx20_split", "embedded_config.json", '{"audio_vae": {'),
    ("ltx20_split", "embedded_config.json", "[1, 2]"),
    ("ltx20_split", "config.json", "\xff not json"),
    ("ltx20_split", "split_model.json", '{"format": "split",'),
    ("ltx23_unified", "embedded_config.json", "null"),
    ("ltx23_unified", "config.json", ""),
])  # fmt: skip
def test_corrupt_config_file(tmp_path: Path, name: str, file: str, text: str) -> None:
    root = fixture_copy(tmp_path, name)
    (root / file).write_text(text)
    assert file in raises(ErrorCode.CONFIG_INVALID, open_checkpoint, root).message


def test_corrupt_official_config_metadata(tmp_path: Path) -> None:
    path = tmp_path / "ltx-2-tiny.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(path), metadata={"config": '{"vocoder": '})
    error = raises(ErrorCode.CONFIG_INVALID, open_checkpoint, tmp_path)
    assert "'config' metadata" in error.message


def _set(path: str, value) -> Callable[[dict], None]:
    """An edit that sets config[a][b]... for a dotted path."""

    def edit(config: dict) -> None:
        *parents, leaf = path.split(".")
        for key in parents:
            config = config[key]
        if value is _DELETE:
            del config[leaf]
        else:
            config[leaf] = value

    return edit


_DELETE = object()
DDCONFIG = "audio_vae.model.params.ddconfig"
INVALID_CONFIGS = {
    "vocoder_resblock_2": ("ltx20_split", "vocoder.resblock", "2", load_vocoder),
    "vocoder_mono": ("ltx20_split", "vocoder.stereo", False, load_vocoder),
    "vocoder_rates_vs_kernels": ("ltx20_split", "vocoder.upsample_rates", [3, 2, 2], load_vocoder),
    "vocoder_dilations_not_lists": ("ltx20_split", "vocoder.resblock_dilation_sizes", [1, 3], load_vocoder),
    "vocoder_channels_text": ("ltx20_split", "vocoder.upsample_initial_channel", "32", load_vocoder),
    "bwe_generator_hifigan": ("ltx23_split", "vocoder.bwe.resblock", "1", load_vocoder),
    "bwe_without_hop": ("ltx23_split", "vocoder.bwe.hop_length", _DELETE, load_vocoder),
    "bwe_rate_not_multiple": ("ltx23_split", "vocoder.bwe.output_sampling_rate", 44_100, load_vocoder),
    "bwe_not_a_dict": ("ltx23_split", "vocoder.bwe", "yes", load_vocoder),
    "causality_diagonal": ("ltx20_split", f"{DDCONFIG}.causality_axis", "diagonal", load_audio_decoder),
    "causality_diagonal_encoder": ("ltx23_split", f"{DDCONFIG}.causality_axis", "diagonal", load_audio_encoder),
    "norm_batch": ("ltx20_split", f"{DDCONFIG}.norm_type", "batch", load_audio_decoder),
    "ddconfig_null": ("ltx20_split", f"{DDCONFIG}", None, load_audio_decoder),
    "attn_resolutions_null": ("ltx20_split", f"{DDCONFIG}.attn_resolutions", None, load_audio_decoder),
    "audio_vae_not_a_dict": ("ltx20_split", "audio_vae", ["pixel"], load_audio_decoder),
}


@pytest.mark.parametrize("case", list(INVALID_CONFIGS))
def test_invalid_config_value(tmp_path: Path, case: str) -> None:
    name, path, value, load = INVALID_CONFIGS[case]
    root = fixture_copy(tmp_path, name)
    edit_json(root / "embedded_config.json", _set(path, value))
    error = raises(ErrorCode.CONFIG_INVALID, load, open_checkpoint(root))
    assert error.details["section"] == path.split(".")[0]


def test_invalid_config_value_in_official_metadata(tmp_path: Path) -> None:
    root = fixture_copy(tmp_path, "ltx20_official")
    path = root / "ltx-tiny-ltx20.safetensors"
    tensors, metadata = read_file(path)
    config = json.loads(metadata["config"])
    config["audio_vae"]["model"]["params"]["ddconfig"]["causality_axis"] = "diagonal"
    config["vocoder"]["resblock"] = "2"
    save_file(tensors, str(path), metadata={**metadata, "config": json.dumps(config)})
    ckpt = open_checkpoint(root)
    for load, section in (
        (load_audio_decoder, "audio_vae"),
        (load_audio_encoder, "audio_vae"),
        (load_vocoder, "vocoder"),
    ):
        assert raises(ErrorCode.CONFIG_INVALID, load, ckpt).details["section"] == section


@pytest.mark.parametrize(("key", "value"), [("ch_mult", []), ("num_res_blocks", "2"), ("z_channels", None)])
def test_invalid_audio_vae_structure(tmp_path: Path, key: str, value) -> None:
    """Values that parse but cannot build a model must be CONFIG_INVALID too, not a raw Python error."""
    root = fixture_copy(tmp_path, "ltx20_split")
    edit_json(root / "embedded_config.json", _set(f"{DDCONFIG}.{key}", value))
    raises(ErrorCode.CONFIG_INVALID, load_audio_decoder, open_checkpoint(root))


def test_fp8_tensor_is_refused_not_loaded_as_raw_bytes(tmp_path: Path) -> None:
    """MLX reads an F8_E4M3 tensor as its uint8 bit patterns: it must be refused with a clear code, not loaded."""
    root = fixture_copy(tmp_path, "ltx20_split")
    path = root / "vocoder.safetensors"
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    begin = header["conv_pre.bias"]["data_offsets"][0]  # F32[32] -> F8_E4M3[32] over its first 32 bytes
    header["conv_pre.bias"].update(dtype="F8_E4M3", data_offsets=[begin, begin + 32])
    raw_safetensors(path, header, data[8 + length :])
    error = raises(ErrorCode.WEIGHTS_DTYPE_UNSUPPORTED, load_vocoder, open_checkpoint(root))
    assert error.details["key"] == "conv_pre.bias" and error.details["dtype"] == "F8_E4M3"


# --- Ambiguous shapes: the rest of the file decides the layout ---

# HiFi-GAN with 6 -> 3 channels: every resblock conv is Conv1d(3, 3, kernel 3), shape (3, 3, 3) in both layouts.
SQUARE_VOCODER = {
    "resblock": "1", "stereo": True, "upsample_initial_channel": 6, "upsample_rates": [2],
    "upsample_kernel_sizes": [4], "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]],
    "output_sampling_rate": 24000,
}  # fmt: skip
TORCH_AXES = {"conv1d": (0, 2, 1), "conv_transpose1d": (2, 0, 1)}  # MLX (O,K,I) -> (O,I,K) / (I,O,K)


@pytest.mark.parametrize("layout", ["split", "unified", "official"])
@pytest.mark.parametrize("stored", ["mlx", "torch"])
def test_square_kernels_follow_the_file(tmp_path: Path, layout: str, stored: str) -> None:
    from ltx_backend.models.vocoder import Vocoder, VocoderConfig

    mx.random.seed(7)
    source = Vocoder(VocoderConfig.from_section(SQUARE_VOCODER))
    originals = dict(tree_flatten(source.parameters()))
    kinds = {spec.key: spec.kind for spec in expected_params(source)}
    square = [key for key, value in originals.items() if value.shape == (3, 3, 3)]
    assert len(square) == 6 and all(kinds[key] == "conv1d" for key in square)

    arrays = {}
    for key, value in originals.items():
        if stored == "torch" and kinds[key] in TORCH_AXES:
            value = value.transpose(TORCH_AXES[kinds[key]])
        arrays[key] = value
    root = tmp_path / layout
    root.mkdir()
    config = json.dumps({"vocoder": SQUARE_VOCODER})
    if layout == "split":
        mx.save_safetensors(str(root / "vocoder.safetensors"), arrays)
        (root / "split_model.json").write_text(json.dumps({"format": "split", "components": ["vocoder"]}))
        (root / "embedded_config.json").write_text(config)
    elif layout == "unified":
        mx.save_safetensors(str(root / "model.safetensors"), {f"vocoder.{k}": v for k, v in arrays.items()})
        (root / "embedded_config.json").write_text(config)
    else:
        prefixed = {f"vocoder.{k}": v for k, v in arrays.items()}
        mx.save_safetensors(str(root / "ltx-tiny.safetensors"), prefixed, metadata={"config": config})

    ckpt = open_checkpoint(root)
    assert ckpt.layout is Layout(layout)
    default = "torch" if layout == "official" else "mlx"
    assert ckpt.component("vocoder").convention == default
    loaded = dict(tree_flatten(load_vocoder(ckpt).parameters()))
    assert loaded.keys() == originals.keys()
    for key, value in originals.items():
        assert loaded[key].shape == value.shape, key
        assert mx.array_equal(loaded[key], value).item(), key
    # The stored square tensors really differ between the two readings (else the test would prove nothing).
    assert not mx.array_equal(originals[square[0]], originals[square[0]].transpose(0, 2, 1)).item()


@pytest.mark.parametrize("default", ["mlx", "torch"])
def test_no_evidence_uses_the_source_convention(default: str) -> None:
    """Only square tensors of a kind in a file: the component's convention decides."""
    params = [ParamSpec("a.weight", (3, 3, 3), "conv1d"), ParamSpec("a.bias", (3,), "plain")]
    tensors = {
        "a.weight": TensorInfo(Path("f.safetensors"), "a.weight", (3, 3, 3), "F32"),
        "a.bias": TensorInfo(Path("f.safetensors"), "a.bias", (3,), "F32"),
    }
    plan = plan_load("x", params, tensors, lambda key: key, default)
    weight = next(entry for entry in plan.entries if entry.param.key == "a.weight")
    assert weight.permutation == (None if default == "mlx" else (0, 2, 1))


# --- Resolving repo ids in the local Hugging Face cache ---

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(cache: Path, repo_id: str) -> Path:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "split_model.json").write_text('{"format": "split"}')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("HF_HUB_CACHE", "HF_HOME", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_resolve_cached_repo(tmp_path: Path, offline_env: pytest.MonkeyPatch) -> None:
    snapshot = fake_hub_cache(tmp_path / "hub-cache", "org/ltx-tiny")
    offline_env.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    assert resolve_model("org/ltx-tiny") == snapshot


def test_resolve_uncached_repo(tmp_path: Path, offline_env: pytest.MonkeyPatch) -> None:
    fake_hub_cache(tmp_path / "hub-cache", "org/ltx-tiny")
    offline_env.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    error = raises(ErrorCode.MODEL_NOT_FOUND, resolve_model, "org/ltx-other")
    assert "ltx-backend download org/ltx-other" in error.hint
    assert error.details == {"model": "org/ltx-other", "cache": str(tmp_path / "hub-cache")}


def test_resolve_under_hf_home(tmp_path: Path, offline_env: pytest.MonkeyPatch) -> None:
    snapshot = fake_hub_cache(tmp_path / "hf-home" / "hub", "org/ltx-tiny")
    offline_env.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert resolve_model("org/ltx-tiny") == snapshot


def test_resolve_under_xdg_cache(tmp_path: Path, offline_env: pytest.MonkeyPatch) -> None:
    snapshot = fake_hub_cache(tmp_path / "xdg" / "huggingface" / "hub", "org/ltx-tiny")
    assert resolve_model("org/ltx-tiny") == snapshot


def test_resolve_local_paths(tmp_path: Path, offline_env: pytest.MonkeyPatch) -> None:
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert resolve_model("org/local") == tmp_path / "org" / "local"  # an existing path wins over a repo id
    assert resolve_model(str(tmp_path)) == tmp_path
    error = raises(ErrorCode.MODEL_NOT_FOUND, resolve_model, "not a repo id")
    assert error.details == {"model": "not a repo id"}


def test_config_section_of_the_wrong_type_is_config_invalid(tmp_path: Path) -> None:
    root = fixture_copy(tmp_path, "ltx20_split")
    edit_json(root / "embedded_config.json", _set("vocoder", [1, 2, 3]))
    raises(ErrorCode.CONFIG_INVALID, load_vocoder, open_checkpoint(root))


def test_unused_statistics_are_passed_over(tmp_path: Path) -> None:
    """Real VAE files may carry statistics no model reads (channel, mean-of-stds, ...): known, not unexpected."""
    root = fixture_copy(tmp_path, "ltx20_split")
    tensors, metadata = read_file(root / "audio_vae.safetensors")
    tensors["per_channel_statistics.channel"] = np.arange(16, dtype=np.float32)
    tensors["per_channel_statistics.mean-of-stds"] = np.ones(16, dtype=np.float32)
    save_file(tensors, str(root / "audio_vae.safetensors"), metadata=metadata)
    load_audio_decoder(open_checkpoint(root))


def test_official_upscaler_of_the_checkpoints_own_family_is_preferred(tmp_path: Path) -> None:
    from ltx_backend.weights.video import find_upscaler

    root = tmp_path / "official"
    root.mkdir()
    metadata = {"config": json.dumps({"vae": {}})}
    save_file({"vae.decoder.x": np.zeros(1, np.float32)}, str(root / "ltx-2-19b-distilled.safetensors"), metadata)
    for name in ("ltx-2-spatial-upscaler-x2-1.0", "ltx-2.3-spatial-upscaler-x2-1.1"):
        save_file({"initial_conv.weight": np.zeros(1, np.float32)}, str(root / f"{name}.safetensors"))
    source = find_upscaler(open_checkpoint(root), "spatial_x2")
    assert [path.name for path in source.component.files] == ["ltx-2-spatial-upscaler-x2-1.0.safetensors"]
