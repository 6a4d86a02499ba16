"""A tiny random Qwen2.5-VL checkpoint built offline (REFERENCE §6), for tests and benchmarks.

It has the real architecture, a real `Qwen2VLImageProcessor`, a byte-level BPE tokenizer
trained on the spot with the Qwen-VL special tokens, and the Qwen2.5-VL chat template that TRL
ships. Its weights are random, so it emits nonsense quickly; everything around the model
(prompts, image tokens, batching, saving and loading) is exercised for real.
"""
from __future__ import annotations

from importlib import resources
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


def _tokenizer_corpus() -> list[str]:
    """Text the BPE is trained on: the protocol's prompts and answer words, so that they (and
    the five level words, with and without a leading space) are whole tokens."""
    from .protocol import (CHOICES, COMPARISON_LEAD, COMPARISON_QUESTION, DEGRADATION_QUESTION,
                           LEVELS, SCORE_QUESTION, SYSTEM_PROMPT)
    level_words = "excellent good fair poor bad"
    lines = [SYSTEM_PROMPT, SCORE_QUESTION, DEGRADATION_QUESTION, COMPARISON_LEAD,
             COMPARISON_QUESTION, " ".join(LEVELS), " ".join(CHOICES),
             "<think> </think> <answer> </answer> {\"rating\": 3.25}",
             "How would you rate the quality of this image? The quality of the image is",
             "0 1 2 3 4 5 6 7 8 9 . , : ; { } \" ' system user assistant"]
    return lines + [level_words] * 50 + [w.capitalize() for w in level_words.split()] * 10


def _train_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]), padding_side="left")


def qwen2_5_vl_chat_template() -> str:
    """The Qwen2.5-VL chat template as shipped inside the installed TRL package."""
    try:
        return (resources.files("trl") / "chat_templates" / "qwen2_5_vl.jinja").read_text(
            encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(f"the Qwen2.5-VL chat template comes from the installed trl package "
                           f"(chat_templates/qwen2_5_vl.jinja): {exc}; pip install trl") from exc


def _config(tokenizer):  # -> Qwen2_5_VLConfig
    from transformers import Qwen2_5_VLConfig

    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text_heads, text_hidden = 4, 64
    half_head_dim = text_hidden // text_heads // 2
    text = dict(vocab_size=len(tokenizer), hidden_size=text_hidden, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=text_heads, num_key_value_heads=2,
                max_position_embeddings=4096, max_window_layers=2,
                bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                # temporal, height, width sections of the multimodal rotary embedding
                rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0,
                                 "mrope_section": [2, 3, half_head_dim - 5]})
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4,
                  out_hidden_size=text_hidden, fullatt_block_indexes=[1])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                            **ids)


def build_tiny_qwen2_5_vl(path: Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint (model, processor, tokenizer, chat template,
    generation config) to `path` and return it. The same seed writes the same weights."""
    import torch
    from transformers import (GenerationConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2_5_VLProcessor, Qwen2VLImageProcessor)
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    video_processor = Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=video_processor,
                                    chat_template=qwen2_5_vl_chat_template())
    config = _config(tokenizer)
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
