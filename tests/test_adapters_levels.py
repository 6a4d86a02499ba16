"""Level-token scoring: `qwen-vl-levels` on the tiny Qwen2.5-VL equals a softmax computed by
hand from the model's logits. (`qalign` / `deqa-score`, on mPLUG-Owl2: test_adapters_owl2.py.)"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qbench import ModelConfig, ModelError, Sample, create_model
from qbench.backends.vlm import level_token_ids
from qbench.baselines.qalign import LEVEL_ANSWER_PREFIX, LEVEL_QUESTION, LEVEL_WORDS
from qbench.tiny import build_tiny_qwen2_5_vl

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("levels") / "tiny", seed=2)


def photos(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [[Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))] for h, w in sizes]


def samples(n):
    return [Sample(id=f"s{i}", task="t", kind="score", images=("x.png",)) for i in range(n)]


def test_qwen_vl_levels_equals_softmax_by_hand(tiny):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    model = create_model("qwen-vl-levels", ModelConfig(model_path=tiny, device="cpu"))
    batch = photos([(56, 56), (112, 140), (84, 84)], seed=4)  # unequal lengths: left padding
    predictions = model.predict(samples(3), batch)

    processor = AutoProcessor.from_pretrained(tiny)
    network = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny).eval()
    question = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": LEVEL_QUESTION}]}]
    prompt = processor.apply_chat_template(question, add_generation_prompt=True,
                                           tokenize=False) + "The quality of the image is"
    assert model.prompt == prompt
    # the byte-level vocabulary spells a word after a space with a leading "Ġ"
    word_ids = [processor.tokenizer.convert_tokens_to_ids("Ġ" + w) for w in LEVEL_WORDS]
    for prediction, imgs in zip(predictions, batch):
        inputs = processor(text=[prompt], images=[imgs], return_tensors="pt")
        with torch.no_grad():
            logits = network(**inputs).logits[0, -1].tolist()
        exps = [math.exp(logits[i]) for i in word_ids]
        expected = sum(w * e for w, e in zip((5, 4, 3, 2, 1), exps)) / sum(exps)
        assert prediction.ok and 1 <= prediction.score <= 5
        assert prediction.score == pytest.approx(expected, abs=1e-4)
        assert sum(prediction.extra["level_probs"].values()) == pytest.approx(1, abs=1e-4)


def test_level_words_must_start_with_distinct_tokens(tiny):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    ids = level_token_ids(tokenizer, LEVEL_ANSWER_PREFIX, LEVEL_WORDS)
    assert len(set(ids)) == 5
    with pytest.raises(ModelError, match="distinct tokens"):
        level_token_ids(tokenizer, LEVEL_ANSWER_PREFIX, ("good", "goodness"))
