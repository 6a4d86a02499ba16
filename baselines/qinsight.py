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
from typing import Any, Literal

from PIL import Image

from qbench import Model, ModelConfig, Prediction, Sample, register_model
from qbench.backends.answers import predictions_from_answers
from qbench.backends.decoding import (CheckpointDefaults, Decoding, DecodingPreset,
                                      checkpoint_defaults, choose_decoding)
from qbench.backends.options import parse_options
from qbench.backends.vlm import (Generation, Generator, LoadSettings, TransformersGenerator,
                                 VLLMGenerator, VLLMSettings, chat_prompt, load_hf_vlm,
                                 load_processor, prepare_generation, require_model_dir,
                                 resolve_device, resolve_dtype)
from qbench.model import Timer
from qbench.protocol import build_messages

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

    def __init__(self, config: ModelConfig, generator: Generator | None = None):
        """`generator` replaces the backend built from the config (tests, embedding)."""
        super().__init__(config)
        self.options = parse_options(QInsightOptions, config.options, self.name)
        self.decoding, self.decoding_source = decoding_for(
            self.options, self.name, checkpoint_defaults(config.model_path))
        self.seed = config.seed if self.decoding.seed is None else self.decoding.seed
        self.dtype = backend_dtype(config, self.options)
        self.generator = generator or build_generator(config, self.options, self.name,
                                                      self.weights)
        self._prompts: dict[str, str] = {}

    def prompt(self, kind: str) -> str:
        if kind not in self._prompts:
            messages = build_messages(kind, image_first=self.options.image_first)
            self._prompts[kind] = chat_prompt(self.generator.processor, messages)
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
        # Options that change speed only (device_map, vLLM memory) stay out of the run id.
        return {"model_path": str(self.config.model_path), "backend": self.options.backend,
                "decoding": self.decoding.settings(), "decoding_source": self.decoding_source,
                "seed": self.seed, "image_first": self.options.image_first, "dtype": self.dtype}

    def close(self) -> None:
        self.generator.close()
