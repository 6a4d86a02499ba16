"""A tiny random Qwen2.5-VL checkpoint built offline (REFERENCE §6), for tests and benchmarks.

It has the real architecture, a real `Qwen2VLImageProcessor`, a byte-level BPE tokenizer
trained on the spot with the Qwen-VL special tokens, and qbench's own spelling of the
Qwen2.5-VL chat format (QWEN2_5_VL_CHAT_TEMPLATE). Its weights are random, so it emits nonsense
quickly; everything around the model (prompts, image tokens, batching, saving and loading) is
exercised for real. Nothing here needs TRL: the GPU benchmark builds its 7B-sized model from
the same tokenizer, processor and template.
"""
from __future__ import annotations

from pathlib import Path

# The special tokens Qwen2.5-VL's processor and config refer to, in the released order.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
)
# Image limits: an image becomes at most 8x8 patches of 14 px, i.e. 16 tokens after the 2x2
# merge, so CPU generation stays fast. The minimum is Q-Insight's (REFERENCE §1).
MIN_PIXELS = 3136
MAX_PIXELS = 112 * 112
VOCAB_SIZE = 600
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 max_window_layers=2)
TINY_VISION = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4,
                   out_hidden_size=64, fullatt_block_indexes=[1])
ROPE_THETA = 1_000_000.0


def _tokenizer_corpus() -> list[str]:
    """Text the BPE is trained on: the protocol's prompts and answer words, so that they (and
    the five level words, with and without a leading space) are whole tokens."""
    from qbench.core.protocol import (
        CHOICES,
        COMPARISON_LEAD,
        COMPARISON_QUESTION,
        DEGRADATION_QUESTION,
        LEVELS,
        SCORE_QUESTION,
        SYSTEM_PROMPT,
    )
    level_words = "excellent good fair poor bad"
    lines = [SYSTEM_PROMPT, SCORE_QUESTION, DEGRADATION_QUESTION, COMPARISON_LEAD,
             COMPARISON_QUESTION, " ".join(LEVELS), " ".join(CHOICES),
             "<think> </think> <answer> </answer> {\"rating\": 3.25}",
             "How would you rate the quality of this image? The quality of the image is",
             "0 1 2 3 4 5 6 7 8 9 . , : ; { } \" ' system user assistant"]
    return lines + [level_words] * 50 + [w.capitalize() for w in level_words.split()] * 10


def _train_tokenizer():  # -> transformers.Qwen2TokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast  # the class Qwen2.5-VL's processor requires

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    return Qwen2TokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]), padding_side="left")


# The Qwen2.5-VL chat format for text and image parts: a default system turn when the
# conversation has none, each turn between <|im_start|>role and <|im_end|>, each image as
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands the pad to the image's
# tokens), and an opened assistant turn on request.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for turn in messages %}<|im_start|>{{ turn['role'] }}\n"
    "{% if turn['content'] is string %}{{ turn['content'] }}{% else %}"
    "{% for part in turn['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_processor(max_pixels: int = MAX_PIXELS):  # -> Qwen2_5_VLProcessor
    """The tiny model's processor: trained tokenizer, real image processor (images of at most
    `max_pixels`), qbench's chat template."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=max_pixels),
        tokenizer=_train_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=max_pixels),
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE)


def special_token_ids(tokenizer) -> dict[str, int]:
    """The Qwen2.5-VL config fields that name special tokens, for this tokenizer."""
    return {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}


def mrope_parameters(head_dim: int, theta: float) -> dict:
    """Rotary settings of the multimodal RoPE (temporal, height, width sections summing to
    head_dim / 2) under both spellings: `rope_parameters` (transformers 5) and
    `rope_scaling` + `rope_theta` (transformers 4.5x)."""
    half = head_dim // 2
    section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    return {"rope_parameters": {"rope_type": "default", "rope_theta": theta,
                                "mrope_section": section},
            "rope_scaling": {"type": "mrope", "rope_type": "default",
                             "mrope_section": section},
            "rope_theta": theta}


def qwen2_5_vl_config(tokenizer, text: dict, vision: dict, rope_theta: float):
    """A Qwen2.5-VL config with these text and vision sizes, wired to `tokenizer`'s special
    tokens; the same call on transformers 4.56 and 5."""
    from transformers import Qwen2_5_VLConfig
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    text = dict(text, bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                **mrope_parameters(head_dim, rope_theta))
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                            **special_token_ids(tokenizer))


def build_tiny_qwen2_5_vl(path: Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint (model, processor, tokenizer, chat template,
    generation config) to `path` and return it. The same seed writes the same weights."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    processor = tiny_processor()
    tokenizer = processor.tokenizer
    config = qwen2_5_vl_config(tokenizer, text=dict(TINY_TEXT, vocab_size=len(tokenizer)),
                               vision=TINY_VISION, rope_theta=ROPE_THETA)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=config.text_config.bos_token_id, do_sample=False)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
