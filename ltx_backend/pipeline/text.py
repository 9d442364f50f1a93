"""Prompt -> Gemma 3 hidden states for the LTX-2 text path, and prompt enhancement with the same weights.

Tokenisation follows ltx-core's ``LTXVGemmaTokenizer``: the stripped prompt, BOS added, truncated and
left-padded to exactly 1024 tokens, mask 1 for real tokens. The encoder returns every hidden state stacked
as (1, tokens, hidden, layers + 1), the layout the feature extractor reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ltx_backend.models.gemma3 import Gemma3TextModel, KVCache
from ltx_backend.pipeline.tokenizer import PromptTokenizer
from ltx_backend.weights.gemma import load_gemma, tokenizer_dir

log = logging.getLogger(__name__)
PROMPT_TOKENS = 1024
ENHANCE_TEMPERATURE = 0.7
ENHANCE_MAX_TOKENS = 512

T2V_SYSTEM_PROMPT = """You rewrite short ideas into prompts for a text-to-video model that also generates the \
soundtrack. Write one paragraph of plain prose, 80 to 200 words, in the present tense. Describe, in order: the \
main subject and what it does, the setting, the light and colours, the camera (framing and any movement), and \
what is heard: dialogue in quotation marks with who speaks it, sound effects, ambience or music. Keep every \
detail the user gave and invent only what a viewer would see or hear. No lists, no headings, no preamble: answer \
with the prompt alone."""

I2V_SYSTEM_PROMPT = """You rewrite short ideas into prompts for an image-to-video model that also generates the \
soundtrack. The video starts from an image the user provides; you do not see it, so describe only what the user \
says about it and how the scene moves on from there. Write one paragraph of plain prose, 60 to 160 words, in the \
present tense: the motion of the subject, the camera movement, changes in light, and what is heard (dialogue in \
quotation marks with who speaks it, sound effects, ambience or music). No lists, no headings, no preamble: answer \
with the prompt alone."""


@dataclass
class EncodedPrompt:
    hidden_states: mx.array  # (1, tokens, hidden, layers + 1)
    attention_mask: mx.array  # (1, tokens), 1 for real tokens


class TextEncoder:
    """A Gemma 3 repo directory: tokenizer and language model, loaded once, released after encoding."""

    def __init__(self, root: str | Path, dtype: mx.Dtype | None = None) -> None:
        self.root = Path(root)
        self.tokenizer = PromptTokenizer(tokenizer_dir(self.root))
        self.model: Gemma3TextModel | None = load_gemma(self.root, dtype)
        self.config = self.model.config  # kept after release: the connectors are sized by it

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_states(self) -> int:
        """Hidden states per token the feature extractor receives: the embeddings plus one per layer."""
        return self.config.num_hidden_layers + 1

    def _loaded(self) -> Gemma3TextModel:
        if self.model is None:
            raise RuntimeError("the text encoder was released")
        return self.model

    def tokenize(self, prompt: str, max_length: int = PROMPT_TOKENS) -> tuple[mx.array, mx.array]:
        tokens = self.tokenizer.encode(prompt.strip(), max_length)
        return mx.array(tokens.input_ids), mx.array(tokens.attention_mask)

    def encode(
        self,
        prompt: str,
        max_length: int = PROMPT_TOKENS,
        check: Callable[[], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> EncodedPrompt:
        """Hidden states of the padded prompt, computed for its real tokens only.

        `check` runs after every Gemma layer (cancellation within one layer); `warn` hears of a truncated prompt.
        The prompt is left-padded and padded keys are masked, so no real token sees a padded one; the feature
        extractor zeroes padded positions and the connectors replace them with registers, so their states are never
        read. Running the real suffix alone, at its own RoPE positions (``offset``), gives the same values for a
        fraction of the work (a typical prompt is ~100 of the 1024 positions); padded positions are left zero."""
        tokens = self.tokenizer.encode(prompt.strip(), max_length)
        if warn is not None and tokens.dropped:
            count = max_length + tokens.dropped
            warn(f"The prompt has {count} tokens; only the first {max_length} are used ({tokens.dropped} dropped).")
        if check is not None:
            check()
        ids, mask = mx.array(tokens.input_ids), mx.array(tokens.attention_mask)
        start = max_length - int(mask.sum())
        states = self._loaded().hidden_states(ids[:, start:], mask[:, start:], after_layer=check, offset=start)
        hidden = mx.pad(mx.stack(states, axis=-1), [(0, 0), (start, 0), (0, 0), (0, 0)])
        mx.eval(hidden)
        return EncodedPrompt(hidden, mask)

    def enhance(
        self,
        prompt: str,
        image_to_video: bool = False,
        seed: int = 10,
        temperature: float = ENHANCE_TEMPERATURE,
        max_new_tokens: int = ENHANCE_MAX_TOKENS,
    ) -> str:
        """A richer prompt written by the same Gemma weights (sampled, seeded). Raises on failure."""
        system = I2V_SYSTEM_PROMPT if image_to_video else T2V_SYSTEM_PROMPT
        messages = [{"role": "system", "content": system}, {"role": "user", "content": f"user prompt: {prompt}"}]
        chat = self.tokenizer.chat
        text = chat.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = chat(text, add_special_tokens=False)["input_ids"]
        new = generate(self._loaded(), ids, max_new_tokens, temperature, seed, self.stop_ids)
        return chat.decode(new, skip_special_tokens=True).strip()

    @property
    def stop_ids(self) -> set[int]:
        chat = self.tokenizer.chat
        ids = {chat.eos_token_id}
        end_of_turn = chat.convert_tokens_to_ids("<end_of_turn>")
        if isinstance(end_of_turn, int) and end_of_turn != chat.unk_token_id:
            ids.add(end_of_turn)
        return {i for i in ids if i is not None}

    def release(self) -> None:
        """Free the model's memory before denoising (the transformer needs it)."""
        self.model = None
        mx.clear_cache()


def generate(
    model: Gemma3TextModel, prompt_ids: list[int], max_new_tokens: int, temperature: float, seed: int, stop: set[int]
) -> list[int]:
    """Decode up to `max_new_tokens` after the prompt: greedy at temperature 0, else seeded sampling."""
    caches = [KVCache() for _ in model.layers]
    logits = model.logits(mx.array([prompt_ids]), caches)
    key = mx.random.key(seed)
    out: list[int] = []
    for _ in range(max_new_tokens):
        if temperature <= 0:
            token = int(mx.argmax(logits, axis=-1).item())
        else:
            key, sample = mx.random.split(key)
            token = int(mx.random.categorical(logits.astype(mx.float32) / temperature, key=sample).item())
        if token in stop:
            break
        out.append(token)
        logits = model.logits(mx.array([[token]]), caches)
    return out


def enhance_or_keep(
    encoder: TextEncoder, prompt: str, warn: Callable[[str], None], image_to_video: bool = False, seed: int = 10
) -> str:
    """The enhanced prompt, or the original one with a warning when enhancement fails or returns nothing."""
    try:
        enhanced = encoder.enhance(prompt, image_to_video=image_to_video, seed=seed)
    except Exception as exc:  # enhancement is a convenience: never fail the job for it
        log.exception("prompt enhancement failed")
        warn(f"Prompt enhancement failed ({exc}); using the original prompt.")
        return prompt
    if not enhanced:
        warn("Prompt enhancement returned nothing; using the original prompt.")
        return prompt
    return enhanced
