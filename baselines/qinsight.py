"""`qinsight`: Q-Insight (Qwen2.5-VL reasoning about quality) from a local copy of the released
weights: `--model-path …/Q-Insight/score_degradation` answers score and degradation questions,
`…/comparison` answers reference-based comparisons (REFERENCE §1).

The prompt is the protocol's system prompt plus the task's question through the checkpoint's
chat template; the answer is parsed by the protocol parser; the reasoning text is kept in
predictions.jsonl. Two backends, one meaning: `backend=transformers` (default) or `backend=vllm`.

Decoding. The release (bytedance/Q-Insight) ships no benchmark evaluation script, only three
demo scripts (src/eval/demo_score.py, demo_dist.py, demo_comparison.py), which sample with
temperature 1.0, top_k 50, top_p 0.95, 1024 new tokens, seed 42. Neither the paper nor the
release says which decoding produced the published tables. The default is therefore the demos'
sampling (`decoding=demo`), the only decoding the sources show; `decoding=greedy` is qbench's
reproducible alternative, which no source uses. The demos pass their values as a
GenerationConfig under transformers 4.51.3 (their pin), which replaces those left at
transformers' defaults (temperature 1.0, top_k 50) with the checkpoint's generation_config.json
values when that file was written by transformers >= 4.50: `decoding=demo` does the same on the
checkpoint at --model-path. The manifest records the values, the preset and its source, and
which values came from the checkpoint.

Options (`--model-arg key=value`):
  backend=transformers|vllm   decoding=demo|greedy
  do_sample, temperature, top_k (0 = off), top_p, repetition_penalty, max_new_tokens,
  samples=K (K sampled answers averaged)
  image_first=true|false (training order is image first; the released demos put text first)
  dtype=auto|bfloat16|float16|float32   device_map=auto (several GPUs)   attn_implementation
  tensor_parallel_size, gpu_memory_utilization, max_model_len (vLLM)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal

from PIL import Image

from qbench import Model, ModelConfig, Prediction, Sample, register_model
from qbench.backends.answers import predictions_from_answers
from qbench.backends.decoding import (
    CheckpointDefaults,
    Decoding,
    DecodingPreset,
    checkpoint_defaults,
    choose_decoding,
)
from qbench.backends.vlm import (
    Generation,
    Generator,
    LoadSettings,
    TransformersGenerator,
    VLLMGenerator,
    VLLMSettings,
    chat_prompt,
    load_hf_vlm,
    load_processor,
    prepare_generation,
    require_model_dir,
    resolve_device,
    resolve_dtype,
)
from qbench.core.model import Timer
from qbench.core.protocol import build_messages
from qbench.data.fetch import weights_source

DEMO_SCRIPTS = "bytedance/Q-Insight src/eval/demo_{score,dist,comparison}.py"
DECODING_PRESETS: dict[str, DecodingPreset] = {
    "demo": DecodingPreset(
        Decoding(do_sample=True, temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=1024,
                 seed=42),
        f"{DEMO_SCRIPTS}: the only decoding in the release; the paper and the release do not "
        "say which decoding produced Tables 1, 2 and 6",
        like_passed_generation_config=True),
    "greedy": DecodingPreset(
        Decoding(max_new_tokens=1024),
        "qbench's reproducible choice; no Q-Insight source decodes greedily"),
}
DEFAULT_DECODING = "demo"


@dataclass(frozen=True)
class QInsightOptions:
    backend: Literal["transformers", "vllm"] = "transformers"
    decoding: str = DEFAULT_DECODING
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    samples: int | None = None
    image_first: bool = True
    dtype: str = "auto"
    device_map: str | None = None
    attn_implementation: str | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None


def backend_dtype(config: ModelConfig, options: QInsightOptions) -> str:
    """The concrete dtype the backend loads the weights in (vLLM runs on CUDA only)."""
    device = "cuda" if options.backend == "vllm" else resolve_device(config.device)
    return resolve_dtype(options.dtype, device)


def build_generator(config: ModelConfig, options: QInsightOptions, name: str,
                    what: str) -> Generator:
    """The chosen backend on the checkpoint at --model-path."""
    path = require_model_dir(config.model_path, name, what)
    dtype = backend_dtype(config, options)
    if options.backend == "vllm":
        return VLLMGenerator(path, load_processor(path, name), VLLMSettings(
            dtype=dtype, tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len), config.seed, name)
    network, processor = load_hf_vlm(path, name, LoadSettings(
        device=config.device, dtype=dtype, device_map=options.device_map,
        attn_implementation=options.attn_implementation))
    return TransformersGenerator(network, processor)


def decoding_for(options: Any, name: str,
                 checkpoint: CheckpointDefaults) -> tuple[Decoding, dict[str, Any]]:
    """The decoding a Q-Insight-protocol adapter runs with (options: any dataclass with the
    decoding fields of QInsightOptions) and its provenance."""
    return choose_decoding(
        DECODING_PRESETS, options.decoding, name, checkpoint, do_sample=options.do_sample,
        temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
        repetition_penalty=options.repetition_penalty, max_new_tokens=options.max_new_tokens,
        samples=options.samples)


@register_model("qinsight")
class QInsight(Model):
    """Q-Insight: Qwen2.5-VL reasoning, then a rating, a distortion or a choice (local weights)"""

    name = "qinsight"
    kinds = frozenset({"score", "degradation", "comparison"})
    score_range = (1, 5)
    weights = "Q-Insight weights (ByteDance/Q-Insight: score_degradation or comparison)"
    weights_folder = "Q-Insight/score_degradation"
    Options: ClassVar[type] = QInsightOptions
    options: Any

    def __init__(self, config: ModelConfig, generator: Generator | None = None):
        """`generator` replaces the backend built from the config (tests, embedding)."""
        super().__init__(config)
        self.decoding, self.decoding_source = self.decoding_of(
            checkpoint_defaults(config.model_path))
        self.seed = config.seed if self.decoding.seed is None else self.decoding.seed
        self.dtype = backend_dtype(config, self.options)
        self.generator = generator or build_generator(config, self.options, self.name,
                                                      self.weights)
        self._prompts: dict[str, str] = {}

    def decoding_of(self, checkpoint: CheckpointDefaults) -> tuple[Decoding, dict[str, Any]]:
        return decoding_for(self.options, self.name, checkpoint)

    def messages(self, kind: str) -> list[dict]:
        return build_messages(kind, image_first=self.options.image_first)

    def prompt_settings(self) -> dict[str, Any]:
        """The prompt options that change the answers (part of the run id)."""
        return {"image_first": self.options.image_first}

    def prompt(self, kind: str) -> str:
        if kind not in self._prompts:
            self._prompts[kind] = chat_prompt(self.generator.processor, self.messages(kind))
        return self._prompts[kind]

    def prepare(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> Callable[[], list[Prediction]]:
        with Timer() as timer:
            generation = prepare_generation(self.generator, [self.prompt(s.kind) for s in samples],
                                            images)
        return partial(self._predictions, samples, generation, timer.seconds)

    def predict(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> list[Prediction]:
        return self.prepare(samples, images)()

    def _predictions(self, samples: Sequence[Sample], generation: Generation,
                     prepared_s: float) -> list[Prediction]:
        with Timer() as timer:
            answers = generation(self.decoding, self.seed)
        return predictions_from_answers(samples, answers, prepared_s + timer.seconds)

    def settings(self) -> dict[str, Any]:
        # Options that change speed only (device_map, vLLM memory) stay out of the run id. The
        # source of weights fetched into the Hugging Face cache only where there is one, so
        # that the run ids of other weights stay as they were.
        source = weights_source(self.config.model_path)
        return {"model_path": str(self.config.model_path), "backend": self.options.backend,
                "decoding": self.decoding.settings(), "decoding_source": self.decoding_source,
                "seed": self.seed, "dtype": self.dtype, **self.prompt_settings(),
                **({"weights_source": source} if source else {})}

    def close(self) -> None:
        self.generator.close()


# ------------------------------------------------------------------------------ VisualQuality-R1

# TianheWu/VisualQuality-R1 at commit a16dcdb, README.md `score_image` (the released inference
# code): no system turn; the user turn is the image, then this question in one of two
# templates; the answer is the last <answer>…</answer> block, read for its number.
VQ_SOURCE = "TianheWu/VisualQuality-R1 README.md, score_image (commit a16dcdb)"
VQ_QUESTION = (
    "You are doing the image quality assessment task. Here is the question: What is your "
    "overall rating on the quality of this picture? The rating should be a float between 1 and "
    "5, rounded to two decimal places, with 1 representing very poor quality and 5 representing "
    "excellent quality."
)
# "thinking": the template its trainer used (src/open-r1-multimodal/src/open_r1/vlm_modules/
# qwen_module.py, question_template "scoring"); "non-thinking": the README's faster one.
VQ_THINKING = ("{Question} First output the thinking process in <think> </think> tags and then "
               "output the final answer with only one score in <answer> </answer> tags.")
VQ_NON_THINKING = ("{Question} Please only output the final answer with only one score in "
                   "<answer> </answer> tags.")


@dataclass(frozen=True)
class VisualQualityOptions:
    backend: Literal["transformers", "vllm"] = "transformers"
    decoding: str = "release"
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    samples: int | None = None
    thinking: bool = True
    vision_id: bool = True
    dtype: str = "auto"
    device_map: str | None = None
    attn_implementation: str | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None


def visualquality_presets(checkpoint: CheckpointDefaults) -> dict[str, DecodingPreset]:
    """The release calls generate(do_sample=True, top_k=50, top_p=1, max_new_tokens=2048) with
    keyword arguments: the temperature (and repetition penalty) it samples with are the
    checkpoint's generation_config.json values, transformers' 1.0 where the file has none."""
    temperature = checkpoint.values.get("temperature", 1.0)
    return {
        "release": DecodingPreset(
            Decoding(do_sample=True, temperature=temperature, top_k=50, top_p=1.0,
                     max_new_tokens=2048),
            f"{VQ_SOURCE}: do_sample, top_k 50, top_p 1, 2048 new tokens; temperature "
            f"{temperature:g} from {checkpoint.file or 'transformers default (no file)'}"),
        "greedy": DecodingPreset(Decoding(max_new_tokens=2048),
                                 "qbench's reproducible choice; the release samples"),
    }


@register_model("visualquality-r1")
class VisualQualityR1(QInsight):
    """VisualQuality-R1: Qwen2.5-VL reasoning, then a 1-5 rating (its release's prompt)"""

    name = "visualquality-r1"
    kinds = frozenset({"score"})
    weights = "VisualQuality-R1 weights (TianheWu/VisualQuality-R1-7B)"
    weights_folder = "VisualQuality-R1-7B"
    Options = VisualQualityOptions

    def decoding_of(self, checkpoint: CheckpointDefaults) -> tuple[Decoding, dict[str, Any]]:
        options = self.options
        return choose_decoding(
            visualquality_presets(checkpoint), options.decoding, self.name, checkpoint,
            do_sample=options.do_sample, temperature=options.temperature, top_k=options.top_k,
            top_p=options.top_p, repetition_penalty=options.repetition_penalty,
            max_new_tokens=options.max_new_tokens, samples=options.samples)

    def messages(self, kind: str) -> list[dict]:
        template = VQ_THINKING if self.options.thinking else VQ_NON_THINKING
        # The release renders its chat template with add_vision_id=True, which writes
        # "Picture 1: " before the image; a text part does the same on any template.
        lead = [{"type": "text", "text": "Picture 1: "}] if self.options.vision_id else []
        return [{"role": "user", "content": [*lead, {"type": "image"}, {
            "type": "text", "text": template.format(Question=VQ_QUESTION)}]}]

    def prompt_settings(self) -> dict[str, Any]:
        return {"thinking": self.options.thinking, "vision_id": self.options.vision_id}
