"""The prompt tokenizer (`tokenizers` alone) gives exactly what transformers' AutoTokenizer gives for Gemma."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ltx_backend.pipeline.tokenizer import PromptTokenizer, load_transformers_tokenizer

TOKENIZERS = [
    Path(__file__).parent / "fixtures" / "gemma" / "tiny-gemma3",
    Path(__file__).parents[1] / "ltx_backend" / "assets" / "tiny_text_encoder",
]
PROMPTS = [
    "a red fox runs through snow",
    "  leading and trailing spaces  ",
    "Ünïcödé, emoji 🦊 and <bos> <pad> literal special tokens",
    "word " * 200,  # past the length: truncated
    "x",
]


@pytest.mark.parametrize("location", TOKENIZERS, ids=lambda p: p.name)
@pytest.mark.parametrize("max_length", [8, 64])
def test_matches_auto_tokenizer(location: Path, max_length: int) -> None:
    ours = PromptTokenizer(location)
    theirs = load_transformers_tokenizer(location)
    for prompt in PROMPTS:
        tokens = ours.encode(prompt, max_length)
        expected = theirs(prompt, padding="max_length", max_length=max_length, truncation=True, return_tensors="np")
        np.testing.assert_array_equal(tokens.input_ids, expected["input_ids"], err_msg=prompt)
        np.testing.assert_array_equal(tokens.attention_mask, expected["attention_mask"], err_msg=prompt)
        full = len(theirs(prompt)["input_ids"])
        assert tokens.dropped == max(0, full - max_length)


def test_encoding_a_prompt_does_not_import_transformers() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from ltx_backend.pipeline.tokenizer import PromptTokenizer; "
        f"PromptTokenizer(__import__('pathlib').Path({str(TOKENIZERS[1])!r})).encode('a fox', 16); "
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_broken_tokenizer_file_is_a_clear_error(tmp_path: Path) -> None:
    from ltx_backend.errors import ErrorCode, LtxError

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(LtxError) as error:
        PromptTokenizer(tmp_path)
    assert error.value.code is ErrorCode.TEXT_ENCODER_INVALID
    assert str(tmp_path) in error.value.message
