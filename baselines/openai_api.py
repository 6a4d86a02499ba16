"""`openai:<model>`: any OpenAI-compatible chat endpoint, e.g. `vllm serve /path/to/Q-Insight/
score_degradation` (then `--model openai:/path/to/Q-Insight/score_degradation`). Same prompts
and parser as `qinsight`; images go as base64 PNG data URLs.

Decoding is `qinsight`'s (same presets, default `demo`, see baselines/qinsight.py), sent
explicitly in every request so that the server's own defaults (`vllm serve` applies the
checkpoint's generation_config.json to whatever a request leaves out) never decide. Values the
checkpoint would contribute are read from --model-path, or from the served model's name when it
is a local folder; without either, none are assumed and the manifest says so.

Options (`--model-arg key=value`):
  base_url (default http://localhost:8000/v1)   api_key_env (the variable holding the key,
  default OPENAI_API_KEY; unset = no key)
  timeout_s (deadline of one attempt, connect to last byte), retries, backoff_s, max_wait_s
  (longest Retry-After honoured), concurrency, max_response_bytes
  decoding=demo|greedy, do_sample, temperature, top_p, top_k, repetition_penalty,
  max_new_tokens, samples=K, image_first
  send_extensions=false for endpoints that reject top_k and repetition_penalty (vLLM and SGLang
  accept them; the OpenAI API does not): the manifest then records them as not sent
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from qbench import Model, ModelConfig, ModelError, Prediction, Sample, register_model
from qbench.backends.answers import predictions_from_answers
from qbench.backends.decoding import Decoding, checkpoint_defaults, openai_sampling_fields
from qbench.backends.http import ChatClient, EndpointSettings, openai_messages
from qbench.baselines.qinsight import DEFAULT_DECODING, decoding_for
from qbench.core.model import Timer
from qbench.core.protocol import build_messages

EXTENSION_FIELDS = ("top_k", "repetition_penalty")


@dataclass(frozen=True)
class OpenAIOptions:
    base_url: str = "http://localhost:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    retries: int = 3
    backoff_s: float = 1.0
    max_wait_s: float = 60.0
    concurrency: int = 4
    max_response_bytes: int = 4 * 2**20
    decoding: str = DEFAULT_DECODING
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    samples: int | None = None
    image_first: bool = True
    send_extensions: bool = True


def chat_payload(model: str, messages: list[dict], decoding: Decoding, seed: int,
                 extensions: bool) -> dict[str, Any]:
    """The request body: the messages and every decoding value (greedy is temperature 0)."""
    return {"model": model, "messages": messages,
            **openai_sampling_fields(decoding, seed, extensions)}


def checkpoint_folder(config: ModelConfig, served_model: str) -> Path | None:
    """Where the served checkpoint's generation_config.json can be read, if anywhere."""
    if config.model_path is not None:
        return Path(config.model_path).expanduser()
    served = Path(served_model).expanduser()
    return served if served.is_dir() else None


@register_model("openai", family=True)
class OpenAIChat(Model):
    """Any OpenAI-compatible chat endpoint (e.g. vllm serve) with the Q-Insight prompts"""

    kinds = frozenset({"score", "degradation", "comparison"})
    score_range = (1, 5)
    Options = OpenAIOptions
    options: OpenAIOptions

    def __init__(self, served_model: str, config: ModelConfig):
        self.name = f"openai:{served_model}"
        super().__init__(config)
        self.served_model = served_model
        options = self.options
        endpoint = EndpointSettings(
            base_url=options.base_url, api_key=os.environ.get(options.api_key_env),
            timeout_s=options.timeout_s, retries=options.retries, backoff_s=options.backoff_s,
            max_wait_s=options.max_wait_s, concurrency=options.concurrency,
            max_response_bytes=options.max_response_bytes)
        if problems := endpoint.check():
            raise ModelError(f"{self.name}: {'; '.join(problems)}")
        folder = checkpoint_folder(config, served_model)
        self.decoding, self.decoding_source = decoding_for(
            options, self.name, checkpoint_defaults(folder))
        if folder is None:
            self.decoding_source["checkpoint_file"] = (
                "none read: pass --model-path to the served checkpoint so that its "
                "generation_config.json values are sent as they would apply")
        self.seed = config.seed if self.decoding.seed is None else self.decoding.seed
        self.client = ChatClient(endpoint)

    def payload(self, sample: Sample, images: Sequence[Image.Image]) -> dict[str, Any]:
        messages = build_messages(sample.kind, image_first=self.options.image_first)
        return chat_payload(self.served_model, openai_messages(messages, images),
                            self.decoding, self.seed, self.options.send_extensions)

    def predict(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> list[Prediction]:
        with Timer() as timer:
            results = self.client.complete_many(
                [self.payload(s, imgs) for s, imgs in zip(samples, images, strict=True)])
        return predictions_from_answers(samples, [texts for texts, _ in results], timer.seconds,
                                        [error for _, error in results])

    def settings(self) -> dict[str, Any]:
        # the key never enters the manifest; transport settings do not change answers
        not_sent = [] if self.options.send_extensions else list(EXTENSION_FIELDS)
        return {"model": self.served_model, "base_url": self.options.base_url,
                "decoding": self.decoding.settings(), "decoding_source": self.decoding_source,
                "not_sent": not_sent or None, "seed": self.seed,
                "image_first": self.options.image_first}

