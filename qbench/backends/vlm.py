"""Local vision-language models: chat prompts, generation (transformers or vLLM) and level-token
scoring. Nothing here names a model; adapters in baselines/ choose prompts and settings.

Both generation backends take prompts from `chat_prompt`, so switching backend changes speed,
not the text the model reads.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from ..model import ModelError


# ------------------------------------------------------------------------------ decoding

@dataclass(frozen=True)
class Decoding:
    """Generation settings. `samples` > 1 draws that many answers per image (sampling only)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    max_new_tokens: int = 1024
    samples: int = 1
    seed: int | None = None  # None: the run's --seed

    def check(self, model: str) -> "Decoding":
        if self.samples < 1 or self.max_new_tokens < 1:
            raise ModelError(f"{model}: samples and max_new_tokens must be >= 1")
        if self.samples > 1 and not self.do_sample:
            raise ModelError(f"{model}: samples={self.samples} needs sampling "
                             "(--model-arg decoding=demo or do_sample=true): greedy answers repeat")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ModelError(f"{model}: sampling needs temperature > 0 and 0 < top_p <= 1")
        return self

    def settings(self) -> dict[str, Any]:
        return asdict(self)


# Greedy by default, for reproducibility; "demo" is the released Q-Insight demo's sampling.
DECODING_PRESETS: dict[str, Decoding] = {
    "greedy": Decoding(),
    "demo": Decoding(do_sample=True, temperature=1.0, top_k=50, top_p=0.95,
                     max_new_tokens=1024, seed=42),
}


def decoding_from(preset: str, model: str, **overrides: Any) -> Decoding:
    """A preset with the options the user set explicitly (None = keep the preset's)."""
    if preset not in DECODING_PRESETS:
        raise ModelError(f"{model}: unknown decoding preset {preset!r}; "
                         f"known: {', '.join(DECODING_PRESETS)}")
    base = asdict(DECODING_PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Decoding(**base).check(model)


# ------------------------------------------------------------------------------ loading

def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: CUDA is not available on this machine")
    return device


def torch_dtype(name: str, device: str):
    """bf16 on GPU, float32 on CPU unless the user names one."""
    import torch
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"bfloat16": torch.bfloat16, "float16": torch.float16,
                "float32": torch.float32}[name]
    except KeyError:
        raise ModelError(f"dtype {name!r}: expected auto, bfloat16, float16 or float32") from None


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


def model_inputs(processor, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]],
                 device):
    """One left-padded batch: token ids with the image placeholders expanded, pixel values."""
    inputs = processor(text=list(prompts), images=[list(i) for i in images], padding=True,
                       return_tensors="pt")
    return inputs.to(device)


# ------------------------------------------------------------------------------ generation

class Generator(Protocol):
    """A generation backend: K answer texts for each prompt with its images."""

    processor: Any

    def generate(self, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]],
                 decoding: Decoding, seed: int) -> list[list[str]]: ...

    def close(self) -> None: ...


class TransformersGenerator:
    """Batched `generate` on a transformers model (left padding, new tokens decoded)."""

    def __init__(self, network, processor):
        self.network, self.processor = network, processor

    def generate(self, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]],
                 decoding: Decoding, seed: int) -> list[list[str]]:
        import torch
        inputs = model_inputs(self.processor, prompts, images, self.network.device)
        kwargs: dict[str, Any] = {"max_new_tokens": decoding.max_new_tokens,
                                  "do_sample": decoding.do_sample,
                                  "num_return_sequences": decoding.samples,
                                  "pad_token_id": self.processor.tokenizer.pad_token_id}
        if decoding.do_sample:
            kwargs.update(temperature=decoding.temperature, top_k=decoding.top_k,
                          top_p=decoding.top_p)
            torch.manual_seed(seed)
        else:  # the checkpoint's generation_config may ask for sampling: greedy means greedy
            kwargs.update(temperature=None, top_k=None, top_p=None)
        with torch.inference_mode():
            out = self.network.generate(**inputs, **kwargs)
        texts = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                            skip_special_tokens=True)
        k = decoding.samples  # generate returns each prompt's K sequences next to each other
        return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]

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
            for prompt, imgs in zip(prompts, images)]


def vllm_sampling_kwargs(decoding: Decoding, seed: int) -> dict[str, Any]:
    """SamplingParams arguments with the meaning `TransformersGenerator` gives `decoding`."""
    kwargs: dict[str, Any] = {"max_tokens": decoding.max_new_tokens, "n": decoding.samples,
                              "seed": seed}
    if decoding.do_sample:
        kwargs.update(temperature=decoding.temperature, top_k=decoding.top_k,
                      top_p=decoding.top_p)
    else:
        kwargs.update(temperature=0.0)  # vLLM's greedy decoding
    return kwargs


@dataclass(frozen=True)
class VLLMSettings:
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"
    max_images: int = 3   # a comparison prompt carries reference, A and B
    trust_remote_code: bool = False


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
        kwargs: dict[str, Any] = {
            "model": str(path), "tokenizer": str(path), "seed": seed, "dtype": settings.dtype,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "gpu_memory_utilization": settings.gpu_memory_utilization,
            "limit_mm_per_prompt": {"image": settings.max_images},
            "trust_remote_code": settings.trust_remote_code}
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


def next_token_logits(network, processor, prompts: Sequence[str],
                      images: Sequence[Sequence[Image.Image]]):
    """Logits of the token after each prompt (left padding puts every prompt's end last)."""
    import torch
    inputs = model_inputs(processor, prompts, images, network.device)
    with torch.inference_mode():
        return network(**inputs, logits_to_keep=1).logits[:, -1, :]
