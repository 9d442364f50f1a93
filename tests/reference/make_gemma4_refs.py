"""Generate a tiny Gemma 4 unified text-encoder fixture (Hugging Face folder layout) with transformers' own model.

LTX-2.5 encodes prompts with Gemma 4 unified (ltx-core builds it with ``AutoModelForImageTextToText.from_config``
and calls the inner ``model.model`` with ``output_hidden_states=True``). This script builds, without any download:

* a tiny word-level tokenizer (Gemma's special ids ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, no BOS
  post-processor, as Gemma 4's), saved as ``tokenizer.json`` / ``tokenizer_config.json``;
* a seeded, random-weight ``Gemma4UnifiedForConditionalGeneration``: 8 text layers (sliding x5, FULL, sliding, FULL),
  a sliding window (12) shorter than the prompts, 4 query heads, sliding layers head_dim 16 with 2 KV heads, full
  layers 32 wide with 1 KV head and values from the key projection, proportional RoPE with partial factor 0.25; tiny
  vision and audio embedders; saved with ``save_pretrained`` (``model.language_model.*`` keys, bfloat16);
* ``refs.npz``: ids / masks as ltx-core tokenizes (BOS prepended, left-padded to 40), and the 9 hidden states of the
  inner model computed in float32 from the bf16-rounded weights.

Every parameter is random (norm weights and layer scalars 1 + 0.1 N, so the raw-weight RMS norm and the scalar
show; linear weights N / sqrt(fan_in)). Output: ``tests/fixtures/ltx25/tiny-gemma4-hf/`` and
``tests/fixtures/ltx25/gemma4_hf_refs.npz``. Deterministic. Run from the repository root with a venv holding
torch 2.13 and transformers >= 5.10 (this was run with 5.25.0):

    /tmp/ltx-ref-venv/bin/python tests/reference/make_gemma4_refs.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_io

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "ltx25"
SEED = 2505
LENGTH = 40
STORAGE_DTYPE = torch.bfloat16
WORDS = [
    "a",
    "red",
    "fox",
    "runs",
    "across",
    "snowy",
    "field",
    "at",
    "dawn",
    "while",
    "the",
    "camera",
    "slowly",
    "pans",
    "left",
    "and",
    "soft",
    "wind",
    "whistles",
    "through",
    "tall",
    "grass",
    "birds",
    "call",
    "in",
    "distance",
    "warm",
    "light",
    "glows",
    "on",
    "fur",
    "city",
    "street",
    "night",
    "rain",
    "neon",
    "reflections",
    "woman",
    "walks",
]
PROMPTS = (
    "  a woman walks through a city street at night while neon reflections glow on the rain and the camera slowly "
    "pans left  ",
    "a red fox runs across a snowy field",
)
LAYER_TYPES = ["sliding_attention"] * 5 + ["full_attention", "sliding_attention", "full_attention"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for word in dict.fromkeys(WORDS):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def build_config(vocab_size: int) -> Gemma4UnifiedConfig:
    return Gemma4UnifiedConfig(
        text_config={
            "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": len(LAYER_TYPES),
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "global_head_dim": 32,
            "num_global_key_value_heads": 1, "attention_k_eq_v": True, "sliding_window": 12,
            "layer_types": LAYER_TYPES, "rms_norm_eps": 1e-6, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1,
            "use_bidirectional_attention": "vision", "max_position_embeddings": 256,
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "proportional", "rope_theta": 1000000.0, "partial_rotary_factor": 0.25},
            },
        },
        vision_config={"patch_size": 2, "pooling_kernel_size": 2, "mm_embed_dim": 32, "mm_posemb_size": 8,
                       "output_proj_dims": 32},
        audio_config={"audio_embed_dim": 8},
    )  # fmt: skip


def randomize_(model: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if "norm" in name.rsplit(".", 2)[-2] and name.endswith("weight"):
                value = 1.0 + 0.1 * noise
            elif name.endswith(".bias") or param.ndim == 1:
                value = 0.1 * noise
            elif name.endswith("embed_tokens.weight"):
                value = noise
            else:
                value = noise / float(np.prod(param.shape[1:])) ** 0.5
            param.copy_(value.to(STORAGE_DTYPE).to(torch.float32))
        for name, buffer in model.named_buffers():
            if name.endswith("layer_scalar"):
                buffer.copy_((1.0 + 0.1 * torch.randn(buffer.shape, generator=gen)).to(STORAGE_DTYPE).float())


def tokenize_like_ltx(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """ltx-core LTXGemmaTokenizer: strip, tokenize, prepend BOS if missing, left-pad to LENGTH."""
    ids, masks = [], []
    for prompt in PROMPTS:
        tokens = tokenizer(prompt.strip(), truncation=True, max_length=LENGTH)["input_ids"]
        if not tokens or tokens[0] != tokenizer.bos_token_id:
            tokens = [tokenizer.bos_token_id, *tokens][:LENGTH]
        pad = LENGTH - len(tokens)
        ids.append([tokenizer.pad_token_id] * pad + tokens)
        masks.append([0] * pad + [1] * len(tokens))
    return np.array(ids, dtype=np.int64), np.array(masks, dtype=np.int64)


def main() -> None:
    assert tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (5, 10), transformers.__version__
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = build_config(len(tokenizer))
    config._attn_implementation = "eager"
    model = Gemma4UnifiedForConditionalGeneration(config).eval()
    randomize_(model, torch.Generator().manual_seed(SEED))

    folder = fixture_io.fresh_dir(OUT, "tiny-gemma4-hf")
    # bf16 copies of the (already bf16-rounded) state; the model itself stays float32, RoPE and embed-scale buffers
    # included, as the references must be computed from it.
    stored = {key: value.to(STORAGE_DTYPE) for key, value in model.state_dict().items()}
    model.save_pretrained(folder, state_dict=stored, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    for extra in ("generation_config.json", "chat_template.jinja"):
        (folder / extra).unlink(missing_ok=True)
    config_json = json.loads((folder / "config.json").read_text())
    config_json.pop("transformers_version", None)
    fixture_io.write_json(config_json, folder / "config.json")

    ids, mask = tokenize_like_ltx(tokenizer)
    with torch.no_grad():
        out = model.model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True
        )
    hidden = torch.stack(out.hidden_states).numpy()
    assert hidden.shape[0] == len(LAYER_TYPES) + 1 and np.array_equal(hidden[-1], out.last_hidden_state.numpy())
    fixture_io.save_npz(
        {"input_ids": ids, "attention_mask": mask, "hidden_states": hidden.astype(np.float32)},
        OUT / "gemma4_hf_refs.npz",
    )
    for path in sorted(folder.iterdir()):
        print(f"  {path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
