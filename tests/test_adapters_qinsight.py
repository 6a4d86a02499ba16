"""The qinsight adapter: end to end on CPU with a tiny random Qwen2.5-VL, prompts through the chat
template, batched left-padded generation, Q-Insight-like scripted answers through the parser,
K sampled answers combined, and the vLLM backend's requests (vLLM itself is not installed here:
a recording stand-in for its `LLM`/`SamplingParams` checks what qbench would send it)."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qbench import ModelConfig, ModelError, Sample, create_model
from qbench.backends.vlm import (Decoding, TransformersGenerator, chat_prompt, load_hf_vlm,
                                 LoadSettings, vllm_requests, vllm_sampling_kwargs)
from qbench.baselines.qinsight import QInsight
from qbench.protocol import (COMPARISON_LEAD, DEGRADATION_QUESTION, SCORE_QUESTION, SYSTEM_PROMPT,
                             build_messages)
from qbench.runner import RunConfig, run
from qbench.tiny import build_tiny_qwen2_5_vl

torch.set_num_threads(1)
VISION = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qinsight") / "tiny", seed=1)


def images(sizes: list[tuple[int, int]], seed: int = 0) -> list[list[Image.Image]]:
    rng = np.random.default_rng(seed)
    return [[Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))] for h, w in sizes]


def sample(i: int, kind: str = "score") -> Sample:
    n = 3 if kind == "comparison" else 1
    return Sample(id=f"s{i}", task="t", kind=kind, images=("x.png",) * n)


class ScriptedGenerator:
    """A backend that answers with given texts and records what it was asked."""

    def __init__(self, answers: list[list[str]], processor=None):
        self.answers, self.processor, self.calls = answers, processor, []

    def generate(self, prompts, images, decoding, seed):
        self.calls.append((list(prompts), decoding, seed))
        return self.answers[:len(prompts)]

    def close(self) -> None:
        pass


def test_run_on_demo_task_writes_parsed_predictions(tiny, tmp_path):
    config = RunConfig(model="qinsight", tasks=["demo-degradation"], model_path=tiny, limit=6,
                       batch_size=4, output_dir=tmp_path, device="cpu", progress=False,
                       model_options={"max_new_tokens": 8})
    result = run(config)
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").open()]
    assert len(rows) == 6
    # random weights emit nonsense: every sample is answered, and counted as unparsed or ok
    assert all(isinstance(r["text"], str) and r["text"] for r in rows)
    assert all(r["status"] in ("ok", "unparsed") for r in rows)
    assert all(r["status"] == "ok" or r["error"] for r in rows)
    metrics = result.outcomes[0].metrics
    assert metrics["n"] == 6
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["model_settings"]["decoding"]["do_sample"] is False
    assert manifest["model_settings"]["decoding"]["max_new_tokens"] == 8


def test_prompts_come_from_the_chat_template_with_image_placeholders(tiny):
    recorder = ScriptedGenerator([["x"]] * 2)
    model = QInsight(ModelConfig(model_path=tiny), generator=recorder)
    _, processor = load_hf_vlm(tiny, "t", LoadSettings(device="cpu"))
    recorder.processor = processor
    model.predict([sample(0, "score"), sample(1, "degradation")], images([(64, 64)] * 2))
    score_prompt, degradation_prompt = recorder.calls[0][0]
    assert score_prompt == processor.apply_chat_template(
        build_messages("score"), add_generation_prompt=True, tokenize=False)
    assert SYSTEM_PROMPT in score_prompt and DEGRADATION_QUESTION in degradation_prompt
    # training order: the image comes before the question
    assert score_prompt.count(VISION) == 1
    assert score_prompt.index(VISION) < score_prompt.index(SCORE_QUESTION)
    assert score_prompt.endswith("<|im_start|>assistant\n")

    text_first = QInsight(ModelConfig(model_path=tiny, options={"image_first": False}),
                          generator=ScriptedGenerator([["x"]], processor))
    prompt = text_first.prompt("score")
    assert prompt.index(SCORE_QUESTION) < prompt.index(VISION)

    comparison = model.prompt("comparison")
    assert comparison.count(VISION) == 3
    order = [comparison.index(COMPARISON_LEAD), comparison.index(VISION),
             comparison.index("Image A:"), comparison.index("Image B:")]
    assert order == sorted(order)


def test_batched_left_padded_generation_equals_one_at_a_time(tiny):
    network, processor = load_hf_vlm(tiny, "t", LoadSettings(device="cpu"))
    generator = TransformersGenerator(network, processor)
    prompt = chat_prompt(processor, build_messages("score"))
    # different image sizes give different numbers of image tokens, hence padding
    batch = images([(56, 56), (112, 112), (84, 168)], seed=5)
    decoding = Decoding(max_new_tokens=6)
    together = generator.generate([prompt] * 3, batch, decoding, seed=0)
    alone = [generator.generate([prompt], [imgs], decoding, seed=0)[0] for imgs in batch]
    assert together == alone
    assert all(len(answers) == 1 for answers in together)


def test_sampling_returns_k_answers_per_sample_and_is_seeded(tiny):
    network, processor = load_hf_vlm(tiny, "t", LoadSettings(device="cpu"))
    generator = TransformersGenerator(network, processor)
    prompt = chat_prompt(processor, build_messages("score"))
    decoding = Decoding(do_sample=True, samples=3, max_new_tokens=5)
    first = generator.generate([prompt] * 2, images([(56, 56)] * 2), decoding, seed=7)
    again = generator.generate([prompt] * 2, images([(56, 56)] * 2), decoding, seed=7)
    assert [len(a) for a in first] == [3, 3]
    assert first == again


SCRIPTED = [
    ("score", '<think>Sharp edges, mild noise in the sky.</think><answer>{"rating": 3.85}</answer>',
     "ok", {"score": 3.85}),
    ("score", "<think>Blurry.</think> <answer>{'rating': 2}</answer>", "ok", {"score": 2.0}),
    ("score", '<think>Heavy noise</think><answer>{"rating": "high"}</answer>', "unparsed", {}),
    ("score", '<think>Looks perfect</think><answer>{"rating": 7.5}</answer>', "unparsed", {}),
    ("score", "<think>The image is dark and the reasoning never fin", "unparsed", {}),
    ("degradation", '<think>Blocks along 8x8 edges.</think><answer>{"distortion_class": '
     '"compression", "severity": "serious"}</answer>', "ok",
     {"distortion_class": "jpeg", "severity": "serious"}),
    ("degradation", '<think>Clean.</think><answer>{"distortion_class": "null", "severity": '
     '"null"}</answer>', "ok", {"distortion_class": "null", "severity": "null"}),
    ("degradation", '<think>?</think><answer>{"distortion_class": "rain", "severity": '
     '"slight"}</answer>', "unparsed", {}),
    ("comparison", "<think>B keeps the texture.</think><answer>Image B</answer>", "ok",
     {"choice": "Image B"}),
    ("comparison", "<think>Hard to say.</think><answer>Image A or Image B</answer>", "unparsed",
     {}),
]


def test_scripted_qinsight_answers_go_through_the_parser():
    generator = ScriptedGenerator([[text] for _, text, _, _ in SCRIPTED],
                                  processor=_TemplateOnly())
    model = QInsight(ModelConfig(), generator=generator)
    samples = [sample(i, kind) for i, (kind, _, _, _) in enumerate(SCRIPTED)]
    predictions = model.predict(samples, [[]] * len(samples))
    for prediction, (_, text, status, fields) in zip(predictions, SCRIPTED):
        assert prediction.status == status, text
        assert prediction.text == text  # the reasoning is kept
        for key, value in fields.items():
            assert getattr(prediction, key) == value
        if status != "ok":
            assert prediction.error


def test_k_sampled_answers_are_averaged_and_voted():
    answers = [['<answer>{"rating": 2.0}</answer>', '<answer>{"rating": 3.0}</answer>',
                "<answer>no idea</answer>"],
               ['{"distortion_class": "blur", "severity": "slight"}',
                '{"distortion_class": "blur", "severity": "moderate"}',
                '{"distortion_class": "blur", "severity": "moderate"}'],
               ["nonsense", "more nonsense", "still none"]]
    model = QInsight(ModelConfig(options={"decoding": "demo", "samples": 3}),
                     generator=ScriptedGenerator(answers, processor=_TemplateOnly()))
    assert model.decoding.do_sample and model.seed == 42  # the released demo's settings
    score, degradation, failed = model.predict(
        [sample(0), sample(1, "degradation"), sample(2)], [[]] * 3)
    assert score.ok and score.score == pytest.approx(2.5)
    assert score.extra["samples"] == 3 and score.extra["parsed"] == 2
    assert (degradation.distortion_class, degradation.severity) == ("blur", "moderate")
    assert failed.status == "unparsed" and "none of 3 answers parsed" in failed.error


@pytest.mark.parametrize("options, message", [
    ({"colour": "red"}, "unknown --model-arg colour"),
    ({"samples": 4}, "needs sampling"),
    ({"backend": "onnx"}, "backend=onnx"),
    ({"max_new_tokens": "many"}, "expected an integer"),
    ({"decoding": "creative"}, "unknown decoding preset"),
])
def test_bad_options_are_one_line_model_errors(options, message):
    with pytest.raises(ModelError, match=message):
        QInsight(ModelConfig(options=options), generator=ScriptedGenerator([]))


def test_missing_or_wrong_model_folder_is_a_model_error(tmp_path, tiny):
    with pytest.raises(ModelError, match="pass --model-path"):
        create_model("qinsight", ModelConfig())
    with pytest.raises(ModelError, match="no config.json"):
        create_model("qinsight", ModelConfig(model_path=tmp_path / "nowhere"))
    # a text-only checkpoint: AutoProcessor quietly gives a bare tokenizer for it
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer.json").write_bytes((tiny / "tokenizer.json").read_bytes())
    (bare / "config.json").write_text(json.dumps({"model_type": "qwen2", "vocab_size": 600}))
    tokenizer_config = json.loads((tiny / "tokenizer_config.json").read_text())
    del tokenizer_config["processor_class"]
    (bare / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    with pytest.raises(ModelError, match="no image processor"):
        create_model("qinsight", ModelConfig(model_path=bare, device="cpu"))


class _TemplateOnly:
    """A processor stand-in for scripted tests: the chat template is not under test there."""

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        return json.dumps(messages)


# ------------------------------------------------------------------------------ vLLM backend

class _RecordingLLM:
    """Stands in for vllm.LLM: records the engine arguments and the requests."""

    instances: list["_RecordingLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs, self.requests = kwargs, []
        _RecordingLLM.instances.append(self)

    def generate(self, requests, params, use_tqdm=True):
        self.requests.append((requests, params))
        reply = types.SimpleNamespace(text='<think>ok</think><answer>{"rating": 4.1}</answer>')
        return [types.SimpleNamespace(outputs=[reply] * params.kwargs["n"]) for _ in requests]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = _RecordingLLM
    module.SamplingParams = lambda **kwargs: types.SimpleNamespace(kwargs=kwargs)
    monkeypatch.setitem(sys.modules, "vllm", module)
    _RecordingLLM.instances.clear()
    return module


def test_vllm_backend_sends_the_transformers_prompts_and_images(tiny, fake_vllm):
    options = {"backend": "vllm", "tensor_parallel_size": 2, "max_new_tokens": 32}
    vllm_model = create_model("qinsight", ModelConfig(model_path=tiny, seed=3, options=options))
    batch = [sample(0), sample(1, "degradation"), sample(2, "comparison")]
    comparison_images = [im[0] for im in images([(56, 56), (64, 64), (72, 72)], seed=1)]
    imgs = images([(56, 56), (64, 64)]) + [comparison_images]
    predictions = vllm_model.predict(batch, imgs)
    assert [p.score for p in predictions[:1]] == [4.1]

    engine = _RecordingLLM.instances[0]
    assert engine.kwargs["model"] == str(tiny) and engine.kwargs["tensor_parallel_size"] == 2
    assert engine.kwargs["limit_mm_per_prompt"] == {"image": 3} and engine.kwargs["seed"] == 3
    requests, params = engine.requests[0]
    assert params.kwargs == {"max_tokens": 32, "n": 1, "seed": 3, "temperature": 0.0}

    recorder = ScriptedGenerator([["x"]] * 3)
    hf_model = QInsight(ModelConfig(model_path=tiny), generator=recorder)
    recorder.processor = load_hf_vlm(tiny, "t", LoadSettings(device="cpu"))[1]
    hf_model.predict(batch, imgs)
    assert [r["prompt"] for r in requests] == recorder.calls[0][0]  # same text either way
    assert requests[0]["multi_modal_data"]["image"] is imgs[0][0]
    assert requests[2]["multi_modal_data"]["image"] == imgs[2]


def test_vllm_request_and_sampling_construction():
    one, three = images([(56, 56)]), [im[0] for im in images([(56, 56)] * 3)]
    requests = vllm_requests(["p1", "p2"], [one[0], three])
    assert requests[0] == {"prompt": "p1", "multi_modal_data": {"image": one[0][0]}}
    assert requests[1]["multi_modal_data"]["image"] == three
    sampled = vllm_sampling_kwargs(Decoding(do_sample=True, temperature=0.7, top_k=50,
                                            top_p=0.95, max_new_tokens=9, samples=4), seed=1)
    assert sampled == {"max_tokens": 9, "n": 4, "seed": 1, "temperature": 0.7, "top_k": 50,
                       "top_p": 0.95}


def test_vllm_backend_without_vllm_says_how_to_install(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(ModelError, match="pip install vllm"):
        create_model("qinsight", ModelConfig(model_path=tiny, options={"backend": "vllm"}))
