"""qbench's mPLUG-Owl2 (`qalign`, `deqa-score`) against the original Q-Align / DeQA-Score code.

Builds a tiny random mPLUG-Owl2 checkpoint laid out as the released ones (config.json,
model.safetensors under the release's key names, a SentencePiece tokenizer trained on the spot,
a CLIP preprocessor_config.json; nothing is downloaded), writes a few images of different sizes
and aspect ratios, then computes the five level-word logits
  - with the ORIGINAL code, in a separate Python that has transformers 4.36.2: the checkout's
    MPLUGOwl2LlamaForCausalLM (loaded with no missing or unexpected key), its conversation
    template and tokenizer_image_token, LlamaTokenizer(use_fast=False), expand2square and
    CLIPImageProcessor, as its iqa_eval.py does (and the scorer's prompt), in float32;
  - with qbench's adapter in this environment, batched and one image at a time, in float32;
and prints the token ids and pixels compared, the largest absolute differences of the level
logits, of the scores and of the whole next-token distribution's logits, and batch vs single.
Exits 1 when a difference exceeds --tolerance (1e-4) or an input differs.

The original code is not part of qbench: clone it yourself (either repository works; the
script finds `q_align/` or `src/`), and give a Python with transformers 4.36.2:

    git clone https://github.com/Q-Future/Q-Align /tmp/Q-Align        # or zhiyuanyou/DeQA-Score
    python3 -m venv /tmp/owl2-orig
    /tmp/owl2-orig/bin/pip install torch 'transformers==4.36.2' sentencepiece protobuf \\
        'numpy<2' pillow icecream
    OMP_NUM_THREADS=1 python benchmarks/owl2_equality.py --checkout /tmp/Q-Align \\
        --original-python /tmp/owl2-orig/bin/python

This file runs in both environments: `--role original` is the part the other Python runs (it
imports no qbench).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LEVEL_WORDS = ["excellent", "good", "fair", "poor", "bad"]
QUESTION = "How would you rate the quality of this image?"
ANSWER_PREFIX = " The quality of the image is"
# the scorer shipped with the weights (model.score / scorer.py) writes its prompt out in full
SCORER_PROMPT = ("USER: How would you rate the quality of this image?\n<|image|>\n"
                 "ASSISTANT: The quality of the image is")
IMAGE_SIZES = [(56, 56), (40, 70), (90, 30), (120, 97), (23, 23), (300, 200)]  # (width, height)


# ------------------------------------------------------------------------------ original side

def original_inputs(package: str, folder: Path, images: list[Path]):
    """What the upstream evaluation feeds the model, from the tokenizer and preprocessor in
    `folder`, loaded as the repositories' model/builder.py loads them: (tokenizer, image
    processor, {conversation: (prompt, input_ids)}, level-word ids, pixels)."""
    import importlib

    import torch
    from PIL import Image
    from transformers import AutoTokenizer, CLIPImageProcessor

    conversation = importlib.import_module(f"{package}.conversation")
    mm_utils = importlib.import_module(f"{package}.mm_utils")
    constants = importlib.import_module(f"{package}.constants")
    tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=False)
    image_processor = CLIPImageProcessor.from_pretrained(folder)
    # iqa_eval.py: conversation template, then " The quality of the image is"
    conv = conversation.conv_templates["mplug_owl2"].copy()
    conv.append_message(conv.roles[0], QUESTION + "\n" + constants.DEFAULT_IMAGE_TOKEN)
    conv.append_message(conv.roles[1], None)
    prompts = {name: (text, mm_utils.tokenizer_image_token(
                   text, tokenizer, constants.IMAGE_TOKEN_INDEX, return_tensors="pt").tolist())
               for name, text in (("eval-script", conv.get_prompt() + ANSWER_PREFIX),
                                  ("scorer", SCORER_PROMPT))}
    level_ids = [ids[1] for ids in tokenizer(LEVEL_WORDS)["input_ids"]]
    fill = tuple(int(x * 255) for x in image_processor.image_mean)
    squares = [mm_utils.expand2square(Image.open(path).convert("RGB"), fill) for path in images]
    pixels = torch.cat([image_processor.preprocess(square, return_tensors="pt")["pixel_values"]
                        for square in squares])
    return tokenizer, image_processor, prompts, level_ids, pixels


def run_original(checkout: Path, checkpoint: Path, preprocessor: Path | None,
                 images: list[Path], out: Path) -> None:
    """The upstream evaluation, step by step, with the checkout's own functions (float32)."""
    import importlib

    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(1)
    package = next(p for p in ("q_align", "src") if (checkout / p / "model").is_dir())
    sys.path.insert(0, str(checkout))
    modeling = importlib.import_module(f"{package}.model.modeling_mplug_owl2")
    tokenizer, image_processor, prompts, level_ids, pixels = original_inputs(
        package, checkpoint, images)
    # Q-Align's model constructor fetches a tokenizer and processor from the hub by name (the
    # offline complaint in REFERENCE §3): hand it the local ones instead
    for name, loaded in (("AutoTokenizer", tokenizer), ("CLIPImageProcessor", image_processor)):
        if hasattr(modeling, name):
            setattr(modeling, name, type(name, (), {"from_pretrained": staticmethod(
                lambda *args, _loaded=loaded, **kwargs: _loaded)}))
    # eager attention, as DeQA-Score's README loads it: the code's SDPA branch calls a function
    # it never imports, and transformers 4.36 picks SDPA by default
    model, info = modeling.MPLUGOwl2LlamaForCausalLM.from_pretrained(
        checkpoint, torch_dtype=torch.float32, attn_implementation="eager",
        output_loading_info=True)
    problems = {key: value for key, value in info.items() if value}
    if problems:
        raise SystemExit(f"the original code does not load the checkpoint cleanly: {problems}")
    model.eval()

    np.save(out.with_suffix(".pixels.npy"), pixels.numpy())
    result = {"package": package, "transformers": transformers.__version__,
              "torch": torch.__version__, "level_ids": level_ids, "prompts": {}}
    for conversation_name, (text, input_ids) in prompts.items():
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([input_ids] * len(images)),
                           images=pixels)["logits"][:, -1]
        result["prompts"][conversation_name] = {
            "text": text, "input_ids": input_ids,
            "level_logits": logits[:, level_ids].tolist(), "all_logits": logits.tolist()}
    if preprocessor:  # the released tokenizer (the LLaMA-2 vocabulary) and preprocessor
        _, _, prompts, level_ids, pixels = original_inputs(package, preprocessor, images)
        np.save(out.with_suffix(".released-pixels.npy"), pixels.numpy())
        result["released"] = {"folder": str(preprocessor), "level_ids": level_ids,
                              "input_ids": {name: ids for name, (_, ids) in prompts.items()}}
    out.write_text(json.dumps(result))


# ------------------------------------------------------------------------------ qbench side

def write_images(folder: Path) -> list[Path]:
    """Photographs, flat colours, gradients and noise, at several sizes and aspect ratios."""
    import numpy as np
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(0)
    photos = [data.astronaut(), data.chelsea(), data.coffee()]
    paths = []
    for i, (width, height) in enumerate(IMAGE_SIZES):
        kind = i % 3
        if kind == 0:
            photo = photos[i % len(photos)]
            array = np.asarray(Image.fromarray(photo).resize((width, height), Image.BICUBIC))
        elif kind == 1:
            ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
            array = (ramp * rng.uniform(0.3, 1.0, 3)).astype(np.uint8)
        else:
            array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = folder / f"image{i}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def max_abs(a, b) -> float:
    import numpy as np
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def compare(original: dict, pixels_original, checkpoint: Path, images: list[Path], model: str,
            tolerance: float) -> bool:
    import numpy as np
    import torch
    import transformers
    from PIL import Image

    from qbench import ModelConfig, create_model
    from qbench.backends.vlm import expected_level

    torch.set_num_threads(1)
    pictures = [[Image.open(path).convert("RGB")] for path in images]
    ok = True
    print(f"original: {original['package']}/ of the checkout, transformers "
          f"{original['transformers']}, torch {original['torch']}; qbench: transformers "
          f"{transformers.__version__}, "
          f"torch {torch.__version__}; {len(images)} images, float32")
    for conversation, reference in original["prompts"].items():
        adapter = create_model(model, ModelConfig(model_path=checkpoint, device="cpu", options={
            "dtype": "float32", "conversation": conversation}))
        same_ids = adapter.prompt.input_ids() == reference["input_ids"]
        same_levels = adapter.token_ids == original["level_ids"]
        pixel_diff = max_abs(adapter.image_processor([p[0] for p in pictures]), pixels_original)
        batched = adapter.level_logits(pictures)
        single = torch.cat([adapter.level_logits([p]) for p in pictures])
        everything = adapter.network.next_token_logits(
            adapter.image_processor([p[0] for p in pictures]), adapter.prompt,
            range(adapter.network.config.vocab_size))
        scores, _ = expected_level(batched, (5, 4, 3, 2, 1))
        scores_original, _ = expected_level(torch.tensor(reference["level_logits"]),
                                            (5, 4, 3, 2, 1))
        logit_diff = max_abs(batched, reference["level_logits"])
        score_diff = max_abs(scores, scores_original)
        vocab_diff = max_abs(everything, reference["all_logits"])
        batch_diff = max_abs(batched, single)
        levels = np.asarray(reference["level_logits"])
        print(f"\n[{conversation}] prompt {reference['text']!r}")
        print(f"  prompt token ids identical: {same_ids} ({len(reference['input_ids'])} ids); "
              f"level-word ids identical: {same_levels} {adapter.token_ids}")
        print(f"  pixels max abs diff: {pixel_diff:.3g}")
        spread = float((levels.max(axis=0) - levels.min(axis=0)).max())
        print(f"  level logits range [{levels.min():.3f}, {levels.max():.3f}], largest spread of "
              f"one word's logit across the images {spread:.3f}; original scores "
              f"{', '.join(f'{s:.4f}' for s in scores_original.tolist())}")
        print(f"  max abs diff original vs qbench (batched): level logits {logit_diff:.3g}, "
              f"scores {score_diff:.3g}, all {adapter.network.config.vocab_size} next-token "
              f"logits {vocab_diff:.3g}")
        print(f"  max abs diff qbench batch vs single: level logits {batch_diff:.3g}")
        ok &= same_ids and same_levels and pixel_diff == 0.0 and max(
            logit_diff, score_diff, vocab_diff, batch_diff) <= tolerance
    return ok


def compare_released_inputs(original: dict, pixels_original, images: list[Path]) -> bool:
    """Prompt ids, level-word ids and pixels from a released tokenizer and preprocessor: the
    original's LlamaTokenizer(use_fast=False) and CLIPImageProcessor against qbench's."""
    from PIL import Image

    from qbench.baselines.mplug_owl2 import Owl2ImageProcessor, Owl2Tokenizer
    from qbench.baselines.qalign import LEVEL_WORDS, OWL2_CONVERSATIONS

    folder = Path(original["folder"])
    tokenizer, processor = Owl2Tokenizer(folder), Owl2ImageProcessor.from_folder(folder)
    levels = [tokenizer.first_token(word) for word in LEVEL_WORDS]
    pixel_diff = max_abs(processor([Image.open(p).convert("RGB") for p in images]),
                         pixels_original)
    print(f"\n[released inputs] {folder}: {tokenizer.sp.get_piece_size()} pieces, "
          f"{processor.crop_size} px")
    ok = levels == original["level_ids"] and pixel_diff == 0.0
    for name, ids in original["input_ids"].items():
        mine = tokenizer.prompt(OWL2_CONVERSATIONS[name]).input_ids()
        print(f"  [{name}] prompt token ids identical: {mine == ids} {ids}")
        ok &= mine == ids
    print(f"  level-word ids identical: {levels == original['level_ids']} {levels}")
    print(f"  pixels ({len(images)} images) max abs diff: {pixel_diff:.3g}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True,
                        help="a clone of Q-Align or DeQA-Score (holds q_align/ or src/)")
    parser.add_argument("--original-python", type=Path,
                        help="a Python with transformers 4.36.2 for the original code")
    parser.add_argument("--preprocessor", type=Path,
                        help="a released tokenizer.model + preprocessor_config.json folder to "
                             "compare inputs on too (default: the checkout's preprocessor/, "
                             "which DeQA-Score ships)")
    parser.add_argument("--model", default="qalign", choices=["qalign", "deqa-score"])
    parser.add_argument("--workdir", type=Path, help="keep the checkpoint and images here")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--role", choices=["compare", "original"], default="compare")
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "original":
        run_original(args.checkout.resolve(), args.checkpoint, args.preprocessor, args.images,
                     args.out)
        return
    if args.original_python is None:
        parser.error("--original-python is required (a Python with transformers==4.36.2)")
    preprocessor = args.preprocessor or args.checkout / "preprocessor"
    preprocessor = preprocessor.resolve() if (preprocessor / "tokenizer.model").is_file() else None

    import numpy as np

    from qbench.baselines.mplug_owl2 import write_tiny_checkpoint

    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = write_tiny_checkpoint(work / "tiny-mplug-owl2", seed=args.seed)
        images = write_images(work)
        out = work / "original.json"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        subprocess.run([str(args.original_python), __file__, "--role", "original",
                        "--checkout", str(args.checkout), "--checkpoint", str(checkpoint),
                        *(["--preprocessor", str(preprocessor)] if preprocessor else []),
                        "--out", str(out), "--images", *map(str, images)], check=True, env=env)
        original = json.loads(out.read_text())
        ok = compare(original, np.load(out.with_suffix(".pixels.npy")), checkpoint, images,
                     args.model, args.tolerance)
        if preprocessor:
            ok &= compare_released_inputs(original["released"], np.load(
                out.with_suffix(".released-pixels.npy")), images)
    print(f"\n{'PASS' if ok else 'FAIL'}: identical inputs, every difference <= "
          f"{args.tolerance:g}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
