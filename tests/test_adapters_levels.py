"""Level-token scoring: `qwen-vl-levels` on the tiny Qwen2.5-VL equals a softmax computed by
hand from the model's logits; `qalign`/`deqa-score` refuse to run remote code unless asked, refuse
the swapped-prompt bug and a changed pin, explain a transformers mismatch, and score through a
small stand-in for mPLUG-Owl2's remote code (the real weights are not on this machine)."""
from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qbench import ModelConfig, ModelError, Sample, create_model
from qbench.backends.vlm import level_token_ids
from qbench.baselines.qalign import (LEVEL_ANSWER_PREFIX, LEVEL_QUESTION, LEVEL_WORDS,
                                     OWL2_IMAGE_INDEX, SWAPPED_PROMPT, owl2_input_ids,
                                     pad_to_square)
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


def test_owl2_prompt_ids_put_the_image_marker_between_question_and_answer(tiny):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    ids = owl2_input_ids(tokenizer, "USER: a\n<|image|>\nASSISTANT: b")
    assert ids.count(OWL2_IMAGE_INDEX) == 1
    cut = ids.index(OWL2_IMAGE_INDEX)
    assert tokenizer.decode(ids[:cut]) == "USER: a\n"
    assert tokenizer.decode(ids[cut + 1:]) == "\nASSISTANT: b"


def test_pad_to_square_centres_on_the_fill_colour():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    square = pad_to_square(image, (1, 2, 3))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (1, 2, 3) and square.getpixel((20, 20)) == (255, 0, 0)
    assert pad_to_square(image.resize((20, 20)), (0, 0, 0)).size == (20, 20)


# ------------------------------------------------------------------------ mPLUG-Owl2 stand-in

STAND_IN_CODE = textwrap.dedent('''
    """A stand-in with mPLUG-Owl2's calling convention: input_ids carry -200 where the image
    goes, pixel values come as `images`."""
    import torch
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.modeling_outputs import CausalLMOutput

    class StandInConfig(PretrainedConfig):
        model_type = "owl2_stand_in"

        def __init__(self, vocab_size=600, **kwargs):
            self.vocab_size = vocab_size
            super().__init__(**kwargs)

    class StandInOwl2(PreTrainedModel):
        config_class = StandInConfig
        seen = []

        def __init__(self, config):
            super().__init__(config)
            self.embed = torch.nn.Embedding(config.vocab_size, 8)
            self.image = torch.nn.Linear(3, 8)
            self.head = torch.nn.Linear(8, config.vocab_size)
            self.post_init()

        def _init_weights(self, module):
            pass

        def forward(self, input_ids, images):
            StandInOwl2.seen.append((input_ids.clone(), images.shape))
            text = self.embed(input_ids.clamp(min=0))
            image = self.image(images.mean(dim=(2, 3)))[:, None, :]
            hidden = torch.where((input_ids == -200)[..., None], image, text).cumsum(dim=1)
            return CausalLMOutput(logits=self.head(hidden))
''')


def write_stand_in(folder: Path, tiny: Path, code: str = STAND_IN_CODE) -> Path:
    """A folder shaped like the released weights: config with auto_map, code, tokenizer,
    CLIP image processor, weights."""
    import importlib.util
    from transformers import CLIPImageProcessor
    folder.mkdir()
    (folder / "owl2_stand_in.py").write_text(code)
    spec = importlib.util.spec_from_file_location("owl2_stand_in_local",
                                                  folder / "owl2_stand_in.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    network = module.StandInOwl2(module.StandInConfig())
    network.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "owl2_stand_in.StandInConfig",
                          "AutoModelForCausalLM": "owl2_stand_in.StandInOwl2"}
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny / name).read_bytes())
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
                       ).save_pretrained(folder)
    return folder


def test_owl2_scorers_need_explicit_trust(tmp_path, tiny):
    folder = write_stand_in(tmp_path / "owl2", tiny)
    for name in ("qalign", "deqa-score"):
        with pytest.raises(ModelError, match="trust_remote_code=true"):
            create_model(name, ModelConfig(model_path=folder))


def test_owl2_code_with_swapped_prompt_or_other_pin_is_refused(tmp_path, tiny):
    buggy = write_stand_in(tmp_path / "buggy", tiny,
                           STAND_IN_CODE + f'\nPROMPT = "{SWAPPED_PROMPT} is"\n')
    with pytest.raises(ModelError, match="prompt-order bug"):
        create_model("qalign", ModelConfig(model_path=buggy,
                                           options={"trust_remote_code": True}))
    good = write_stand_in(tmp_path / "good", tiny)
    with pytest.raises(ModelError, match="not the pinned"):
        create_model("qalign", ModelConfig(model_path=good, options={
            "trust_remote_code": True, "code_sha256": "0" * 64}))


def test_owl2_code_that_breaks_on_this_transformers_says_what_to_do(tmp_path, tiny):
    broken = write_stand_in(tmp_path / "broken", tiny)
    (broken / "owl2_stand_in.py").write_text(
        "from transformers.models.llama.modeling_llama import NoSuchAttention\n" + STAND_IN_CODE)
    with pytest.raises(ModelError, match=r"transformers 4\.36") as info:
        create_model("deqa-score", ModelConfig(model_path=broken, device="cpu",
                                               options={"trust_remote_code": True}))
    assert "\n" not in str(info.value)


def test_owl2_scorer_scores_through_the_remote_code(tmp_path, tiny):
    folder = write_stand_in(tmp_path / "owl2", tiny)
    model = create_model("qalign", ModelConfig(model_path=folder, device="cpu",
                                               options={"trust_remote_code": True}))
    predictions = model.predict(samples(2), photos([(30, 60), (50, 50)]))
    assert all(p.ok and 1 <= p.score <= 5 for p in predictions)
    assert len(model.settings()["code_sha256"]) == 64

    stand_in = type(model.network)
    input_ids, image_shape = stand_in.seen[-1]
    assert image_shape == (2, 3, 28, 28)
    assert (input_ids == OWL2_IMAGE_INDEX).sum(dim=1).tolist() == [1, 1]
    # by hand: the stand-in's logits at the level words, softmax, weights 5..1
    with torch.no_grad():
        pixels = model.image_processor(
            [pad_to_square(im[0], tuple(int(255 * m) for m in model.image_processor.image_mean))
             for im in photos([(30, 60), (50, 50)])], return_tensors="pt")["pixel_values"]
        logits = model.network(input_ids=input_ids, images=pixels).logits[:, -1]
    probs = torch.softmax(logits[:, model.token_ids], dim=-1)
    expected = probs @ torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    assert [p.score for p in predictions] == pytest.approx(expected.tolist(), abs=1e-5)
