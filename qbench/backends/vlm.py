"""Local vision-language models: chat prompts, model inputs, generation (transformers or vLLM)
and level-token scoring. Nothing here names a model; adapters in baselines/ choose prompts and
settings.

Both generation backends take prompts from `chat_prompt` and decoding values from
`decoding.py`, so switching backend changes speed, not the text the model reads nor how it
decodes. Needs transformers >= 4.56 (`from_pretrained(dtype=...)`, Qwen2.5-VL `logits_to_keep`).
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from qbench.backends.decoding import Decoding, vllm_sampling_kwargs
from qbench.core.launcher import launcher_place
from qbench.core.model import ModelError

DTYPES = ("bfloat16", "float16", "float32")


# ------------------------------------------------------------------------------ loading

def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: CUDA is not available on this machine")
    return device


def resolve_dtype(name: str, device: str) -> str:
    """A concrete dtype name for `name` on `device`: "auto" is bfloat16 on a GPU (float16 where
    the GPU has no bfloat16) and float32 on the CPU. Backends only ever see the concrete name
    (vLLM 0.8 would turn "auto" on a float32 checkpoint into float16)."""
    if name == "auto":
        if not device.startswith("cuda"):
            return "float32"
        import torch
        bf16 = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
        return "bfloat16" if bf16 else "float16"
    if name not in DTYPES:
        raise ModelError(f"dtype {name!r}: expected auto, {', '.join(DTYPES)}")
    return name


def torch_dtype(name: str, device: str):
    import torch
    return getattr(torch, resolve_dtype(name, device))


def require_model_dir(path: Path | None, model: str, what: str) -> Path:
    if path is None:
        raise ModelError(f"{model}: pass --model-path DIR, a local copy of {what}")
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise ModelError(f"{model}: {path} is not a model folder (no config.json); "
                         f"put a local copy of {what} there")
    return path


def load_processor(path: Path, model: str, trust_remote_code: bool = False):
    """The checkpoint's multimodal processor, left-padding. AutoProcessor quietly returns a bare
    tokenizer when it cannot build the processor: that is an error here, not a fallback."""
    from transformers import AutoProcessor, ProcessorMixin
    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True,
                                                  trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"{model}: cannot load the processor from {path}: "
                         f"{str(exc).splitlines()[0]}") from None
    if not isinstance(processor, ProcessorMixin) or not hasattr(processor, "image_processor"):
        raise ModelError(f"{model}: {path} has no image processor (AutoProcessor gave "
                         f"{type(processor).__name__}); is it a vision-language checkpoint?")
    processor.tokenizer.padding_side = "left"  # batched decoding continues from the right end
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


@dataclass(frozen=True)
class LoadSettings:
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None     # "auto" spreads a large model over several GPUs
    attn_implementation: str | None = None
    trust_remote_code: bool = False


def load_hf_vlm(path: Path, model: str, load: LoadSettings):
    """(model, processor) for a local Hugging Face vision-language checkpoint, in eval mode."""
    from transformers import AutoModelForImageTextToText
    processor = load_processor(path, model, load.trust_remote_code)
    device = resolve_device(load.device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(load.dtype, device), "local_files_only": True,
                              "trust_remote_code": load.trust_remote_code}
    if load.device_map:
        kwargs["device_map"] = load.device_map
    if load.attn_implementation:
        kwargs["attn_implementation"] = load.attn_implementation
    try:
        network = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except (OSError, ValueError, ImportError, KeyError) as exc:
        raise ModelError(f"{model}: cannot load the weights in {path}: "
                         f"{str(exc).splitlines()[0]}") from None
    if not load.device_map:
        network = network.to(device)
    return network.eval(), processor


# ------------------------------------------------------------------------------ prompts

def chat_prompt(processor, messages: list[dict], assistant_prefix: str = "") -> str:
    """The text the model reads: the checkpoint's chat template applied to qbench's messages
    (image placeholders included), opened for the assistant's turn, plus an optional start of
    the answer (level-token scoring continues "The quality of the image is")."""
    try:
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except (ValueError, TypeError) as exc:  # a checkpoint without a chat template
        raise ModelError(f"cannot build the prompt: {str(exc).splitlines()[0]}") from None
    return text + assistant_prefix


class InputBuilder:
    """Model inputs for a batch of prompts with their images, equal to what the processor gives
    for the whole batch with left padding, built on the CPU (`build`) apart from the copy to
    the device (`to_device`), so that a worker thread can build batch k+1 while batch k runs.

    A processor of the Qwen2-VL family expands each image placeholder into as many tokens as the
    image's grid (`image_grid_thw`) has: the text side of a sample depends only on its prompt
    and its images' grids. That side (tokenizing thousands of placeholder tokens, the token-type
    ids) is computed once per (prompt, grids) and reused, and a batch is assembled by left
    padding; only the image processor runs on every image. Processors without a grid go
    through the processor call unchanged."""

    MAX_CACHED = 4096  # (prompt, grids) entries; each holds one sample's token ids

    def __init__(self, processor):
        self.processor = processor
        self._text: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        # A fast tokenizer used from two threads at once can fail ("Already borrowed"): the
        # text side (on the preparing thread) and decoding answers (on the predicting one)
        # take turns through this lock.
        self.tokenizer_lock = threading.Lock()

    def build(self, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]],
              device) -> Any:
        """The batch's inputs as CPU tensors (a BatchFeature); pinned when `device` is a CUDA
        device, so that `to_device` copies them without blocking."""
        from transformers import BatchFeature
        flat = [image for sample in images for image in sample]
        pixels = self.processor.image_processor(flat, return_tensors="pt") if flat else {}
        grids = pixels.get("image_grid_thw")
        if grids is None:
            with self.tokenizer_lock:
                inputs = self.processor(text=list(prompts),
                                        images=[list(i) for i in images] or None,
                                        padding=True, return_tensors="pt")
        else:
            rows = [tuple(row) for row in grids.tolist()]
            texts, start = [], 0
            for prompt, sample in zip(prompts, images, strict=True):
                key = (prompt, tuple(rows[start:start + len(sample)]))
                start += len(sample)
                texts.append(self._text_side(key, sample, set(pixels)))
            inputs = BatchFeature({**left_pad(texts, self.processor.tokenizer.pad_token_id),
                                   **pixels})
        return pinned(inputs) if is_cuda(device) else inputs

    def __call__(self, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]],
                 device):
        return to_device(self.build(prompts, images, device), device)

    def _text_side(self, key: tuple, sample: Sequence[Image.Image], image_keys: set[str]
                   ) -> dict[str, Any]:
        if key in self._text:
            self._text.move_to_end(key)
            return self._text[key]
        with self.tokenizer_lock:
            encoded = self.processor(text=[key[0]], images=[list(sample)], return_tensors="pt")
        self._text[key] = {k: v[0] for k, v in encoded.items() if k not in image_keys}
        if len(self._text) > self.MAX_CACHED:
            self._text.popitem(last=False)
        return self._text[key]


def is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def pinned(inputs):
    """The tensors of `inputs` in page-locked memory, from which a copy to the GPU runs
    asynchronously (the copy is made on the preparing thread, off the critical path)."""
    for key, value in inputs.items():
        if hasattr(value, "pin_memory"):
            inputs[key] = value.pin_memory()
    return inputs


def to_device(inputs, device):
    """`inputs` moved to `device`; from pinned memory the copies do not block the CPU (the
    forward pass that reads them is queued behind them on the same stream)."""
    for key, value in inputs.items():
        if hasattr(value, "to"):
            inputs[key] = value.to(device, non_blocking=is_cuda(device))
    return inputs


def left_pad(rows: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Stack one-sample token tensors into a batch, padded on the left (token ids with the pad
    token, masks and type ids with 0), so that every prompt ends in the last position."""
    import torch
    width = max(len(row["input_ids"]) for row in rows)
    batch = {}
    for key in rows[0]:
        fill = pad_token_id if key == "input_ids" else 0
        out = torch.full((len(rows), width), fill, dtype=rows[0][key].dtype)
        for i, row in enumerate(rows):
            out[i, width - len(row[key]):] = row[key]
        batch[key] = out
    return batch


_builders: weakref.WeakKeyDictionary[Any, InputBuilder] = weakref.WeakKeyDictionary()


def input_builder(processor) -> InputBuilder:
    """The processor's InputBuilder, kept as long as the processor lives."""
    if processor not in _builders:
        _builders[processor] = InputBuilder(processor)
    return _builders[processor]


def model_inputs(processor, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]],
                 device):
    """One left-padded batch on `device`: token ids with the image placeholders expanded,
    pixel values (through the processor's InputBuilder)."""
    return input_builder(processor)(prompts, images, device)


# ------------------------------------------------------------------------------ generation

Generation = Callable[[Decoding, int], list[list[str]]]


class Generator(Protocol):
    """A generation backend: K answer texts for each prompt with its images. A backend with
    CPU work to do before its device starts also has `prepare(prompts, images) -> Generation`
    (see `prepare_generation`)."""

    processor: Any

    def generate(self, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]],
                 decoding: Decoding, seed: int) -> list[list[str]]: ...

    def close(self) -> None: ...


def prepare_generation(generator: Generator, prompts: Sequence[str],
                       images: Sequence[Sequence[Image.Image]]) -> Generation:
    """`generator.generate` for these prompts in two steps: the backend's CPU work done now
    (its `prepare`, where it has one), the rest returned as a call taking the decoding and
    the seed."""
    prepare = getattr(generator, "prepare", None)
    if prepare is None:   # vLLM builds its inputs in its own engine; test doubles
        return partial(generator.generate, prompts, images)
    return prepare(prompts, images)


def stopping_only(generation_config):
    """A GenerationConfig keeping only the checkpoint's token ids (end, padding, start): the
    checkpoint's decoding values must not reach `generate` behind qbench's back (offline vLLM
    does not apply them either); qbench passes its own explicitly."""
    from transformers import GenerationConfig
    return GenerationConfig(eos_token_id=generation_config.eos_token_id,
                            pad_token_id=generation_config.pad_token_id,
                            bos_token_id=generation_config.bos_token_id)


def transformers_generate_kwargs(decoding: Decoding, pad_token_id: int) -> dict[str, Any]:
    """`generate` arguments with the meaning `vllm_sampling_kwargs` gives `decoding`."""
    kwargs: dict[str, Any] = {"max_new_tokens": decoding.max_new_tokens,
                              "do_sample": decoding.do_sample,
                              "num_return_sequences": decoding.samples,
                              "repetition_penalty": decoding.repetition_penalty,
                              "pad_token_id": pad_token_id}
    if decoding.do_sample:
        kwargs.update(temperature=decoding.temperature, top_k=decoding.top_k,
                      top_p=decoding.top_p)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    return kwargs


class TransformersGenerator:
    """Batched `generate` on a transformers model (left padding, new tokens decoded)."""

    def __init__(self, network, processor):
        self.network, self.processor = network, processor
        self.inputs = input_builder(processor)
        network.generation_config = stopping_only(network.generation_config)

    def prepare(self, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]]
                ) -> Generation:
        """Inputs built on the CPU now; the copy to the device and `generate` in the call."""
        inputs = self.inputs.build(prompts, images, self.network.device)
        return partial(self._generate, inputs, len(prompts))

    def generate(self, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]],
                 decoding: Decoding, seed: int) -> list[list[str]]:
        return self.prepare(prompts, images)(decoding, seed)

    def _generate(self, inputs, count: int, decoding: Decoding, seed: int) -> list[list[str]]:
        import torch
        inputs = to_device(inputs, self.network.device)
        kwargs = transformers_generate_kwargs(decoding, self.processor.tokenizer.pad_token_id)
        if decoding.do_sample:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.network.generate(**inputs, **kwargs)
        with self.inputs.tokenizer_lock:
            texts = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                                skip_special_tokens=True)
        k = decoding.samples  # generate returns each prompt's K sequences next to each other
        return [texts[i * k:(i + 1) * k] for i in range(count)]

    def close(self) -> None:
        self.network = None
        free_gpu_cache()


def free_gpu_cache() -> None:
    """Hand cached GPU memory back once a model's last reference is dropped."""
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def vllm_requests(prompts: Sequence[str], images: Sequence[Sequence[Image.Image]]
                  ) -> list[dict[str, Any]]:
    """vLLM offline inputs: the prompt text with its images under multi_modal_data."""
    return [{"prompt": prompt,
             "multi_modal_data": {"image": list(imgs) if len(imgs) > 1 else imgs[0]}}
            for prompt, imgs in zip(prompts, images, strict=True)]


@dataclass(frozen=True)
class VLLMSettings:
    dtype: str                 # a concrete name (resolve_dtype), never "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    max_images: int = 3   # a comparison prompt carries reference, A and B
    trust_remote_code: bool = False
    load_format: str = "auto"  # "dummy": random weights from config.json (benchmarks)


def rank_gpus(local_rank: int, per_rank: int, visible: str | None) -> str:
    """The GPUs of one launcher rank: its own `per_rank` consecutive devices among those
    visible ("0,1,2,3" or all)."""
    import torch
    devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    mine = devices[local_rank * per_rank:(local_rank + 1) * per_rank]
    if len(mine) < per_rank:
        raise ModelError(f"launcher rank {local_rank} needs GPUs {local_rank * per_rank}.."
                         f"{(local_rank + 1) * per_rank - 1} for tensor_parallel_size {per_rank}; "
                         f"{len(devices)} visible: launch fewer processes per node")
    return ",".join(mine)


def restrict_to_rank_gpus(per_rank: int) -> None:
    """Under a launcher (torchrun, accelerate launch) each rank runs its own vLLM engine, data
    parallel, on its own `tensor_parallel_size` GPUs: vLLM places its workers on the first
    visible devices, so the rank's slice is made the visible set before vLLM starts."""
    place = launcher_place()
    if place.world > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = rank_gpus(
            place.local_rank, per_rank, os.environ.get("CUDA_VISIBLE_DEVICES"))


class VLLMGenerator:
    """vLLM's offline `LLM` engine. vLLM is an optional extra, imported only here."""

    def __init__(self, path: Path, processor, settings: VLLMSettings, seed: int, model: str):
        try:
            import vllm
        except ImportError:
            raise ModelError(f"{model}: backend=vllm needs vLLM on a CUDA machine: pip install "
                             "vllm (qbench's 'vllm' extra)") from None
        self._vllm = vllm
        self.processor = processor
        restrict_to_rank_gpus(settings.tensor_parallel_size)
        kwargs: dict[str, Any] = {
            "model": str(path), "tokenizer": str(path), "seed": seed, "dtype": settings.dtype,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "gpu_memory_utilization": settings.gpu_memory_utilization,
            "limit_mm_per_prompt": {"image": settings.max_images},
            "trust_remote_code": settings.trust_remote_code,
            "load_format": settings.load_format}
        if settings.max_model_len:
            kwargs["max_model_len"] = settings.max_model_len
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; the first line says what went wrong
            raise ModelError(f"{model}: vLLM could not start on {path}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None

    def generate(self, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]],
                 decoding: Decoding, seed: int) -> list[list[str]]:
        params = self._vllm.SamplingParams(**vllm_sampling_kwargs(decoding, seed))
        outputs = self.llm.generate(vllm_requests(prompts, images), params, use_tqdm=False)
        return [[choice.text for choice in output.outputs] for output in outputs]

    def close(self) -> None:
        self.llm = None
        free_gpu_cache()


# ------------------------------------------------------------------------------ level tokens

def level_token_ids(tokenizer, answer_prefix: str, words: Sequence[str]) -> list[int]:
    """The token each level word starts with where it follows `answer_prefix` (" excellent"
    after "... is"), found by tokenizing the prefix with and without the word, so that BPE and
    SentencePiece vocabularies both give the token the model would emit next. The words must
    start with distinct tokens, or their probabilities would merge."""
    base = tokenizer(answer_prefix, add_special_tokens=False)["input_ids"]
    ids = []
    for word in words:
        extended = tokenizer(f"{answer_prefix} {word}", add_special_tokens=False)["input_ids"]
        if extended[:len(base)] != base or len(extended) == len(base):
            raise ModelError(f"level word {word!r} does not tokenize as a continuation of "
                             f"{answer_prefix!r} in this tokenizer")
        ids.append(extended[len(base)])
    if len(set(ids)) != len(ids):
        raise ModelError(f"level words {list(words)} do not start with distinct tokens {ids} "
                         "in this tokenizer")
    return ids


def expected_level(level_logits, weights: Sequence[float]):
    """Softmax over the level tokens' logits (rows: samples, columns: levels), dotted with the
    level weights: (expected level, probabilities)."""
    import torch
    probs = torch.softmax(level_logits.float(), dim=-1)
    return probs @ torch.tensor(list(weights), dtype=probs.dtype, device=probs.device), probs


def next_token_logits(network, inputs):
    """Logits of the token after each prompt (left padding puts every prompt's end last), from
    inputs built by `InputBuilder.build`: one forward pass, no KV cache kept, only the last
    position's logits computed."""
    import torch
    with torch.inference_mode():
        return network(**to_device(inputs, network.device), logits_to_keep=1,
                       use_cache=False).logits[:, -1, :]
