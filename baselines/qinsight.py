"""`qinsight`: Q-Insight (Qwen2.5-VL reasoning about quality) from a local copy of the released
weights: `--model-path …/Q-Insight/score_degradation` answers score and degradation questions,
`…/comparison` answers reference-based comparisons (REFERENCE §1).

The prompt is the protocol's system prompt plus the task's question through the checkpoint's
chat template; the answer is parsed by the protocol parser; the reasoning text is kept in
predictions.jsonl. Two backends, one meaning: `backend=transformers` (default) or `backend=vllm`.

Options (`--model-arg key=value`):
  backend=transformers|vllm   decoding=greedy|demo   (demo: the released demo's sampling, seed 42)
  do_sample, temperature, top_k, top_p, max_new_tokens, samples=K (K sampled answers averaged)
  image_first=true|false (training order is image first; the released demos put text first)
  dtype=auto|bfloat16|float16|float32   device_map=auto (several GPUs)   attn_implementation
  tensor_parallel_size, gpu_memory_utilization, max_model_len (vLLM)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from qbench import Model, ModelConfig, Prediction, Sample, register_model
from qbench.backends.answers import predictions_from_answers
from qbench.backends.options import parse_options
from qbench.backends.vlm import (Generator, LoadSettings, TransformersGenerator, VLLMGenerator,
                                 VLLMSettings, chat_prompt, decoding_from, load_hf_vlm,
                                 load_processor, require_model_dir)
from qbench.model import Timer
from qbench.protocol import build_messages


@dataclass(frozen=True)
class QInsightOptions:
    backend: Literal["transformers", "vllm"] = "transformers"
    decoding: str = "greedy"
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    samples: int | None = None
    image_first: bool = True
    dtype: str = "auto"
    device_map: str | None = None
    attn_implementation: str | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None


def build_generator(config: ModelConfig, options: QInsightOptions, name: str,
                    what: str) -> Generator:
    """The chosen backend on the checkpoint at --model-path."""
    path = require_model_dir(config.model_path, name, what)
    if options.backend == "vllm":
        return VLLMGenerator(path, load_processor(path, name), VLLMSettings(
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len, dtype=options.dtype), config.seed, name)
    network, processor = load_hf_vlm(path, name, LoadSettings(
        device=config.device, dtype=options.dtype, device_map=options.device_map,
        attn_implementation=options.attn_implementation))
    return TransformersGenerator(network, processor)


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
        self.decoding = decoding_from(
            self.options.decoding, self.name, do_sample=self.options.do_sample,
            temperature=self.options.temperature, top_k=self.options.top_k,
            top_p=self.options.top_p, max_new_tokens=self.options.max_new_tokens,
            samples=self.options.samples)
        self.seed = config.seed if self.decoding.seed is None else self.decoding.seed
        self.generator = generator or build_generator(config, self.options, self.name,
                                                      self.weights)
        self._prompts: dict[str, str] = {}

    def prompt(self, kind: str) -> str:
        if kind not in self._prompts:
            messages = build_messages(kind, image_first=self.options.image_first)
            self._prompts[kind] = chat_prompt(self.generator.processor, messages)
        return self._prompts[kind]

    def predict(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> list[Prediction]:
        with Timer() as timer:
            answers = self.generator.generate([self.prompt(s.kind) for s in samples], images,
                                              self.decoding, self.seed)
        return predictions_from_answers(samples, answers, timer.seconds)

    def settings(self) -> dict[str, Any]:
        # Options that change speed only (device_map, vLLM memory) stay out of the run id.
        return {"model_path": str(self.config.model_path), "backend": self.options.backend,
                "decoding": self.decoding.settings(), "seed": self.seed,
                "image_first": self.options.image_first, "dtype": self.options.dtype}

    def close(self) -> None:
        self.generator.close()
