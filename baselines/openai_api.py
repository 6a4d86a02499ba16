"""`openai:<model>`: any OpenAI-compatible chat endpoint, e.g. `vllm serve /path/to/Q-Insight/
score_degradation` (then `--model openai:/path/to/Q-Insight/score_degradation`). Same prompts
and parser as `qinsight`; images go as base64 PNG data URLs.

Options (`--model-arg key=value`):
  base_url (default http://localhost:8000/v1)   api_key_env (the variable holding the key,
  default OPENAI_API_KEY; unset = no key)   timeout_s, retries, backoff_s, concurrency
  decoding=greedy|demo, do_sample, temperature, top_p, top_k, max_new_tokens, samples=K, image_first
  send_top_k=false for endpoints that reject top_k (it is not an OpenAI parameter)
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from qbench import Model, ModelConfig, ModelError, Prediction, Sample, register_model
from qbench.backends.answers import predictions_from_answers
from qbench.backends.http import ChatClient, EndpointSettings, openai_messages
from qbench.backends.options import parse_options
from qbench.backends.vlm import Decoding, decoding_from
from qbench.model import Timer
from qbench.protocol import build_messages


@dataclass(frozen=True)
class OpenAIOptions:
    base_url: str = "http://localhost:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    retries: int = 3
    backoff_s: float = 1.0
    concurrency: int = 4
    decoding: str = "greedy"
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    samples: int | None = None
    image_first: bool = True
    send_top_k: bool = True


def chat_payload(model: str, messages: list[dict], decoding: Decoding, seed: int,
                 send_top_k: bool) -> dict[str, Any]:
    """The request body; greedy decoding is temperature 0."""
    payload: dict[str, Any] = {"model": model, "messages": messages, "seed": seed,
                               "max_tokens": decoding.max_new_tokens, "n": decoding.samples}
    if decoding.do_sample:
        payload.update(temperature=decoding.temperature, top_p=decoding.top_p)
        if send_top_k:
            payload["top_k"] = decoding.top_k
    else:
        payload["temperature"] = 0.0
    return payload


class OpenAIChat(Model):
    kinds = frozenset({"score", "degradation", "comparison"})
    score_range = (1, 5)

    def __init__(self, served_model: str, config: ModelConfig):
        super().__init__(config)
        self.name = f"openai:{served_model}"
        self.served_model = served_model
        self.options = parse_options(OpenAIOptions, config.options, self.name)
        options = self.options
        if options.timeout_s <= 0 or options.retries < 0 or options.concurrency < 1:
            raise ModelError(f"{self.name}: need timeout_s > 0, retries >= 0, concurrency >= 1")
        if not options.base_url.startswith(("http://", "https://")):
            raise ModelError(f"{self.name}: base_url must start with http:// or https://, "
                             f"got {options.base_url!r}")
        self.decoding = decoding_from(
            options.decoding, self.name, do_sample=options.do_sample,
            temperature=options.temperature, top_p=options.top_p,
            top_k=options.top_k, max_new_tokens=options.max_new_tokens, samples=options.samples)
        self.seed = config.seed if self.decoding.seed is None else self.decoding.seed
        self.client = ChatClient(EndpointSettings(
            base_url=options.base_url, api_key=os.environ.get(options.api_key_env),
            timeout_s=options.timeout_s, retries=options.retries, backoff_s=options.backoff_s,
            concurrency=options.concurrency))

    def payload(self, sample: Sample, images: Sequence[Image.Image]) -> dict[str, Any]:
        messages = build_messages(sample.kind, image_first=self.options.image_first)
        return chat_payload(self.served_model, openai_messages(messages, images),
                            self.decoding, self.seed, self.options.send_top_k)

    def predict(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> list[Prediction]:
        with Timer() as timer:
            results = self.client.complete_many(
                [self.payload(s, imgs) for s, imgs in zip(samples, images)])
        return predictions_from_answers(samples, [texts for texts, _ in results], timer.seconds,
                                        [error for _, error in results])

    def settings(self) -> dict[str, Any]:
        # the key never enters the manifest; transport settings do not change answers
        return {"model": self.served_model, "base_url": self.options.base_url,
                "decoding": self.decoding.settings(), "seed": self.seed,
                "image_first": self.options.image_first}


@register_model("openai", family=True)
def openai_chat(served_model: str, config: ModelConfig) -> Model:
    """Any OpenAI-compatible chat endpoint (e.g. vllm serve) with the Q-Insight prompts"""
    return OpenAIChat(served_model, config)
