"""Level-token scorers (the Q-Align / DeQA-Score mechanism, REFERENCE §3): one forward pass, the
next-token logits of the five level words after "The quality of the image is", softmax over
those five, dotted with [5, 4, 3, 2, 1] -> a score in [1, 5].

`qwen-vl-levels`  any local Hugging Face vision-language model with a chat template.
`qalign`          the released Q-Align weights (q-future/one-align, mPLUG-Owl2).
`deqa-score`      the released DeQA-Score weights (zhiyuanyou/DeQA-Score-Mix3, mPLUG-Owl2).

Q-Align and DeQA-Score run on qbench's own mPLUG-Owl2 (`mplug_owl2.py`), in this environment,
batched, with the prompt, tokenization and image preparation of the upstream evaluation scripts
(`benchmarks/owl2_equality.py` compares the logits with the original code). The model code
shipped with the weights runs only when the user asks for it (`--model-arg
trust_remote_code=true`, after reading the *.py files; it needs transformers 4.36, see
`TRANSFORMERS_ADVICE`), only from the local folder, never with the swapped-words prompt bug, and
`code_sha256=<hex>` pins it (the digest is recorded in the run manifest). Either way qbench
builds the prompt and the pixels itself.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image

from qbench import Model, ModelConfig, ModelError, Prediction, Sample, register_model
from qbench.backends.vlm import (
    LoadSettings,
    chat_prompt,
    expected_level,
    free_gpu_cache,
    input_builder,
    is_cuda,
    level_token_ids,
    load_hf_vlm,
    next_token_logits,
    require_model_dir,
    resolve_device,
    torch_dtype,
)
from qbench.core.model import Timer

LEVEL_QUESTION = "How would you rate the quality of this image?"
LEVEL_ANSWER_PREFIX = "The quality of the image is"
LEVEL_WORDS: tuple[str, ...] = ("excellent", "good", "fair", "poor", "bad")
LEVEL_WEIGHTS: tuple[float, ...] = (5.0, 4.0, 3.0, 2.0, 1.0)

# The conversations Q-Align and DeQA-Score were scored with. "eval-script": both repositories'
# iqa_eval.py (the published figures): conversation template "mplug_owl2", user turn
# "question\n<|image|>", then " The quality of the image is". "scorer": the scorer shipped with
# the weights (`model.score`, scorer.py), a newline where the template has a space.
OWL2_CONVERSATIONS = {
    "eval-script": f"USER: {LEVEL_QUESTION}\n<|image|> ASSISTANT: {LEVEL_ANSWER_PREFIX}",
    "scorer": f"USER: {LEVEL_QUESTION}\n<|image|>\nASSISTANT: {LEVEL_ANSWER_PREFIX}",
}
SWAPPED_PROMPT = "The image of the quality"  # the prompt-order bug of some remote-code revisions
TRANSFORMERS_ADVICE = (
    "the weights' own code needs transformers 4.36 (a separate environment with "
    "transformers==4.36.2); without trust_remote_code=true qbench's own mPLUG-Owl2 runs them here")


class LevelScorer(Model):
    """Shared by the level-token adapters: subclasses provide `level_inputs` (the CPU side: a
    batch's model inputs, built ahead on the runner's worker thread) and `logits_of` (rows:
    samples, columns: the five level words in LEVEL_WORDS order)."""

    kinds = frozenset({"score"})
    score_range = (1, 5)

    @abstractmethod
    def level_inputs(self, images: Sequence[Sequence[Image.Image]]) -> Any:
        """The batch's model inputs, on the CPU (pinned for a GPU)."""

    @abstractmethod
    def logits_of(self, inputs: Any):
        """Next-token logits of the five level words for inputs from `level_inputs`."""

    def level_logits(self, images: Sequence[Sequence[Image.Image]]):
        """Next-token logits of the five level words, one row per sample."""
        return self.logits_of(self.level_inputs(images))

    def prepare(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> Callable[[], list[Prediction]]:
        with Timer() as timer:
            inputs = self.level_inputs(images)
        return partial(self._predictions, samples, inputs, timer.seconds)

    def predict(self, samples: Sequence[Sample], images: Sequence[Sequence[Image.Image]]
                ) -> list[Prediction]:
        return self.prepare(samples, images)()

    def _predictions(self, samples: Sequence[Sample], inputs: Any, prepared_s: float
                     ) -> list[Prediction]:
        with Timer() as timer:
            scores, probs = expected_level(self.logits_of(inputs), LEVEL_WEIGHTS)
        each = (prepared_s + timer.seconds) / max(len(samples), 1)
        out = []
        for sample, score, p in zip(samples, scores.tolist(), probs.tolist(), strict=True):
            level_probs = dict(zip(LEVEL_WORDS, (round(x, 6) for x in p), strict=True))
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
    Options = HFLevelOptions
    options: HFLevelOptions

    def __init__(self, config: ModelConfig, loaded: tuple[Any, Any] | None = None):
        """`loaded` (network, processor) replaces the weights read from --model-path
        (benchmarks on models built in memory)."""
        super().__init__(config)
        if loaded is None:
            path = require_model_dir(config.model_path, self.name, self.weights)
            loaded = load_hf_vlm(path, self.name, LoadSettings(
                device=config.device, dtype=self.options.dtype,
                device_map=self.options.device_map,
                attn_implementation=self.options.attn_implementation,
                trust_remote_code=self.options.trust_remote_code))
        self.network, self.processor = loaded
        self.prompt = chat_prompt(self.processor, level_messages(), LEVEL_ANSWER_PREFIX)
        self.token_ids = level_token_ids(self.processor.tokenizer, LEVEL_ANSWER_PREFIX,
                                         LEVEL_WORDS)
        self.inputs = input_builder(self.processor)

    def level_inputs(self, images: Sequence[Sequence[Image.Image]]) -> Any:
        return self.inputs.build([self.prompt] * len(images), images, self.network.device)

    def logits_of(self, inputs: Any):
        return next_token_logits(self.network, inputs)[:, self.token_ids]

    def settings(self) -> dict[str, Any]:
        # the dtype the weights were loaded in ("auto" resolved), not the option's spelling
        dtype = str(self.network.dtype).removeprefix("torch.")
        return super().settings() | {"prompt": self.prompt, "level_token_ids": self.token_ids,
                                     "dtype": dtype}

    def close(self) -> None:
        self.network = None
        free_gpu_cache()


# ------------------------------------------------------------------------ mPLUG-Owl2 weights

@dataclass(frozen=True)
class Owl2Options:
    dtype: str = "auto"  # float16 on a GPU, as the upstream evaluation ran; float32 on the CPU
    conversation: Literal["eval-script", "scorer"] = "eval-script"
    preprocessor: Path | None = None  # tokenizer.model + preprocessor_config.json, if elsewhere
    trust_remote_code: bool = False   # the weights' own *.py instead (needs transformers 4.36)
    code_sha256: str | None = None    # pins that code


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


class RemoteOwl2:
    """The model code shipped with the weights, called as the upstream scripts call it:
    input_ids with -200 where the image goes, pixel values as `images`."""

    def __init__(self, path: Path, model: str, device: str, dtype, *, trust_remote_code: bool):
        import transformers
        from transformers import AutoModelForCausalLM
        # the transformers this code needs calls the argument torch_dtype
        dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        try:
            with hub_offline():
                network = AutoModelForCausalLM.from_pretrained(
                    path, trust_remote_code=trust_remote_code, local_files_only=True,
                    **{dtype_key: dtype})
        except Exception as exc:  # remote code fails in many ways; say which and what to do
            raise ModelError(
                f"{model}: loading {path} failed under transformers "
                f"{transformers.__version__} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                f"{TRANSFORMERS_ADVICE}") from None
        self.network, self.device, self.dtype = network.to(device).eval(), device, dtype

    def next_token_logits(self, pixels, prompt, vocab_ids: Sequence[int]):
        import torch
        ids = torch.tensor([prompt.input_ids()] * len(pixels), device=self.device)
        with torch.inference_mode():
            logits = self.network(input_ids=ids, images=pixels.to(self.device, self.dtype,
                                                                     non_blocking=True)).logits
        return logits[:, -1, list(vocab_ids)].float()


class Owl2Levels(LevelScorer):
    """Level-token scoring on released mPLUG-Owl2 weights: qbench's implementation, batched;
    the weights' own code on request."""

    Options = Owl2Options
    options: Owl2Options
    weights: ClassVar[str]   # each subclass names the weights it reads

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        from qbench.baselines import mplug_owl2
        path = require_model_dir(config.model_path, self.name, self.weights)
        inputs_dir = self._inputs_folder(path)
        self.device = resolve_device(config.device)
        dtype_name = "float16" if self.options.dtype == "auto" and self.device != "cpu" \
            else self.options.dtype
        self.dtype = torch_dtype(dtype_name, self.device)
        self.prompt_text = OWL2_CONVERSATIONS[self.options.conversation]
        # Padding and resizing a 1024x768 photograph on the CPU takes tens of milliseconds,
        # several times the forward pass per image on a GPU: the batch is shared among the
        # run's --workers threads (benchmarks/owl2_gpu_throughput.py measures both).
        self.pixel_pool = (ThreadPoolExecutor(config.workers, thread_name_prefix="qbench-pixels")
                           if config.workers > 1 else None)
        self.code_sha256 = None
        if self.options.trust_remote_code:
            self.code_sha256 = remote_code_digest(path, self.name)
            if self.options.code_sha256 and self.options.code_sha256 != self.code_sha256:
                raise ModelError(f"{self.name}: the code in {path} has sha256 "
                                 f"{self.code_sha256}, not the pinned {self.options.code_sha256}")
        elif self.options.code_sha256:
            raise ModelError(f"{self.name}: code_sha256 pins the weights' own code; it applies "
                             "with --model-arg trust_remote_code=true")
        try:
            self.tokenizer = mplug_owl2.Owl2Tokenizer(inputs_dir)
            self.image_processor = mplug_owl2.Owl2ImageProcessor.from_folder(inputs_dir)
            self.prompt = self.tokenizer.prompt(self.prompt_text)
            self.token_ids = [self.tokenizer.first_token(word) for word in LEVEL_WORDS]
            if len(set(self.token_ids)) != len(LEVEL_WORDS):
                raise mplug_owl2.Owl2Error(
                    f"the level words {LEVEL_WORDS} do not start with distinct tokens "
                    f"({self.token_ids}) in {inputs_dir}/tokenizer.model")
            vocabulary = mplug_owl2.read_json(path / "config.json").get("vocab_size", 0)
            if self.tokenizer.sp.get_piece_size() > vocabulary:
                raise mplug_owl2.Owl2Error(
                    f"the tokenizer in {inputs_dir} has {self.tokenizer.sp.get_piece_size()} "
                    f"pieces, the weights in {path} a vocabulary of {vocabulary}: not a pair")
            self.network = (RemoteOwl2(path, self.name, self.device, self.dtype,
                                       trust_remote_code=self.options.trust_remote_code)
                            if self.options.trust_remote_code
                            else mplug_owl2.load_mplug_owl2(path, self.device, self.dtype))
        except mplug_owl2.Owl2Error as exc:
            raise ModelError(f"{self.name}: {exc}") from None

    def _inputs_folder(self, path: Path) -> Path:
        """Where tokenizer.model and preprocessor_config.json are: the weights folder, or
        `preprocessor=DIR` (DeQA-Score's evaluation reads them from its repository's
        preprocessor/ folder)."""
        folder = Path(self.options.preprocessor) if self.options.preprocessor else path
        missing = [name for name in ("tokenizer.model", "preprocessor_config.json")
                   if not (folder / name).is_file()]
        if missing:
            raise ModelError(f"{self.name}: {' and '.join(missing)} not in {folder}; copy the "
                             "released tokenizer and preprocessor files there or pass "
                             "--model-arg preprocessor=DIR")
        return folder

    def level_inputs(self, images: Sequence[Sequence[Image.Image]]) -> Any:
        pixels = self.image_processor([imgs[0] for imgs in images], self.pixel_pool)
        return pixels.pin_memory() if is_cuda(self.device) else pixels

    def logits_of(self, inputs: Any):
        return self.network.next_token_logits(inputs, self.prompt, self.token_ids)

    def settings(self) -> dict[str, Any]:
        implementation = "remote-code" if self.options.trust_remote_code else "qbench"
        out = super().settings() | {"implementation": implementation, "prompt": self.prompt_text,
                                    "level_token_ids": self.token_ids,
                                    "dtype": str(self.dtype).removeprefix("torch.")}
        return out | ({"code_sha256": self.code_sha256} if self.code_sha256 else {})

    def close(self) -> None:
        self.network = None
        if self.pixel_pool:
            self.pixel_pool.shutdown()
        free_gpu_cache()


@register_model("qalign")
class QAlign(Owl2Levels):
    """Q-Align level-token score from its released weights (mPLUG-Owl2)"""

    name = "qalign"
    weights = "Q-Align weights (q-future/one-align)"
    weights_folder = "one-align"


@register_model("deqa-score")
class DeQAScore(Owl2Levels):
    """DeQA-Score level-token score from its released weights (mPLUG-Owl2)"""

    name = "deqa-score"
    weights = "DeQA-Score weights (zhiyuanyou/DeQA-Score-Mix3)"
    weights_folder = "DeQA-Score-Mix3"
