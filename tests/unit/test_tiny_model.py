"""The tiny random Qwen2.5-VL: it round-trips through from_pretrained, its processor is the real
one, the same seed gives the same weights, and it generates for a batch of images."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from qbench.core.protocol import build_messages
from qbench.testing.tiny import MAX_PIXELS, build_tiny_qwen2_5_vl

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny") / "model", seed=3)


def test_round_trip_gives_real_processor_and_config(tiny_path):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    processor = AutoProcessor.from_pretrained(tiny_path, local_files_only=True)
    # AutoProcessor silently falls back to a bare tokenizer when it cannot build the processor
    assert isinstance(processor, Qwen2_5_VLProcessor)
    # transformers 4.56 loads the torchvision ("Fast") variant of the same processor
    assert type(processor.image_processor).__name__.startswith("Qwen2VLImageProcessor")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_path, local_files_only=True)
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads,
            text.num_key_value_heads) == (64, 2, 4, 2)
    assert sum(text.rope_parameters["mrope_section"]) == text.hidden_size // 4 // 2
    assert (model.config.vision_config.depth, model.config.vision_config.hidden_size) == (2, 64)
    tok = processor.tokenizer
    for token in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>", "<|endoftext|>"):
        assert tok.convert_tokens_to_ids(token) != tok.unk_token_id
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny_path):
    from safetensors.torch import load_file
    again = load_file(build_tiny_qwen2_5_vl(tmp_path / "again", seed=3) / "model.safetensors")
    other = load_file(build_tiny_qwen2_5_vl(tmp_path / "other", seed=4) / "model.safetensors")
    first = load_file(tiny_path / "model.safetensors")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert (tmp_path / "again" / "tokenizer.json").read_text() == \
        (tiny_path / "tokenizer.json").read_text()


def test_chat_template_places_image_tokens_and_batch_generates(tiny_path):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    processor = AutoProcessor.from_pretrained(tiny_path, local_files_only=True)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_path, local_files_only=True)
    prompt = processor.apply_chat_template(build_messages("score"), add_generation_prompt=True,
                                           tokenize=False)
    assert prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert prompt.endswith("<|im_start|>assistant\n")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, 300, 3), dtype=np.uint8))
              for h in (60, 200, 400, 90)]
    inputs = processor(text=[prompt] * 4, images=[[im] for im in images], padding=True,
                       return_tensors="pt")
    grid = inputs["image_grid_thw"]
    assert int((grid[:, 1] * grid[:, 2]).max()) * 14 * 14 <= MAX_PIXELS  # pixel cap holds
    # unequal image sizes give unequal prompt lengths: left padding puts pads first
    assert (inputs["attention_mask"][:, -1] == 1).all()
    assert (inputs["attention_mask"][:, 0] == 0).any()
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[0] == 4 and out.shape[1] > inputs["input_ids"].shape[1]


def test_own_chat_template_writes_the_qwen2_5_vl_format(tiny_path):
    """qbench spells the chat format itself (the 7B GPU benchmark runs without TRL); where TRL
    is installed its bundled Qwen2.5-VL template must give the same text."""
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(tiny_path, local_files_only=True)
    conversations = [build_messages(kind, image_first=first)
                     for kind in ("score", "degradation", "comparison") for first in (True, False)]
    conversations.append([{"role": "user", "content": [{"type": "image"},
                                                       {"type": "text", "text": "Rate it."}]}])
    texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
             for c in conversations]
    assert texts[-1] == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                         "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Rate it."
                         "<|im_end|>\n<|im_start|>assistant\n")
    assert texts[4].count("<|image_pad|>") == 3  # comparison: reference, A, B
    try:
        from importlib import resources
        trl_template = (resources.files("trl") / "chat_templates" / "qwen2_5_vl.jinja"
                        ).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        pytest.skip("TRL is not installed: nothing to compare against")
    assert texts == [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False,
                                                   chat_template=trl_template)
                     for c in conversations]
