"""The qinsight adapter: end to end on CPU with a tiny random Qwen2.5-VL, prompts through the chat
template, batched left-padded generation, Q-Insight-like scripted answers through the parser,
K sampled answers combined, decoding values resolved from presets, the checkpoint's
generation_config.json and options (and alike on transformers, vLLM and HTTP), and the vLLM
backend's requests. vLLM is not installed here: where it is importable the test reads the real
`SamplingParams` signature; otherwise a stand-in built from the fields and checks recorded from
the vLLM 0.8.0 and 0.33.0 wheels (vllm/sampling_params.py) refuses what they would refuse."""
from __future__ import annotations

import inspect
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qbench import ModelConfig, ModelError, Sample, create_model
from qbench.backends.decoding import (
    Decoding,
    checkpoint_defaults,
    openai_sampling_fields,
    vllm_sampling_kwargs,
)
from qbench.backends.vlm import (
    LoadSettings,
    TransformersGenerator,
    chat_prompt,
    load_hf_vlm,
    model_inputs,
    resolve_dtype,
    transformers_generate_kwargs,
    vllm_requests,
)
from qbench.baselines.qinsight import DECODING_PRESETS, QInsight
from qbench.core.protocol import (
    COMPARISON_LEAD,
    DEGRADATION_QUESTION,
    SCORE_QUESTION,
    SYSTEM_PROMPT,
    build_messages,
)
from qbench.run.runner import RunConfig, run
from qbench.testing.tiny import build_tiny_qwen2_5_vl

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
    settings = manifest["model_settings"]
    # the default is the released demos' sampling, the only decoding the Q-Insight sources show
    assert settings["decoding"] == {"do_sample": True, "temperature": 1.0, "top_k": 50,
                                    "top_p": 0.95, "repetition_penalty": 1.0,
                                    "max_new_tokens": 8, "samples": 1, "seed": 42}
    source = settings["decoding_source"]
    assert source["preset"] == "demo" and "src/eval/demo_" in source["source"]
    assert "do not say which decoding" in source["source"]
    assert source["changed_by_model_args"] == ["max_new_tokens"]
    assert settings["dtype"] == "float32"  # "auto" resolved, never recorded as "auto"


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
    decoding = Decoding(max_new_tokens=6, repetition_penalty=1.3)
    together = generator.generate([prompt] * 3, batch, decoding, seed=0)
    alone = [generator.generate([prompt], [imgs], decoding, seed=0)[0] for imgs in batch]
    assert together == alone
    assert all(len(answers) == 1 for answers in together)


def test_input_builder_equals_one_processor_call_and_reuses_token_ids(tiny):
    from qbench.backends.vlm import InputBuilder
    _, processor = load_hf_vlm(tiny, "t", LoadSettings(device="cpu"))
    score, comparison = (chat_prompt(processor, build_messages(k)) for k in ("score", "comparison"))
    prompts = [score, comparison, score, score]
    batch = [images([(56, 56)], 1)[0], [im[0] for im in images([(84, 84), (56, 112), (56, 56)])],
             images([(112, 140)], 2)[0], images([(56, 56)], 3)[0]]
    expected = processor(text=prompts, images=batch, padding=True, return_tensors="pt")
    calls = []

    class Counting:
        """The processor, counting the calls that tokenize text."""
        image_processor, tokenizer = processor.image_processor, processor.tokenizer

        def __call__(self, **kwargs):
            calls.append(kwargs["text"])
            return processor(**kwargs)

    builder = InputBuilder(Counting())
    for _ in range(2):
        built = builder(prompts, batch, "cpu")
        assert set(built) == set(expected)
        for key in expected:
            assert torch.equal(built[key], expected[key]), key
    # one processor call per distinct (prompt, image grids): samples 0 and 3 share one
    assert len(calls) == 3


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
    ({"decoding": "greedy", "samples": 4}, "needs sampling"),
    ({"backend": "onnx"}, "backend=onnx"),
    ({"max_new_tokens": "many"}, "expected an integer"),
    ({"decoding": "creative"}, "unknown decoding preset"),
    ({"top_k": -1}, "top_k=-1: must be >= 0"),
    ({"top_p": 0.0}, "top_p=0.0: must be in"),
    ({"temperature": 0.001}, "silently raises lower values"),
    ({"temperature": 2.5}, "refuse more than 2.0"),
    ({"repetition_penalty": 2.5}, "repetition_penalty=2.5"),
    ({"repetition_penalty": 0.0}, "repetition_penalty=0.0"),
    ({"dtype": "int8"}, "dtype 'int8'"),
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


# ------------------------------------------------------------------------------ decoding values

def write_generation_config(folder: Path, **values) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generation_config.json").write_text(json.dumps(values))
    return folder


# Qwen2.5-VL-7B-Instruct's generation_config.json sets these decoding values
INSTRUCT_LIKE = {"do_sample": True, "temperature": 0.1, "top_k": 1, "top_p": 0.001,
                 "repetition_penalty": 1.05}


@pytest.mark.parametrize("written_by, inherited", [
    # transformers 4.51.3 (the demos' pin) fills the demo's values that equal its defaults
    # (temperature 1.0, top_k 50) from a checkpoint file written by transformers >= 4.50
    ("4.51.3", {"temperature": 0.1, "top_k": 1, "repetition_penalty": 1.05}),
    ("4.49.0.dev0", None),
])
def test_demo_decoding_takes_what_the_demo_scripts_got_from_the_checkpoint(
        tmp_path, written_by, inherited):
    folder = write_generation_config(tmp_path / "ckpt", transformers_version=written_by,
                                     no_repeat_ngram_size=3, **INSTRUCT_LIKE)
    model = QInsight(ModelConfig(model_path=folder), generator=ScriptedGenerator([]))
    source = model.settings()["decoding_source"]
    assert source["from_checkpoint"] == inherited
    expected = {**vars(DECODING_PRESETS["demo"].decoding), **(inherited or {})}
    assert vars(model.decoding) == expected
    assert model.decoding.top_p == 0.95  # set by the demos, never replaced
    assert source["ignored_generation_config"] == {"no_repeat_ngram_size": 3}


def test_greedy_takes_only_the_repetition_penalty_and_explicit_options_win(tmp_path):
    folder = write_generation_config(tmp_path / "ckpt", transformers_version="4.51.3",
                                     **INSTRUCT_LIKE)
    greedy = QInsight(ModelConfig(model_path=folder, options={"decoding": "greedy"}),
                      generator=ScriptedGenerator([]))
    assert greedy.decoding == Decoding(repetition_penalty=1.05, max_new_tokens=1024)
    assert greedy.settings()["decoding"]["temperature"] is None  # unused when greedy
    explicit = QInsight(ModelConfig(model_path=folder, options={
        "repetition_penalty": 1.0, "top_k": 0, "temperature": 0.7}),
        generator=ScriptedGenerator([]))
    assert (explicit.decoding.repetition_penalty, explicit.decoding.top_k,
            explicit.decoding.temperature) == (1.0, 0, 0.7)
    assert explicit.decoding_source["from_checkpoint"] is None
    assert explicit.decoding_source["changed_by_model_args"] == [
        "repetition_penalty", "temperature", "top_k"]
    assert checkpoint_defaults(tmp_path / "no-such-folder").values == {}
    odd = write_generation_config(tmp_path / "odd", transformers_version="4.51.3",
                                  temperature=0.0)
    with pytest.raises(ModelError, match=r"temperature=0.0.*taken from .*generation_config"):
        QInsight(ModelConfig(model_path=odd), generator=ScriptedGenerator([]))
    (odd / "generation_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        QInsight(ModelConfig(model_path=odd), generator=ScriptedGenerator([]))


def test_three_backends_get_the_same_values():
    sampled = Decoding(do_sample=True, temperature=0.7, top_k=0, top_p=0.9,
                       repetition_penalty=1.05, max_new_tokens=9, samples=3)
    hf = transformers_generate_kwargs(sampled, pad_token_id=0)
    offline = vllm_sampling_kwargs(sampled, seed=4)
    http = openai_sampling_fields(sampled, seed=4, extensions=True)
    assert http == offline  # the request fields and SamplingParams share names and values
    assert (hf["temperature"], hf["top_p"], hf["repetition_penalty"], hf["max_new_tokens"],
            hf["num_return_sequences"]) == (offline["temperature"], offline["top_p"],
                                            offline["repetition_penalty"],
                                            offline["max_tokens"], offline["n"])
    assert (hf["top_k"], offline["top_k"]) == (0, -1)  # "off" in each backend's spelling
    greedy = Decoding(repetition_penalty=1.05, max_new_tokens=9)
    assert vllm_sampling_kwargs(greedy, seed=4) == {
        "n": 1, "max_tokens": 9, "seed": 4, "repetition_penalty": 1.05, "temperature": 0.0,
        "top_p": 1.0, "top_k": -1}
    assert transformers_generate_kwargs(greedy, 0)["do_sample"] is False
    plain = openai_sampling_fields(sampled, seed=4, extensions=False)
    assert "top_k" not in plain and "repetition_penalty" not in plain


def test_transformers_ignores_the_checkpoints_own_decoding_values(tiny, tmp_path):
    """A checkpoint whose generation_config asks for near-greedy sampling with a repetition
    penalty: qbench's greedy decoding with penalty 1.0 equals a plain greedy `generate`."""
    network, processor = load_hf_vlm(tiny, "t", LoadSettings(device="cpu"))
    prompt = chat_prompt(processor, build_messages("score"))
    batch = images([(56, 56), (84, 84)], seed=2)
    inputs = model_inputs(processor, [prompt] * 2, batch, "cpu")
    plain = network.generate(**inputs, max_new_tokens=6, do_sample=False)
    plain_texts = processor.batch_decode(plain[:, inputs["input_ids"].shape[1]:],
                                         skip_special_tokens=True)

    network.generation_config.update(do_sample=True, temperature=5.0, top_k=3,
                                     repetition_penalty=1.9, no_repeat_ngram_size=1)
    generator = TransformersGenerator(network, processor)
    assert network.generation_config.repetition_penalty in (None, 1.0)
    assert network.generation_config.no_repeat_ngram_size in (None, 0)
    texts = generator.generate([prompt] * 2, batch, Decoding(max_new_tokens=6), seed=0)
    assert [t[0] for t in texts] == plain_texts


def test_dtype_auto_is_resolved_before_any_backend_sees_it():
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda") in ("bfloat16", "float16")
    assert resolve_dtype("float16", "cuda") == "float16"
    with pytest.raises(ModelError, match="expected auto, bfloat16"):
        resolve_dtype("fp8", "cpu")


# ------------------------------------------------------------------------------ vLLM backend

# Fields of vllm.SamplingParams that a caller may set, read from the released wheels
# (vllm/sampling_params.py of vllm-0.8.0 and vllm-0.33.0).
VLLM_SAMPLING_FIELDS = {
    "0.8.0": frozenset("""n best_of presence_penalty frequency_penalty repetition_penalty
        temperature top_p top_k min_p seed stop stop_token_ids ignore_eos max_tokens min_tokens
        logprobs prompt_logprobs detokenize skip_special_tokens spaces_between_special_tokens
        logits_processors include_stop_str_in_output truncate_prompt_tokens output_kind
        guided_decoding logit_bias allowed_token_ids extra_args bad_words""".split()),
    "0.33.0": frozenset("""n presence_penalty frequency_penalty repetition_penalty temperature
        watermarking top_p top_k min_p seed stop stop_token_ids ignore_eos max_tokens min_tokens
        logprobs prompt_logprobs prompt_logprob_token_ids prompt_logprob_start logprob_token_ids
        flat_logprobs detokenize skip_special_tokens spaces_between_special_tokens
        include_stop_str_in_output output_kind stream_interval skip_clone structured_outputs
        logit_bias allowed_token_ids extra_args bad_words skip_reading_prefix_cache
        thinking_token_budget repetition_detection routed_experts_prompt_start
        trace_decode_token_ids""".split()),
}


def recorded_sampling_params(version: str):
    """A SamplingParams with the recorded fields of `version` and the checks its
    `_verify_args` makes on the values qbench sends."""
    fields = VLLM_SAMPLING_FIELDS[version]

    class SamplingParams:
        def __init__(self, **kwargs):
            unknown = set(kwargs) - fields
            if unknown:
                raise TypeError(f"vLLM {version} SamplingParams has no {sorted(unknown)}")
            values = {"n": 1, "temperature": 1.0, "top_p": 1.0, "repetition_penalty": 1.0,
                      "top_k": -1 if version == "0.8.0" else 0, "max_tokens": 16} | kwargs
            if version == "0.8.0":
                if values["top_k"] < -1 or values["top_k"] == 0:
                    raise ValueError("top_k must be -1 (disable), or at least 1")
                if not 0 < values["repetition_penalty"] <= 2:
                    raise ValueError("repetition_penalty must be in (0, 2]")
            else:
                if values["top_k"] < -1:
                    raise ValueError("top_k must be 0 (disable), or at least 1")
                if not 0 <= values["temperature"] <= 2:
                    raise ValueError("temperature must be in [0, 2]")
                if not (math.isfinite(values["repetition_penalty"])
                        and values["repetition_penalty"] > 0):
                    raise ValueError("repetition_penalty must be greater than zero")
            if not 0 < values["top_p"] <= 1 or values["max_tokens"] < 1 or values["n"] < 1:
                raise ValueError("top_p, max_tokens or n out of range")
            if values["temperature"] < 1e-5 and values["n"] > 1:
                raise ValueError("n must be 1 when using greedy sampling")
            self.kwargs = kwargs

    return SamplingParams


def sampling_params_classes() -> list:
    """The real SamplingParams where vLLM is importable, else the recorded versions."""
    try:
        import vllm
    except ImportError:
        return [pytest.param(recorded_sampling_params(v), id=f"recorded-{v}")
                for v in VLLM_SAMPLING_FIELDS]
    return [pytest.param(vllm.SamplingParams, id=f"vllm-{vllm.__version__}")]


@pytest.mark.parametrize("sampling_params", sampling_params_classes())
@pytest.mark.parametrize("preset", sorted(DECODING_PRESETS))
def test_vllm_sampling_kwargs_are_accepted_by_sampling_params(sampling_params, preset):
    try:  # the real class: every name qbench sends must be one of its parameters
        names = set(inspect.signature(sampling_params).parameters)
    except (TypeError, ValueError):
        names = set()
    for decoding in (DECODING_PRESETS[preset].decoding,
                     Decoding(do_sample=True, top_k=0, samples=3, repetition_penalty=2.0,
                              temperature=2.0)):
        kwargs = vllm_sampling_kwargs(decoding, seed=7)
        if "kwargs" not in names and names:
            assert set(kwargs) <= names
        sampling_params(**kwargs)  # raises on a name or value that vLLM would refuse


def test_recorded_stand_ins_refuse_what_vllm_refuses():
    old, new = recorded_sampling_params("0.8.0"), recorded_sampling_params("0.33.0")
    with pytest.raises(ValueError, match="top_k must be -1"):
        old(top_k=0)
    with pytest.raises(TypeError, match="has no"):
        new(max_new_tokens=5)
    with pytest.raises(ValueError, match="temperature"):
        new(temperature=2.5)


class _RecordingLLM:
    """Stands in for vllm.LLM: records the engine arguments and the requests."""

    instances: list["_RecordingLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs, self.requests = kwargs, []
        _RecordingLLM.instances.append(self)

    def generate(self, requests, params, use_tqdm=True):
        self.requests.append((requests, params))
        reply = types.SimpleNamespace(text='<think>ok</think><answer>{"rating": 4.1}</answer>')
        return [types.SimpleNamespace(outputs=[reply] * params.kwargs.get("n", 1))
                for _ in requests]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = _RecordingLLM
    module.SamplingParams = recorded_sampling_params("0.8.0")
    monkeypatch.setitem(sys.modules, "vllm", module)
    _RecordingLLM.instances.clear()
    return module


def test_vllm_backend_sends_the_transformers_prompts_and_images(tiny, fake_vllm):
    options = {"backend": "vllm", "tensor_parallel_size": 2, "max_new_tokens": 32,
               "decoding": "greedy"}
    vllm_model = create_model("qinsight", ModelConfig(model_path=tiny, seed=3, options=options))
    batch = [sample(0), sample(1, "degradation"), sample(2, "comparison")]
    comparison_images = [im[0] for im in images([(56, 56), (64, 64), (72, 72)], seed=1)]
    imgs = images([(56, 56), (64, 64)]) + [comparison_images]
    predictions = vllm_model.predict(batch, imgs)
    assert [p.score for p in predictions[:1]] == [4.1]

    engine = _RecordingLLM.instances[0]
    assert engine.kwargs["model"] == str(tiny) and engine.kwargs["tensor_parallel_size"] == 2
    assert engine.kwargs["limit_mm_per_prompt"] == {"image": 3} and engine.kwargs["seed"] == 3
    assert engine.kwargs["dtype"] in ("bfloat16", "float16")  # never "auto"
    assert vllm_model.settings()["dtype"] == engine.kwargs["dtype"]
    requests, params = engine.requests[0]
    assert params.kwargs == {"max_tokens": 32, "n": 1, "seed": 3, "temperature": 0.0,
                             "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0}

    recorder = ScriptedGenerator([["x"]] * 3)
    hf_model = QInsight(ModelConfig(model_path=tiny), generator=recorder)
    recorder.processor = load_hf_vlm(tiny, "t", LoadSettings(device="cpu"))[1]
    hf_model.predict(batch, imgs)
    assert [r["prompt"] for r in requests] == recorder.calls[0][0]  # same text either way
    assert requests[0]["multi_modal_data"]["image"] is imgs[0][0]
    assert requests[2]["multi_modal_data"]["image"] == imgs[2]


def test_vllm_request_construction():
    one, three = images([(56, 56)]), [im[0] for im in images([(56, 56)] * 3)]
    requests = vllm_requests(["p1", "p2"], [one[0], three])
    assert requests[0] == {"prompt": "p1", "multi_modal_data": {"image": one[0][0]}}
    assert requests[1]["multi_modal_data"]["image"] == three


def test_vllm_backend_without_vllm_says_how_to_install(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(ModelError, match="pip install vllm"):
        create_model("qinsight", ModelConfig(model_path=tiny, options={"backend": "vllm"}))
