"""Level-token scorers (the Q-Align / DeQA-Score mechanism, REFERENCE §3): one forward pass, the
next-token logits of the five level words after "The quality of the image is", softmax over
those five, dotted with [5, 4, 3, 2, 1] -> a score in [1, 5].

`qwen-vl-levels`  any local Hugging Face vision-language model with a chat template.
`qalign`          the released Q-Align weights (q-future/one-align, mPLUG-Owl2).
`deqa-score`      the released DeQA-Score weights (zhiyuanyou/DeQA-Score-Mix3, mPLUG-Owl2).

Q-Align and DeQA-Score run through the model code shipped with their weights. qbench runs that
code only when the user says so (`--model-arg trust_remote_code=true`, after reading the *.py
files in the folder), only from the local folder, and refuses a copy whose code carries the
swapped-words prompt bug. `code_sha256=<hex>` pins the exact code (the digest is recorded in the
run manifest). qbench builds the prompt itself, so scores do not depend on the code's prompt.
The code was written for transformers 4.36; see `TRANSFORMERS_ADVICE`.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from qbench import Model, ModelConfig, ModelError, Prediction, Sample, register_model
from qbench.backends.options import parse_options
from qbench.backends.vlm import (LoadSettings, chat_prompt, expected_level, free_gpu_cache,
                                 level_token_ids, load_hf_vlm, next_token_logits,
                                 require_model_dir, resolve_device, torch_dtype)
from qbench.model import Timer

LEVEL_QUESTION = "How would you rate the quality of this image?"
LEVEL_ANSWER_PREFIX = "The quality of the image is"
LEVEL_WORDS: tuple[str, ...] = ("excellent", "good", "fair", "poor", "bad")
LEVEL_WEIGHTS: tuple[float, ...] = (5.0, 4.0, 3.0, 2.0, 1.0)

OWL2_IMAGE_TAG = "<|image|>"
OWL2_PROMPT = f"USER: {LEVEL_QUESTION}\n{OWL2_IMAGE_TAG}\nASSISTANT: {LEVEL_ANSWER_PREFIX}"
OWL2_IMAGE_INDEX = -200  # mPLUG-Owl2 marks the image's place in input_ids with this id
SWAPPED_PROMPT = "The image of the quality"  # the prompt-order bug of some remote-code revisions
TRANSFORMERS_ADVICE = (
    "the mPLUG-Owl2 code needs transformers 4.36: run this model from a separate environment "
    "with transformers==4.36.2 (README, section 'Q-Align and DeQA-Score')")


class LevelScorer(Model):
    """Shared by the level-token adapters: subclasses provide `level_logits` (rows: samples,
    columns: the five level words in LEVEL_WORDS order)."""

    kinds = frozenset({"score"})
    score_range = (1, 5)

    @abstractmethod
    def level_logits(self, images: Sequence[Sequence[Image.Image]]):
        """Next-token logits of the five level words, one row per sample."""

    def predict(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> list[Prediction]:
        with Timer() as timer:
            scores, probs = expected_level(self.level_logits(images), LEVEL_WEIGHTS)
        each = timer.seconds / max(len(samples), 1)
        out = []
        for sample, score, p in zip(samples, scores.tolist(), probs.tolist()):
            level_probs = dict(zip(LEVEL_WORDS, (round(x, 6) for x in p)))
            if not math.isfinite(score):
                out.append(Prediction(task=sample.task, sample_id=sample.id,
                                      status="model_error", error="non-finite level logits",
                                      latency_s=each))
                continue
            out.append(Prediction(task=sample.task, sample_id=sample.id, score=score,
                                  latency_s=each, extra={"level_probs": level_probs}))
        return out


# ------------------------------------------------------------------------ any HF VLM

@dataclass(frozen=True)
class HFLevelOptions:
    dtype: str = "auto"
    device_map: str | None = None
    attn_implementation: str | None = None
    trust_remote_code: bool = False


def level_messages() -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": LEVEL_QUESTION}]}]


@register_model("qwen-vl-levels")
class HFVisionLevels(LevelScorer):
    """Level-token score (Q-Align mechanism) from any local Hugging Face vision-language model"""

    name = "qwen-vl-levels"
    weights = "a Hugging Face vision-language checkpoint, e.g. Qwen2.5-VL"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.options = parse_options(HFLevelOptions, config.options, self.name)
        path = require_model_dir(config.model_path, self.name, self.weights)
        self.network, self.processor = load_hf_vlm(path, self.name, LoadSettings(
            device=config.device, dtype=self.options.dtype, device_map=self.options.device_map,
            attn_implementation=self.options.attn_implementation,
            trust_remote_code=self.options.trust_remote_code))
        self.prompt = chat_prompt(self.processor, level_messages(), LEVEL_ANSWER_PREFIX)
        self.token_ids = level_token_ids(self.processor.tokenizer, LEVEL_ANSWER_PREFIX,
                                         LEVEL_WORDS)

    def level_logits(self, images: Sequence[Sequence[Image.Image]]):
        logits = next_token_logits(self.network, self.processor, [self.prompt] * len(images),
                                   images)
        return logits[:, self.token_ids]

    def settings(self) -> dict[str, Any]:
        return super().settings() | {"prompt": self.prompt, "level_token_ids": self.token_ids}

    def close(self) -> None:
        self.network = None
        free_gpu_cache()


# ------------------------------------------------------------------------ mPLUG-Owl2 weights

@dataclass(frozen=True)
class Owl2Options:
    trust_remote_code: bool = False
    code_sha256: str | None = None
    dtype: str = "auto"


def remote_code_digest(folder: Path, model: str) -> str:
    """sha256 over the folder's *.py files (names and contents), after refusing code with the
    swapped-words prompt."""
    files = sorted(folder.glob("*.py"))
    if not files:
        raise ModelError(f"{model}: no model code (*.py) in {folder}; copy the whole released "
                         "folder, code included")
    digest = hashlib.sha256()
    for file in files:
        code = file.read_bytes()
        if SWAPPED_PROMPT.encode() in code:
            raise ModelError(f"{model}: {file.name} in {folder} has the prompt-order bug "
                             f"({SWAPPED_PROMPT!r}); use a revision of the weights without it")
        digest.update(file.name.encode() + b"\0" + code + b"\0")
    return digest.hexdigest()


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Remote code may name hub repositories (the tokenizer, the vision tower): keep every
    lookup on local files while it loads."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def owl2_input_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of an mPLUG-Owl2 prompt with OWL2_IMAGE_INDEX where the image tag stands (the
    tokenizer knows no image token: text around it is tokenized piece by piece)."""
    first, *rest = prompt.split(OWL2_IMAGE_TAG)
    ids = list(tokenizer(first)["input_ids"])  # with the BOS token, as the model was trained
    for piece in rest:
        ids += [OWL2_IMAGE_INDEX] + list(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Centre the image on a square canvas of `fill` (the processor's mean colour), as the
    models were trained, instead of letting the processor crop it."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class Owl2Levels(LevelScorer):
    """Level-token scoring on released mPLUG-Owl2 weights, through their own code."""


    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.options = parse_options(Owl2Options, config.options, self.name)
        path = require_model_dir(config.model_path, self.name, self.weights)
        if not self.options.trust_remote_code:
            raise ModelError(f"{self.name}: these weights run through the Python code in "
                             f"{path}; read it, then pass --model-arg trust_remote_code=true")
        self.code_sha256 = remote_code_digest(path, self.name)
        if self.options.code_sha256 and self.options.code_sha256 != self.code_sha256:
            raise ModelError(f"{self.name}: the code in {path} has sha256 {self.code_sha256}, "
                             f"not the pinned {self.options.code_sha256}")
        self.device = resolve_device(config.device)
        self.network, self.tokenizer, self.image_processor = self._load(path)
        self.input_ids = owl2_input_ids(self.tokenizer, OWL2_PROMPT)
        self.token_ids = level_token_ids(self.tokenizer, LEVEL_ANSWER_PREFIX, LEVEL_WORDS)

    def _load(self, path: Path):
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor
        try:
            # the old transformers this code needs calls the argument torch_dtype
            major = int(transformers.__version__.split(".")[0])
            dtype_key = "dtype" if major >= 5 else "torch_dtype"
            with hub_offline():
                network = AutoModelForCausalLM.from_pretrained(
                    path, trust_remote_code=self.options.trust_remote_code, local_files_only=True,
                    **{dtype_key: torch_dtype(self.options.dtype, self.device)})
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                image_processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # remote code fails in many ways; say which and what to do
            raise ModelError(
                f"{self.name}: loading {path} failed under transformers "
                f"{transformers.__version__} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                f"{TRANSFORMERS_ADVICE}") from None
        return network.to(self.device).eval(), tokenizer, image_processor

    def level_logits(self, images: Sequence[Sequence[Image.Image]]):
        import torch
        fill = tuple(int(255 * m) for m in self.image_processor.image_mean)
        squares = [pad_to_square(imgs[0], fill) for imgs in images]
        pixels = self.image_processor(squares, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, dtype=self.network.dtype)
        ids = torch.tensor([self.input_ids] * len(images), device=self.device)
        with torch.inference_mode():
            logits = self.network(input_ids=ids, images=pixels).logits[:, -1, :]
        return logits[:, self.token_ids]

    def settings(self) -> dict[str, Any]:
        return super().settings() | {"code_sha256": self.code_sha256, "prompt": OWL2_PROMPT}

    def close(self) -> None:
        self.network = None
        free_gpu_cache()


@register_model("qalign")
class QAlign(Owl2Levels):
    """Q-Align level-token score from its released weights (opt-in remote code)"""

    name = "qalign"
    weights = "Q-Align weights (q-future/one-align)"
    weights_folder = "one-align"


@register_model("deqa-score")
class DeQAScore(Owl2Levels):
    """DeQA-Score level-token score from its released weights (opt-in remote code)"""

    name = "deqa-score"
    weights = "DeQA-Score weights (zhiyuanyou/DeQA-Score-Mix3)"
    weights_folder = "DeQA-Score-Mix3"
