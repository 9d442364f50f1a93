"""LTX-2.5 version detection and the text-encoder pairing rule (ltx-core 1.2.0 ``_check_gemma_version``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltx_backend.errors import ErrorCode, LtxError
from ltx_backend.weights.checkpoint import open_checkpoint
from ltx_backend.weights.ltx25 import (
    check_text_encoder,
    default_image_crf,
    gemma_source_version,
    is_ltx25,
    model_version,
    parse_version,
    text_encoder_family,
    uses_ancestral_stage_1,
)

FIXTURES = Path(__file__).parent / "fixtures"
LTX25 = FIXTURES / "ltx25" / "connectors.safetensors"  # official transformer-file metadata of a 2.5 model
LTX23 = FIXTURES / "transformer" / "t23_official" / "ltx-tiny-t23.safetensors"  # no model_version, no Gemma source
GEMMA4_FILE = FIXTURES / "ltx25" / "te.safetensors"
GEMMA4_FOLDER = FIXTURES / "ltx25" / "tiny-gemma4-hf"
GEMMA3_FOLDER = FIXTURES / "gemma" / "tiny-gemma3"


def check(model: Path, encoder: Path) -> None:
    family, version = text_encoder_family(encoder)
    check_text_encoder(open_checkpoint(model), family, version, str(encoder))


def test_versions_are_read_from_the_metadata() -> None:
    ltx25, ltx23 = open_checkpoint(LTX25), open_checkpoint(LTX23)
    assert model_version(ltx25) == (2, 5, 0) and is_ltx25(ltx25)
    assert gemma_source_version(ltx25) == "gemma4-tiny-fixture"
    assert model_version(ltx23) is None and not is_ltx25(ltx23)
    assert parse_version("2.3") == (2, 3) and parse_version("v2") is None and parse_version(None) is None


def test_encoder_families() -> None:
    assert text_encoder_family(GEMMA4_FILE) == ("gemma4", "gemma4-tiny-fixture")
    assert text_encoder_family(GEMMA4_FOLDER) == ("gemma4", None)
    assert text_encoder_family(GEMMA3_FOLDER)[0] == "gemma3"


def test_released_pairs_pass() -> None:
    check(LTX25, GEMMA4_FILE)
    check(LTX23, GEMMA3_FOLDER)


@pytest.mark.parametrize(
    ("model", "encoder", "words"),
    [
        (LTX25, GEMMA3_FOLDER, "needs its Gemma 4"),
        (LTX23, GEMMA4_FILE, "use Gemma 3"),
        (LTX25, GEMMA4_FOLDER, "trained with 'gemma4-tiny-fixture'"),  # a Gemma 4 without the LTX version tag
    ],
)
def test_mismatched_pairs_are_clear_errors(model: Path, encoder: Path, words: str) -> None:
    with pytest.raises(LtxError) as info:
        check(model, encoder)
    assert info.value.code is ErrorCode.TEXT_ENCODER_MISMATCH
    assert words in info.value.message and str(encoder) in info.value.message and info.value.hint


def test_a_2_5_checkpoint_without_its_gemma_source_is_rejected(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    from ltx_backend.weights.safetensors_file import SafetensorsFile

    metadata = dict(SafetensorsFile(LTX25).metadata)
    del metadata["gemma_source_checkpoint"]
    save_file(load_file(LTX25), tmp_path / "ltx.safetensors", metadata=metadata)
    with pytest.raises(LtxError) as info:
        check(tmp_path / "ltx.safetensors", GEMMA4_FILE)
    assert info.value.code is ErrorCode.CONFIG_INVALID and "gemma_source_checkpoint" in info.value.message


def test_an_encoder_without_a_config_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps([1]))
    with pytest.raises(LtxError) as info:
        text_encoder_family(tmp_path)
    assert info.value.code is ErrorCode.TEXT_ENCODER_INVALID


def test_sampler_and_image_crf_follow_the_version() -> None:
    ltx25, ltx23 = open_checkpoint(LTX25), open_checkpoint(LTX23)
    assert uses_ancestral_stage_1(ltx25) and not uses_ancestral_stage_1(ltx23)
    assert default_image_crf(ltx25) == 18 and default_image_crf(ltx23) == 33
