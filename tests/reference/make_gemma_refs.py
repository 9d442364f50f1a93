"""Generate a tiny Gemma 3 text-encoder reference fixture (tokenizer + model + references) with HF ``transformers``.

LTX-2 encodes prompts with Gemma 3 (``Gemma3ForConditionalGeneration``; ltx-core's ``GemmaTextEncoder.encode`` calls
the inner ``model.model`` with ``output_hidden_states=True`` and feeds every hidden state to the feature extractor) and
can enhance prompts with it (chat template + ``generate``). This script builds, without any download:

* a tiny Gemma-style tokenizer (``tokenizers`` BPE with byte fallback, Gemma's special-token ids, ``<bos>``
  post-processor, Gemma 3 chat template), saved as ``tokenizer.json`` / ``tokenizer_config.json`` /
  ``special_tokens_map.json``;
* a tiny, seeded, random-weight ``Gemma3ForConditionalGeneration`` (7 text layers -- sliding, sliding, sliding,
  sliding, sliding, FULL, sliding -- plus a 1-layer SigLIP vision tower and the multimodal projector), saved in
  mlx-community naming (``language_model.model.*``, ``vision_tower.vision_model.*``, ``multi_modal_projector.*``; no
  ``lm_head``: tied), bfloat16, with an mlx-community style ``config.json`` (+ ``generation_config.json``);
* ``refs.npz``: token ids / masks as LTX tokenizes them, the hidden states of the inner model, and a greedy
  generation, all computed in float32 from the bf16-rounded weights;

into ``tests/fixtures/gemma/``. Everything is deterministic; re-running overwrites the fixtures with byte-identical
files. Run from the repository root with the reference venv (PyTorch CPU + transformers):

    /tmp/ltx-ref-venv/bin/python tests/reference/make_gemma_refs.py
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import fixture_io  # this folder's shared fixture writers (the script's folder is on sys.path)
import numpy as np
import tokenizers
import torch
import transformers
from ltx_core.text_encoders.gemma.config import (
    Gemma3ConfigData,
    Gemma3RopeScaling,
    Gemma3VisionConfig,
)
from ltx_core.text_encoders.gemma.config import Gemma3TextConfig as LtxGemma3TextConfig
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import (
    AutoTokenizer,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    SiglipVisionConfig,
)

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "tests" / "fixtures" / "gemma"
MODEL_DIR = OUT_DIR / "tiny-gemma3"
MANIFEST = REPO.parent / "shared" / "reference" / "manifests" / "gemma-3-12b-it-mlx.json"  # optional key check
WEIGHT_SEED = 11  # picked (of 0..19) for a varied greedy continuation without EOS
STORAGE_DTYPE = torch.bfloat16  # what the checkpoint file holds; references are computed in float32 from it
MAX_LENGTH = 64  # LTX uses 1024 (module_ops_from_gemma_root) / 256 (LTXVGemmaTokenizer default); same code path
MAX_NEW_TOKENS = 12

# ---------------------------------------------------------------------------
# Tokenizer: Gemma's tokenizer.json structure (BPE, byte_fallback, fuse_unk, " " -> "▁" normalizer, no dummy
# prefix, "<bos> $A" post-processor), with a tiny hand-made vocabulary.
# ---------------------------------------------------------------------------

SPECIAL_TOKENS = (  # id = position. 0..4 as in Gemma; the turn / image markers have other ids than Gemma's
    "<pad>",  # 0
    "<eos>",  # 1
    "<bos>",  # 2
    "<unk>",  # 3
    "<mask>",  # 4
    "<start_of_turn>",  # 5   (Gemma: 105)
    "<end_of_turn>",  # 6     (Gemma: 106)
    "<start_of_image>",  # 7  (Gemma: 255999)
    "<end_of_image>",  # 8    (Gemma: 256000)
    "<image_soft_token>",  # 9 (Gemma: 262144)
)
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
SOT_ID, EOT_ID, BOI_ID, EOI_ID, IMAGE_ID = 5, 6, 7, 8, 9
BYTE_OFFSET = len(SPECIAL_TOKENS)  # <0x00>..<0xFF> at 10..265 (byte fallback, as in Gemma)
BASE_CHARS = ["\n", "▁", *"abcdefghijklmnopqrstuvwxyz", *"0123456789", *".,!?:;'\"-()"]
WORDS = [
    "a",
    "an",
    "the",
    "and",
    "or",
    "of",
    "in",
    "on",
    "at",
    "to",
    "from",
    "with",
    "by",
    "is",
    "are",
    "it",
    "its",
    "as",
    "into",
    "while",
    "then",
    "near",
    "over",
    "under",
    "through",
    "between",
    "cat",
    "dog",
    "fox",
    "bird",
    "horse",
    "man",
    "woman",
    "child",
    "people",
    "car",
    "city",
    "street",
    "park",
    "forest",
    "river",
    "lake",
    "sea",
    "beach",
    "mountain",
    "snow",
    "rain",
    "light",
    "sun",
    "moon",
    "sky",
    "tree",
    "trees",
    "water",
    "window",
    "camera",
    "video",
    "prompt",
    "scene",
    "frame",
    "side",
    "left",
    "right",
    "slowly",
    "soft",
    "warm",
    "cold",
    "red",
    "blue",
    "green",
    "white",
    "dark",
    "tall",
    "small",
    "old",
    "young",
    "walks",
    "runs",
    "sleeps",
    "plays",
    "looks",
    "falls",
    "follows",
    "moves",
    "stops",
    "holds",
    "smiles",
    "turns",
    "flies",
    "sits",
    "writes",
    "short",
    "helpful",
    "assistant",
    "you",
    "user",
    "model",
    "describe",
]
NO_PREFIX_WORDS = ("user", "model", "you", "the")  # words that also occur without a leading space (after "\n")

CHAT_TEMPLATE = (  # Gemma 3's (google/gemma-3-*-it tokenizer_config.json), verbatim
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

# Prompts: leading/trailing whitespace (LTX strips), an upper-case letter and a non-ASCII char (byte fallback), an
# out-of-vocabulary word (sub-word pieces). The long one has > sliding_window real tokens.
PROMPTS = (
    "  a cat sleeps on a warm window.\n",
    "A red fox runs through the snow in the dark forest, while soft light falls between the tall trees; "
    "the camera slowly follows it from the left side of the frame, then it stops near a cold river — zebra.",
)
CHAT_MESSAGES = (
    {"role": "system", "content": "you are a helpful assistant. describe the scene in a short video prompt."},
    {"role": "user", "content": "user prompt: a dog plays in the park."},
)
# The shared fixture writers, bound to this script's output folder and storage dtype.
write_json = functools.partial(fixture_io.write_json, ensure_ascii=False)
save_npz = fixture_io.save_npz


def build_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Specials, 256 byte tokens, single chars, then every word as a left-to-right merge chain ("▁" + word; some
    words also without "▁"). All "▁" merges rank before the no-prefix ones, so a known "▁word" always becomes one
    token; unknown words fall back to shorter pieces / single chars, unknown chars to <0xXX> bytes."""
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *(f"<0x{b:02X}>" for b in range(256)), *BASE_CHARS):
        assert token not in vocab
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    chains = [("▁" + word) for word in WORDS] + ["\n\n"] + list(NO_PREFIX_WORDS)
    for chain in chains:
        piece = chain[0]
        for char in chain[1:]:
            assert char in vocab, char
            if piece + char not in vocab:
                merges.append((piece, char))
                vocab[piece + char] = len(vocab)
            piece += char
    return vocab, merges


def build_tokenizer() -> Tokenizer:
    vocab, merges = build_vocab_and_merges()
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    # transformers' GemmaTokenizer rebuilds exactly these components (it keeps only vocab, merges and post-processor
    # from tokenizer.json), so the saved file and AutoTokenizer tokenize alike.
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B:1", special_tokens=[("<bos>", BOS_ID)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    assert tok.get_vocab_size() == len(vocab)
    return tok


def tokenizer_config() -> dict:
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "boi_token": "<start_of_image>",
        "bos_token": "<bos>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eoi_token": "<end_of_image>",
        "eos_token": "<eos>",
        "extra_special_tokens": {
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        "image_token": "<image_soft_token>",
        "mask_token": "<mask>",
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "padding_side": "left",
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizerFast",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }


def special_tokens_map() -> dict:
    return {
        "boi_token": "<start_of_image>",
        "bos_token": {"content": "<bos>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "eoi_token": "<end_of_image>",
        "eos_token": {"content": "<eos>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "image_token": "<image_soft_token>",
        "pad_token": {"content": "<pad>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "unk_token": {"content": "<unk>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
    }


def write_tokenizer(tok: Tokenizer) -> None:
    (MODEL_DIR / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n")
    write_json(tokenizer_config(), MODEL_DIR / "tokenizer_config.json")
    write_json(special_tokens_map(), MODEL_DIR / "special_tokens_map.json")


def load_hf_tokenizer():
    """Exactly as ltx-core's LTXVGemmaTokenizer loads it (max_length: ours)."""
    hf = AutoTokenizer.from_pretrained(str(MODEL_DIR), local_files_only=True, model_max_length=MAX_LENGTH)
    hf.padding_side = "left"
    return hf


def vocab_id(tok: Tokenizer, token: str) -> int:
    return tok.get_vocab()[token]


def check_tokenizer(tok: Tokenizer, hf) -> None:
    raw = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    assert len(hf) == tok.get_vocab_size(), (len(hf), tok.get_vocab_size())
    ids = {"<pad>": PAD_ID, "<eos>": EOS_ID, "<bos>": BOS_ID, "<unk>": UNK_ID}
    assert {t: hf.convert_tokens_to_ids(t) for t in ids} == ids
    assert (hf.pad_token_id, hf.eos_token_id, hf.bos_token_id, hf.unk_token_id) == (PAD_ID, EOS_ID, BOS_ID, UNK_ID)
    assert hf.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"]) == [SOT_ID, EOT_ID]
    for text in (*PROMPTS, "hello World\n\nthe user", "<start_of_turn>user\nyou<end_of_turn>\n"):
        assert hf(text).input_ids == raw.encode(text).ids == tok.encode(text).ids, text
        assert hf.decode(hf(text).input_ids[1:]) == text, text  # round trip (after <bos>)
    # Every vocabulary word with a leading space is one token.
    for word in WORDS:
        assert len(raw.encode(" " + word, add_special_tokens=False).ids) == 1, word
    enc = hf(["a cat", "the dog runs"], padding="max_length", max_length=8)
    ids = hf("a cat").input_ids
    assert ids == [BOS_ID, vocab_id(tok, "a"), vocab_id(tok, "▁cat")]
    assert enc.input_ids[0] == [PAD_ID] * (8 - len(ids)) + ids, "not left padded"
    assert enc.attention_mask[0] == [0] * (8 - len(ids)) + [1] * len(ids)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

TEXT = {  # HF Gemma3TextConfig kwargs (legacy spelling, as in the Hub configs)
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 7,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "query_pre_attn_scalar": 24,  # != head_dim: a port scaling by head_dim**-0.5 fails
    "sliding_window": 16,  # < the long prompt's 45 real tokens and the chat prompt's 31
    "sliding_window_pattern": 6,  # layer i is global iff (i + 1) % 6 == 0: layer 5 only
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    "rms_norm_eps": 1e-6,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131072,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "pad_token_id": PAD_ID,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "tie_word_embeddings": True,
}
VISION = {  # SigLIP: 28x28 image, 14x14 patches -> 2x2 patches -> 4 image tokens (avg-pool kernel 1)
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_channels": 3,
    "image_size": 28,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
    "vision_use_head": False,
}
MM_TOKENS_PER_IMAGE = 4
EMBED_STD = 0.08  # x sqrt(64) = 8 -> embeddings of RMS 0.64; larger makes the tied lm_head echo the last token


def hf_config(vocab_size: int) -> Gemma3Config:
    text = Gemma3TextConfig(vocab_size=vocab_size, **TEXT)
    vision = SiglipVisionConfig(**VISION)
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        boi_token_index=BOI_ID,
        eoi_token_index=EOI_ID,
        image_token_index=IMAGE_ID,
        eos_token_id=[EOS_ID, EOT_ID],
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
    )


def mlx_community_config(vocab_size: int) -> dict:
    """config.json as in mlx-community/gemma-3-12b-it-bf16: ltx-core's Gemma3ConfigData key set (the full 12B config,
    legacy ``rope_scaling`` / ``rope_local_base_freq`` / ``sliding_window_pattern`` spelling, no ``layer_types``)
    with the tiny values."""
    text = {k: v for k, v in TEXT.items() if k not in ("pad_token_id", "bos_token_id", "eos_token_id")}
    text.pop("tie_word_embeddings")
    text["rope_scaling"] = Gemma3RopeScaling(**TEXT["rope_scaling"])
    text["rope_theta"] = int(text["rope_theta"])
    text["rope_local_base_freq"] = int(text["rope_local_base_freq"])
    vision = {k: v for k, v in VISION.items()}
    cfg = Gemma3ConfigData(
        eos_token_id=[EOS_ID, EOT_ID],
        boi_token_index=BOI_ID,
        eoi_token_index=EOI_ID,
        image_token_index=IMAGE_ID,
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        text_config=LtxGemma3TextConfig(vocab_size=vocab_size, **text),
        vision_config=Gemma3VisionConfig(**vision),
        transformers_version=transformers.__version__,
    ).to_dict()
    assert set(asdict(LtxGemma3TextConfig())) == set(cfg["text_config"])
    cfg["text_config"]["rope_scaling"] = {"factor": 8.0, "rope_type": "linear"}
    return cfg  # pad/bos/eos of the text config: transformers' Gemma3TextConfig defaults (0, 2, 1) = ours


def generation_config() -> dict:
    """As google/gemma-3-*-it's generation_config.json (eos = <eos>, <end_of_turn>), sampling settings kept."""
    return {
        "bos_token_id": BOS_ID,
        "cache_implementation": "hybrid",
        "do_sample": True,
        "eos_token_id": [EOS_ID, EOT_ID],
        "pad_token_id": PAD_ID,
        "top_k": 64,
        "top_p": 0.95,
    }


def randomize_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every parameter from one generator, independent of transformers' init. Gemma RMSNorms (scale 1 + w, zero
    init) get w ~ 0.1 N(0,1), so a missing "+1" shows; SigLIP LayerNorms 1 + 0.1 N; biases 0.1 N; embeddings
    EMBED_STD N (pad row included: real checkpoints' pad embedding is not zero); other weights N / sqrt(fan_in)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if name.endswith("layer_norm1.weight") or name.endswith("layer_norm2.weight") or "post_layernorm" in name:
                value = 1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
            elif "norm" in name.rsplit(".", 2)[-2] or name.endswith(
                ".bias"
            ):  # Gemma3RMSNorm: *_layernorm, q/k_norm, norm, mm_soft_emb_norm
                value = 0.1 * noise
            elif name.endswith("embed_tokens.weight"):
                value = EMBED_STD * noise
            elif name.endswith("position_embedding.weight"):
                value = 0.02 * noise
            elif name.endswith("mm_input_projection_weight"):  # (vision, text): x @ W
                value = noise / param.shape[0] ** 0.5
            else:
                value = noise / float(np.prod(param.shape[1:])) ** 0.5
            param.copy_(value)


def round_to_storage_(model: torch.nn.Module) -> None:
    """Round every parameter to bf16 and back (buffers -- RoPE inv_freq, embed_scale -- stay float32)."""
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.to(STORAGE_DTYPE).to(torch.float32))


def build_model(vocab_size: int) -> Gemma3ForConditionalGeneration:
    torch.manual_seed(WEIGHT_SEED)
    model = Gemma3ForConditionalGeneration(hf_config(vocab_size)).float().eval()
    randomize_(model, torch.Generator().manual_seed(1000 + WEIGHT_SEED))
    round_to_storage_(model)
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight, "lm_head not tied"
    return model


# ---------------------------------------------------------------------------
# Checkpoint layout (mlx-community / mlx-vlm naming)
# ---------------------------------------------------------------------------

HF_TO_MLX = (  # transformers 5 state-dict prefix -> file prefix
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)
PATCH_EMBED = "vision_tower.vision_model.embeddings.patch_embedding.weight"


def mlx_tensors(model: Gemma3ForConditionalGeneration) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied to embed_tokens, not stored
        for old, new in HF_TO_MLX:
            if key.startswith(old):
                key = new + key.removeprefix(old)
                break
        else:
            raise KeyError(key)
        out[key] = value
    out[PATCH_EMBED] = out[PATCH_EMBED].permute(0, 2, 3, 1)  # Conv2d (O,I,H,W) -> MLX (O,H,W,I), as mlx-vlm stores
    return out


def hf_tensors(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in stored.items():
        if key == PATCH_EMBED:
            value = value.permute(0, 3, 1, 2)
        for old, new in HF_TO_MLX:
            if key.startswith(new):
                key = old + key.removeprefix(new)
                break
        out[key] = value.to(torch.float32)
    return out


def write_model(model: Gemma3ForConditionalGeneration, vocab_size: int) -> None:
    tensors = {k: v.detach().to(STORAGE_DTYPE).contiguous().clone() for k, v in mlx_tensors(model).items()}
    tensors = dict(sorted(tensors.items()))
    save_file(tensors, str(MODEL_DIR / "model.safetensors"), metadata={"format": "mlx"})
    write_json(mlx_community_config(vocab_size), MODEL_DIR / "config.json")
    write_json(generation_config(), MODEL_DIR / "generation_config.json")


# ---------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------


def tokenize_like_ltx(hf, texts) -> tuple[torch.Tensor, torch.Tensor]:
    """ltx-core LTXVGemmaTokenizer.tokenize_with_weights (one text at a time there; same per-row result)."""
    enc = hf(
        [t.strip() for t in texts], padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt"
    )
    return enc.input_ids, enc.attention_mask


@torch.no_grad()
def encode(model, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """GemmaTextEncoder.encode: model.model(input_ids=, attention_mask=, output_hidden_states=True).hidden_states,
    plus the last decoder layer's output before the final norm (forward hook)."""
    captured = {}
    layers = model.model.language_model.layers
    handle = layers[-1].register_forward_hook(lambda _m, _a, out: captured.__setitem__("prenorm", out))
    out = model.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    handle.remove()
    hidden = torch.stack(out.hidden_states, dim=0)
    assert hidden.shape[0] == len(layers) + 1
    assert torch.equal(hidden[-1], out.last_hidden_state)
    assert torch.equal(hidden[-1], model.model.language_model.norm(captured["prenorm"])), "last is not post-norm"
    return hidden, captured["prenorm"]


def chat_prompt_ids(hf) -> torch.Tensor:
    text = hf.apply_chat_template(list(CHAT_MESSAGES), tokenize=False, add_generation_prompt=True)
    expected = (
        "<bos><start_of_turn>user\n"
        + CHAT_MESSAGES[0]["content"]
        + "\n\n"
        + CHAT_MESSAGES[1]["content"]
        + "<end_of_turn>\n<start_of_turn>model\n"
    )
    assert text == expected, repr(text)
    ids = hf.apply_chat_template(list(CHAT_MESSAGES), tokenize=True, add_generation_prompt=True, return_dict=True)
    ids = list(ids["input_ids"])
    assert ids == hf(text, add_special_tokens=False).input_ids and ids.count(BOS_ID) == 1
    return torch.tensor([ids])


@torch.no_grad()
def greedy_generate(model, prompt_ids) -> tuple[torch.Tensor, torch.Tensor]:
    out = model.generate(
        input_ids=prompt_ids,
        attention_mask=torch.ones_like(prompt_ids),
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        eos_token_id=[EOS_ID, EOT_ID],
        pad_token_id=PAD_ID,
        output_logits=True,
        return_dict_in_generate=True,
    )
    new_ids = out.sequences[0, prompt_ids.shape[1] :]
    logits = torch.cat(out.logits, dim=0)  # (steps, vocab): raw logits of each generated position
    return new_ids, logits


@torch.no_grad()
def greedy_no_cache(model, prompt_ids, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Full forward per step (no KV cache): checks the cached sliding-window generation independently."""
    ids = prompt_ids
    all_logits = []
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[:, -1]
        all_logits.append(logits)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids[0, prompt_ids.shape[1] :], torch.cat(all_logits, dim=0)


@torch.no_grad()
def make_references(model, hf) -> tuple[dict[str, torch.Tensor], dict]:
    notes: dict = {}
    input_ids, attention_mask = tokenize_like_ltx(hf, PROMPTS)
    notes["real_tokens"] = attention_mask.sum(-1).tolist()
    assert notes["real_tokens"][1] > TEXT["sliding_window"] and max(notes["real_tokens"]) < MAX_LENGTH
    assert (input_ids[attention_mask == 0] == PAD_ID).all()
    hidden, prenorm = encode(model, input_ids, attention_mask)
    pad = attention_mask == 0
    notes["sdpa_nan_at_pads"] = bool(hidden[:, pad].isnan().any())
    notes["nan_at_valid"] = bool(hidden[:, ~pad].isnan().any())
    assert not notes["nan_at_valid"]

    # sdpa at padded query positions (left padding: every key they may see is a pad): torch's SDPA returns 0 for a
    # fully masked row, so the attention branch adds post_attention_layernorm(o_proj(0)) = 0; only the MLP branch acts.
    layers = model.model.language_model.layers
    for i, layer in enumerate(layers):
        h = hidden[i][pad]
        expected = h + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))
        got = hidden[i + 1][pad] if i + 1 < len(layers) else prenorm[pad]
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), f"pad rows of layer {i} are not MLP-only"
    assert (hidden[:, pad] == hidden[:, pad][:, :1]).all(), "pad rows differ from each other"

    # Same inputs with eager attention (additive min-float mask): equal on valid positions up to float error.
    model.set_attn_implementation("eager")
    hidden_eager, _ = encode(model, input_ids, attention_mask)
    model.set_attn_implementation("sdpa")
    notes["eager_nan_at_pads"] = bool(hidden_eager[:, pad].isnan().any())
    notes["eager_vs_sdpa_valid"] = float((hidden_eager - hidden)[:, ~pad].abs().max())
    notes["eager_vs_sdpa_pads"] = float((hidden_eager - hidden)[:, pad].abs().max())
    assert notes["eager_vs_sdpa_valid"] < 1e-4

    # The sliding window matters: without it (window 64) the long prompt's valid positions >= 16 change, the short
    # prompt (9 tokens < 16) does not.
    text_config = model.config.get_text_config()
    text_config.sliding_window = MAX_LENGTH
    hidden_full, _ = encode(model, input_ids, attention_mask)
    text_config.sliding_window = TEXT["sliding_window"]
    assert torch.equal(encode(model, input_ids, attention_mask)[0], hidden)
    short, long = (attention_mask[b].bool() for b in range(2))
    assert torch.equal(hidden_full[:, 0, short], hidden[:, 0, short])
    notes["no_window_vs_window_long_prompt"] = float((hidden_full - hidden)[:, 1, long].abs().max())
    assert notes["no_window_vs_window_long_prompt"] > 0.1

    # Each prompt alone, unpadded (positions 0..n-1 instead of pads..63): RoPE is relative, the masks cut the pads, so
    # the valid positions agree up to float error.
    diffs = []
    for b in range(len(PROMPTS)):
        ids = input_ids[b : b + 1, attention_mask[b].bool()]
        alone, _ = encode(model, ids, torch.ones_like(ids))
        diffs.append(float((alone[:, 0] - hidden[:, b, attention_mask[b].bool()]).abs().max()))
    notes["unpadded_vs_padded_valid"] = max(diffs)
    assert notes["unpadded_vs_padded_valid"] < 1e-4

    prompt_ids = chat_prompt_ids(hf)
    new_ids, gen_logits = greedy_generate(model, prompt_ids)
    assert new_ids.shape == (MAX_NEW_TOKENS,), "generation stopped early (EOS)"
    nc_ids, nc_logits = greedy_no_cache(model, prompt_ids, MAX_NEW_TOKENS)
    assert torch.equal(nc_ids, new_ids), "cached generation differs from the no-cache loop"
    notes["gen_cache_vs_no_cache_logits"] = float((nc_logits - gen_logits).abs().max())
    top2 = gen_logits.topk(2, dim=-1).values
    notes["gen_min_top1_margin"] = float((top2[:, 0] - top2[:, 1]).min())
    first = model(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids)).logits[0, -1]
    assert torch.allclose(first, gen_logits[0], atol=1e-5, rtol=0)
    notes["prompt_tokens"] = prompt_ids.shape[1]
    notes["new_text"] = hf.decode(new_ids)

    refs = {
        "input_ids": input_ids.to(torch.int32),
        "attention_mask": attention_mask.to(torch.int32),
        "hidden_states": hidden,
        "hidden_last_prenorm": prenorm,
        "gen.prompt_ids": prompt_ids[0].to(torch.int32),
        "gen.new_ids": new_ids.to(torch.int32),
        "gen.first_logits": gen_logits[0],
        "gen.logits": gen_logits,
    }
    return refs, notes


# ---------------------------------------------------------------------------
# Self-checks: config.json + model.safetensors alone reproduce the references; key names follow the real manifest.
# ---------------------------------------------------------------------------


@torch.no_grad()
def verify_reload(refs: dict[str, torch.Tensor], hf) -> None:
    config = Gemma3Config.from_pretrained(str(MODEL_DIR))
    text = config.text_config
    assert text.layer_types == ["sliding_attention"] * 5 + ["full_attention", "sliding_attention"], text.layer_types
    assert text.rope_parameters["full_attention"] == {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}
    assert text.rope_parameters["sliding_attention"] == {"rope_type": "default", "rope_theta": 10000}
    assert (text.query_pre_attn_scalar, text.sliding_window, text.head_dim) == (24, 16, 32)
    model = Gemma3ForConditionalGeneration(config).float().eval()
    missing, unexpected = model.load_state_dict(hf_tensors(load_file(MODEL_DIR / "model.safetensors")), strict=False)
    assert missing == ["lm_head.weight"] and not unexpected, (missing, unexpected)
    model.tie_weights()
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    input_ids, attention_mask = tokenize_like_ltx(hf, PROMPTS)
    assert torch.equal(input_ids.to(torch.int32), refs["input_ids"])
    hidden, _ = encode(model, input_ids, attention_mask)
    valid = attention_mask.bool()
    assert torch.equal(hidden[:, valid], refs["hidden_states"][:, valid]), "reloaded model differs"
    new_ids, logits = greedy_generate(model, refs["gen.prompt_ids"][None].long())
    assert torch.equal(new_ids.to(torch.int32), refs["gen.new_ids"]) and torch.equal(logits, refs["gen.logits"])


def verify_manifest_key_names() -> None:
    if not MANIFEST.is_file():
        print(f"(manifest key check skipped: {MANIFEST} not found)")
        return
    real = json.loads(MANIFEST.read_text())["tensors"]
    ours = load_file(MODEL_DIR / "model.safetensors")
    fold = lambda keys: {re.sub(r"\.\d+\.", ".N.", k) for k in keys}  # noqa: E731
    assert fold(ours) == fold(real), (sorted(fold(ours) ^ fold(real))[:8],)
    for key, value in ours.items():  # same rank and dtype (the patch embedding: MLX (O,H,W,I), I = 3)
        shape, dtype = real[re.sub(r"\.(\d+)\.", ".0.", key)]
        assert value.dtype == torch.bfloat16 and dtype == "bfloat16" and value.ndim == len(shape), key
    assert ours[PATCH_EMBED].shape[-1] == 3 == real[PATCH_EMBED][0][-1]
    print("key names match the real manifest (mlx-community/gemma-3-12b-it-bf16)")


# ---------------------------------------------------------------------------


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    MODEL_DIR.mkdir(parents=True)
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, torch {torch.__version__}")

    tok = build_tokenizer()
    write_tokenizer(tok)
    hf = load_hf_tokenizer()
    check_tokenizer(tok, hf)
    vocab_size = tok.get_vocab_size()
    print(f"tokenizer: {vocab_size} tokens ({type(hf).__name__})")

    model = build_model(vocab_size)
    write_model(model, vocab_size)
    refs, notes = make_references(model, hf)
    arrays = {key: value.detach().numpy() for key, value in refs.items()}
    arrays = {k: v if v.dtype == np.int32 else v.astype(np.float32) for k, v in arrays.items()}
    save_npz(arrays, OUT_DIR / "refs.npz")

    verify_reload(refs, hf)
    verify_manifest_key_names()
    print("self-checks passed: tokenizer loads via AutoTokenizer; config.json + model.safetensors reproduce the refs")

    for key, value in notes.items():
        print(f"  {key}: {value}")
    print("refs.npz:")
    for key, array in arrays.items():
        finite = array[np.isfinite(array)] if array.dtype != np.int32 else array
        print(f"  {key:22s} {array.dtype!s:8s} {array.shape!s:18s} std {finite.astype(np.float64).std():.3f}")
    total = sum(p.stat().st_size for p in OUT_DIR.rglob("*") if p.is_file())
    print(f"total {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
