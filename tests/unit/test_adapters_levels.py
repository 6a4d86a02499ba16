"""Level-token scoring: `qwen-vl-levels` on the tiny Qwen2.5-VL equals a softmax computed by
hand from the model's logits. (`qalign` / `deqa-score`, on mPLUG-Owl2: test_adapters_owl2.py.)
Inputs built ahead on the runner's worker thread give exactly the scores (and, for generation,
the texts) of building them in line."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qbench import ModelConfig, ModelError, Sample, create_model
from qbench.backends.vlm import expected_level, level_token_ids
from qbench.baselines.qalign import LEVEL_ANSWER_PREFIX, LEVEL_QUESTION, LEVEL_WORDS
from qbench.data.images import load_image, prefetch_batches
from qbench.testing.tiny import build_tiny_qwen2_5_vl

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


def image_files(folder: Path, sizes, seed=0) -> list[Sample]:
    folder.mkdir()
    out = []
    for i, (imgs,) in enumerate(photos(sizes, seed)):
        imgs.save(folder / f"{i}.png")
        out.append(Sample(id=f"s{i}", task="t", kind="score", images=(str(folder / f"{i}.png"),)))
    return out


def through_the_runner(model, samples_: list[Sample], batch: int) -> list:
    """Predictions as `qbench run` makes them: decoded in the prefetch pool, each batch's
    inputs built by prepare on the worker thread while the batch before it runs."""
    out = []
    for loaded in prefetch_batches(samples_, batch, workers=2, prepare=model.prepare):
        assert loaded.prepared is not None and not loaded.errors
        out += loaded.prepared.result()()
    return out


def test_scores_built_ahead_equal_todays_exactly(tiny, tmp_path):
    """The runner's path (inputs built ahead on another thread) gives bit for bit the scores of
    the forward pass on one processor call for the whole batch, which is how qbench built
    inputs before InputBuilder and prepare."""
    model = create_model("qwen-vl-levels", ModelConfig(model_path=tiny, device="cpu"))
    sizes = [(56, 56), (112, 140), (84, 84), (140, 112), (56, 84), (112, 112), (70, 98)]
    files = image_files(tmp_path / "photos", sizes, seed=7)
    ahead = through_the_runner(model, files, batch=3)
    decoded = [[load_image(s.images[0])] for s in files]
    expected = []
    for i in range(0, len(files), 3):
        inputs = model.processor(text=[model.prompt] * len(decoded[i:i + 3]),
                                 images=decoded[i:i + 3], padding=True, return_tensors="pt")
        with torch.inference_mode():
            logits = model.network(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]
        expected += expected_level(logits[:, model.token_ids], (5, 4, 3, 2, 1))[0].tolist()
        assert [p.score for p in model.predict(files[i:i + 3], decoded[i:i + 3])] == \
            expected[i:]
    assert [p.score for p in ahead] == expected
    assert all(p.ok and p.latency_s > 0 for p in ahead)


def test_generation_built_ahead_equals_predict_exactly(tiny, tmp_path):
    """Sampled generation through the runner's path: the same texts as `predict` batch by
    batch (the seed is set where generate runs, never disturbed by the preparing thread)."""
    model = create_model("qinsight", ModelConfig(model_path=tiny, device="cpu",
                                                 options={"max_new_tokens": 6}))
    assert model.decoding.do_sample
    files = image_files(tmp_path / "photos", [(56, 56), (84, 112), (112, 112), (56, 84),
                                              (98, 70)], seed=3)
    ahead = [p.text for p in through_the_runner(model, files, batch=2)]
    decoded = [[load_image(s.images[0])] for s in files]
    alone = [p.text for i in range(0, len(files), 2)
             for p in model.predict(files[i:i + 2], decoded[i:i + 2])]
    assert ahead == alone and all(isinstance(t, str) for t in ahead)


def test_owl2_pixels_shared_among_the_workers_equal_one_thread(tmp_path):
    """qalign prepares a batch's pixels on --workers threads: the same tensor, the same scores,
    as one thread."""
    from qbench.baselines import mplug_owl2
    folder = mplug_owl2.write_tiny_checkpoint(tmp_path / "owl2")
    one = create_model("qalign", ModelConfig(model_path=folder, device="cpu", workers=1))
    shared = create_model("qalign", ModelConfig(model_path=folder, device="cpu", workers=3))
    assert one.pixel_pool is None and shared.pixel_pool is not None
    batch = photos([(40, 60), (64, 64), (90, 30), (50, 50), (33, 77)], seed=5)
    assert torch.equal(shared.level_inputs(batch), one.level_inputs(batch))
    assert [p.score for p in shared.predict(samples(5), batch)] == \
        [p.score for p in one.predict(samples(5), batch)]
    shared.close()
