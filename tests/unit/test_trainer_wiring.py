"""The trainer's wiring, pinned on a real run: two GRPO steps of a tiny random Qwen2.5-VL through
`qbench.trainer.train.train` (qbench's data path, prompts, rewards and GRPOConfig, TRL's
GRPOTrainer), recorded from inside TRL by a subclass of the trainer class qbench builds.

What is checked, each against a computation of its own that does not go through TRL:
- every completion is scored against its own sample: within each group of N (TRL repeats each
  prompt N times), the reward functions receive one sample id, that sample's ground truth as
  qbench's task reads it and that sample's image in the prompt;
- TRL's advantages equal the released recipe's, recomputed from the rewards of each row's own
  ground truth: (r − group mean) / (group std + 1e-4);
- the per-token log-probabilities the loss uses equal a forward pass, outside TRL, of the
  row's own prompt and image followed by its completion, and differ with another sample's image;
- on a fixed batch, TRL's loss and its gradient equal the released formula (U: tr.py:680-700 in
  trainer/config.py's notation): per-token −min(ρA, clip(ρ)A) + β·k3 KL, no importance-ratio
  factor on the KL, the mean over each sequence's tokens, then over sequences;
- a prompt over 1,024 tokens (a KonIQ-size image at the recipe's pixel limits) reaches the loss
  whole, and the completion there is exactly what was generated.

A random model never writes the answer format, so the recipe's rewards are 0 on every
completion; a test reward that depends on each row's ground truth and differs between the
completions of a group (`truth_distance`) gives the advantages something to check.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from qbench.core.protocol import build_messages
from qbench.core.registry import get_task
from qbench.testing.tiny import build_tiny_qwen2_5_vl
from qbench.trainer import train as train_module
from qbench.trainer.config import (
    MAX_PIXELS,
    MIN_PIXELS,
    DataSettings,
    GRPOSettings,
    ModelSettings,
    ScoreSource,
    TrainConfig,
)
from qbench.trainer.rewards import reward_functions

pytestmark = pytest.mark.slow

GROUP = 4           # completions per prompt
PROMPTS = 2         # prompts per step
STEPS = 2
EPS = 1e-4          # U: tr.py:611, the std's offset


def predicted(ids: list[int]) -> float:
    """A 'rating' in [1, 5] read off the token ids, different for almost every completion (so
    that where it falls against the truth changes the advantages of a whole group)."""
    return 1 + 4 * ((sum(ids) * 0.6180339887) % 1)


@dataclass
class Recording:
    reward_calls: list[dict[str, Any]] = field(default_factory=list)
    generated: list[dict[str, Any]] = field(default_factory=list)
    loss_inputs: list[dict[str, Any]] = field(default_factory=list)
    loss_logps: list[torch.Tensor] = field(default_factory=list)
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)   # the policy's weights
    trainer: Any = None
    active: bool = True     # off once training ends: the tests' own calls are not recorded

    def truth_distance(self, completion_ids, mos_norm, id, prompts, **_) -> list[float]:
        """The test reward: −(predicted − ground truth)², recorded with what TRL passed."""
        self.reward_calls.append({"ids": list(id), "mos_norm": list(mos_norm),
                                  "completion_ids": [list(c) for c in completion_ids],
                                  "prompt_images": [prompt_images(p) for p in prompts]})
        return [-(predicted(list(c)) - float(m)) ** 2
                for c, m in zip(completion_ids, mos_norm, strict=True)]


def prompt_images(messages: list[dict]) -> list[Image.Image]:
    return [part["image"] for m in messages if isinstance(m["content"], list)
            for part in m["content"] if part.get("type") == "image"]


def detached(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in batch.items()}


def recording_trainer_class(base: type, record: Recording) -> type:
    class RecordingTrainer(base):
        def _generate_and_score_completions(self, inputs):
            record.trainer = self
            output = super()._generate_and_score_completions(inputs)
            record.generated.append({"ids": [row["id"] for row in inputs], **detached(output)})
            return output

        def _compute_loss(self, model, inputs):
            if record.active:
                record.loss_inputs.append(detached(inputs))
                weights = self.accelerator.unwrap_model(model).state_dict()
                record.states.append({k: v.detach().clone() for k, v in weights.items()})
            return super()._compute_loss(model, inputs)

        def _get_per_token_logps_and_entropies(self, *args, compute_entropy=False, **kwargs):
            out = super()._get_per_token_logps_and_entropies(
                *args, compute_entropy=compute_entropy, **kwargs)
            if compute_entropy and record.active:  # the call _compute_loss makes
                record.loss_logps.append(out[0].detach().clone())
            return out

    return RecordingTrainer


def write_koniq(folder: Path, count: int, size: tuple[int, int] = (56, 84)) -> None:
    """A KonIQ-layout folder: `count` training images of clearly different content and MOS."""
    images = folder / "1024x768"
    images.mkdir(parents=True)
    rows = []
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 256, size + (3,), dtype=np.uint8)
        pixels[..., i % 3] = 255 - 60 * i   # each image its own dominant colour
        Image.fromarray(pixels).save(images / f"{i}.png")
        rows.append(f"{i}.png,{10 + 80 * i / max(count - 1, 1):.1f},training\n")
    (folder / "koniq10k_distributions_sets.csv").write_text("image_name,MOS,set\n"
                                                            + "".join(rows))


@dataclass
class Run:
    record: Recording
    truth: dict[str, float]          # sample id → [1, 5] ground truth, as qbench's task reads it
    image: dict[str, Path]           # sample id → image file
    processor: Any
    config: TrainConfig
    base_model: Path

    def policy(self, step: int) -> torch.nn.Module:
        """The policy as the loss of `step` saw it, rebuilt outside TRL (TRL patches the live
        model's forward)."""
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_pretrained(self.base_model, dtype=torch.float32)
        model.load_state_dict(self.record.states[step])
        return model.eval()


def record_training(config: TrainConfig) -> Recording:
    """Train as configured, through qbench's `train`, with TRL's trainer class recorded."""
    record = Recording()
    real_class = train_module.grpo_trainer_class
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "grpo_trainer_class",
                      lambda: recording_trainer_class(real_class(), record))
        train_module.train(config, extra_rewards=[(record.truth_distance, 1.0)],
                           save_final_model=False)
    record.active = False
    return record


def tiny_config(model: Path, koniq: Path, output_dir: Path,
                pixels: tuple[int | None, int | None] = (None, None), **grpo: Any) -> TrainConfig:
    """The recipe on a CPU; `pixels` (min, max) None: the tiny checkpoint's own limits."""
    return TrainConfig(
        model=ModelSettings(path=model, dtype="float32", min_pixels=pixels[0],
                            max_pixels=pixels[1]),
        output_dir=output_dir, resume="never",
        data=DataSettings(score=[ScoreSource(folder=koniq)], seed=3),
        grpo=GRPOSettings(**{"gradient_accumulation_steps": 1, "learning_rate": 1e-2,
                             "bf16": False, "use_cpu": True, "seed": 5, **grpo}))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny") / "qwen2_5_vl")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model) -> Run:
    root = tmp_path_factory.mktemp("wiring")
    write_koniq(root / "koniq", count=PROMPTS * STEPS)
    config = tiny_config(tiny_model, root / "koniq", root / "run", num_generations=GROUP,
                         per_device_train_batch_size=GROUP * PROMPTS, max_steps=STEPS,
                         save_steps=STEPS, max_completion_length=12)
    samples = get_task("koniq").load_split(root / "koniq", "train").samples
    record = record_training(config)
    return Run(record, {s.id: s.mos_norm for s in samples},
               {s.id: Path(s.images[0]) for s in samples},
               record.trainer.processing_class, config, tiny_model)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# ------------------------------------------------------------------------------ alignment

def test_each_group_is_one_sample_scored_against_its_own_truth_and_image(run):
    calls = run.record.reward_calls
    assert len(calls) == STEPS
    seen = set()
    for call in calls:
        ids = call["ids"]
        assert len(ids) == GROUP * PROMPTS
        for g in range(PROMPTS):
            group = slice(g * GROUP, (g + 1) * GROUP)
            assert len(set(ids[group])) == 1, ids   # TRL's repetition: N rows per prompt
            seen.add(ids[g * GROUP])
        for sample_id, truth, images in zip(ids, call["mos_norm"], call["prompt_images"],
                                            strict=True):
            assert truth == pytest.approx(run.truth[sample_id])
            assert len(images) == 1
            with Image.open(run.image[sample_id]) as own:
                assert np.array_equal(pixels(images[0]), pixels(own))
        # the completions of a group are N samples, not one completion repeated
        for g in range(PROMPTS):
            group = call["completion_ids"][g * GROUP:(g + 1) * GROUP]
            assert len({tuple(c) for c in group}) > 1
    assert seen == set(run.truth)   # one epoch: every sample was a prompt once


# ------------------------------------------------------------------------------ advantages

def recipe_rewards(run: Run, ids: list[str], completion_ids: list[list[int]]) -> torch.Tensor:
    """Σ weight × reward per row, each row scored against the truth of its own sample id (read
    from the task, not from what TRL passed), through qbench's reward functions."""
    texts = run.processor.batch_decode(completion_ids, skip_special_tokens=True)
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    truths = [run.truth[i] for i in ids]
    funcs, weights = reward_functions(run.config.rewards, ["score"])
    total = torch.zeros(len(ids), dtype=torch.float64)
    for func, weight in zip(funcs, weights, strict=True):
        values = func(completions=completions, kind=["score"] * len(ids), mos_norm=truths)
        total += weight * torch.tensor(values, dtype=torch.float64)
    distance = [-(predicted(c) - t) ** 2 for c, t in zip(completion_ids, truths, strict=True)]
    return total + torch.tensor(distance, dtype=torch.float64)


def test_trl_advantages_equal_the_recipe_recomputed_from_each_rows_truth(run):
    for generated in run.record.generated:
        ids = generated["ids"]
        mask = generated["completion_mask"].bool()
        completion_ids = [row[m].tolist() for row, m in zip(generated["completion_ids"], mask,
                                                            strict=True)]
        rewards = recipe_rewards(run, ids, completion_ids).view(PROMPTS, GROUP)
        mean = rewards.mean(dim=1, keepdim=True)
        std = rewards.std(dim=1, keepdim=True)             # unbiased, as torch's default
        expected = ((rewards - mean) / (std + EPS)).flatten()
        trl = generated["advantages"].double()
        assert trl.abs().max() > 0.5                        # there is a signal to compare
        torch.testing.assert_close(trl, expected, rtol=1e-4, atol=1e-4)
        # the same rewards scored against the other group's truth give other advantages
        swapped = recipe_rewards(run, ids[GROUP:] + ids[:GROUP], completion_ids)
        swapped = swapped.view(PROMPTS, GROUP)
        other = ((swapped - swapped.mean(1, keepdim=True))
                 / (swapped.std(1, keepdim=True) + EPS)).flatten()
        assert (trl - other).abs().max() > 1e-2


# ------------------------------------------------------------------------------ log-probs

def manual_logps(run: Run, policy: torch.nn.Module, image_path: Path,
                 completion: list[int]) -> torch.Tensor:
    """log p(completion token | prompt with this image, earlier completion tokens), by a plain
    forward of the processor's input, outside TRL."""
    processor = run.processor
    text = processor.apply_chat_template(build_messages("score"), add_generation_prompt=True,
                                         tokenize=False)
    with Image.open(image_path) as image:
        prompt = processor(text=[text], images=[image.convert("RGB")], return_tensors="pt")
    ids = torch.cat([prompt["input_ids"], torch.tensor([completion])], dim=1)
    # which tokens are image tokens (the multimodal rotary positions follow it); none of the
    # completion's
    kinds = torch.cat([prompt["mm_token_type_ids"], torch.zeros(1, len(completion),
                                                                 dtype=torch.long)], dim=1)
    with torch.no_grad():
        logits = policy(input_ids=ids, attention_mask=torch.ones_like(ids),
                        pixel_values=prompt["pixel_values"], mm_token_type_ids=kinds,
                        image_grid_thw=prompt["image_grid_thw"]).logits
    start = prompt["input_ids"].shape[1]
    logps = logits[0, start - 1:-1].float().log_softmax(-1)
    return logps.gather(1, torch.tensor(completion)[:, None])[:, 0]


def completion_owner(run: Run) -> dict[tuple[int, ...], str]:
    """Each generated completion's sample id (from the reward calls, before TRL shuffles the
    rows for the loss)."""
    owner = {}
    for call in run.record.reward_calls:
        for sample_id, completion in zip(call["ids"], call["completion_ids"], strict=True):
            owner[tuple(completion)] = sample_id
    return owner


def test_loss_log_probs_are_those_of_each_rows_own_image(run):
    owner = completion_owner(run)
    ids_sorted = sorted(run.truth)
    assert len(run.record.loss_inputs) == len(run.record.states) == STEPS
    for step, (inputs, trl_logps) in enumerate(zip(run.record.loss_inputs, run.record.loss_logps,
                                                   strict=True)):
        policy = run.policy(step)
        gaps_own, gaps_other = [], []
        for row in range(inputs["completion_ids"].shape[0]):
            mask = inputs["completion_mask"][row].bool()
            completion = inputs["completion_ids"][row][mask].tolist()
            sample_id = owner[tuple(completion)]
            trl = trl_logps[row][mask]
            own = manual_logps(run, policy, run.image[sample_id], completion)
            gaps_own.append((trl - own).abs().max().item())
            other_id = ids_sorted[(ids_sorted.index(sample_id) + 2) % len(ids_sorted)]
            other = manual_logps(run, policy, run.image[other_id], completion)
            gaps_other.append((trl - other).abs().max().item())
        print("OWN", max(gaps_own), "OTHER", min(gaps_other))
        assert max(gaps_own) < 1e-4, gaps_own
        assert min(gaps_other) > 1e-3, gaps_other


# ------------------------------------------------------------------------------ the loss

def released_loss(logps: torch.Tensor, ref: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, beta: float, epsilon: float, *,
                  per_sequence: bool = True, ratio_on_kl: bool = False) -> torch.Tensor:
    """U: tr.py:680-700 with num_iterations 1 (old log-probs = the current ones, detached)."""
    ratio = torch.exp(logps - logps.detach())
    a = advantages[:, None]
    policy = -torch.min(ratio * a, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * a)
    kl = torch.exp(ref - logps) - (ref - logps) - 1
    if ratio_on_kl:   # TRL's use_bias_correction_kl, which the recipe leaves off
        kl = kl * ratio
    per_token = policy + beta * kl
    if per_sequence:
        return ((per_token * mask).sum(1) / mask.sum(1)).mean()
    return (per_token * mask).sum() / mask.sum()


def fixed_batch(inputs: dict[str, Any], logps: torch.Tensor) -> dict[str, Any]:
    """A recorded loss batch made to tell the formulas apart: completions of different lengths,
    a reference model 0.5 nats away (in both directions), fixed advantages."""
    batch = detached(inputs)
    rows, length = batch["completion_mask"].shape
    keep = torch.arange(length)[None, :] < torch.linspace(3, length, rows).long()[:, None]
    batch["completion_mask"] = batch["completion_mask"] * keep
    signs = torch.where(torch.arange(length) % 2 == 0, 0.5, -0.5)
    batch["ref_per_token_logps"] = logps.detach() + signs
    batch["advantages"] = torch.linspace(-1.5, 1.0, rows)
    batch.pop("old_per_token_logps", None)
    return batch


def gradient(loss: torch.Tensor, policy: torch.nn.Module) -> torch.Tensor:
    params = [p for p in policy.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params, strict=True)])


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("advantages", ["fixed", "zero"])
def test_loss_on_a_fixed_batch_is_the_released_formula(run, advantages):
    """TRL's `_compute_loss` (the trainer's model, as training left it) against the formula
    written out, on per-token log-probabilities from the same model."""
    trainer = run.record.trainer
    assert trainer.beta == 1e-3 and trainer.loss_type == "grpo"
    assert trainer.current_gradient_accumulation_steps == 1   # no division to undo
    policy = trainer.model.train()
    inputs = run.record.loss_inputs[0]

    def per_token_logps(batch: dict[str, Any]) -> torch.Tensor:
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            policy, torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
            batch["completion_ids"].shape[1], pixel_values=batch["pixel_values"],
            image_grid_thw=batch["image_grid_thw"], num_images=batch["num_images"],
            mm_token_type_ids=batch.get("mm_token_type_ids"))
        return logps

    batch = fixed_batch(inputs, per_token_logps(inputs))
    if advantages == "zero":   # the KL term alone: where an importance ratio on it would show
        batch["advantages"] = torch.zeros_like(batch["advantages"])
    trl_loss = trainer._compute_loss(policy, batch)
    trl_grad = gradient(trl_loss, policy)

    logps = per_token_logps(batch)
    mask = batch["completion_mask"].float()

    def formula(**variant: bool) -> torch.Tensor:
        return released_loss(logps, batch["ref_per_token_logps"], batch["advantages"], mask,
                             beta=1e-3, epsilon=0.2, **variant)

    assert trl_loss.item() == pytest.approx(formula().item(), rel=1e-5, abs=1e-8)
    assert relative_gap(trl_grad, gradient(formula(), policy)) < 1e-4
    # the check tells the released formula from its neighbours
    if advantages == "fixed":
        token_mean = formula(per_sequence=False).item()
        assert not math.isclose(trl_loss.item(), token_mean, rel_tol=1e-3)
    else:
        assert relative_gap(trl_grad, gradient(formula(ratio_on_kl=True), policy)) > 0.05



# ------------------------------------------------------------------------------ long prompts

def test_a_koniq_size_prompt_is_neither_truncated_nor_split_inside(tmp_path, tiny_model):
    """A 1024 x 768 image at the recipe's pixel limits is about 1,000 image tokens, and its
    prompt over 1,024 tokens. The released trainer cuts prompts to 1,024 tokens and splits
    prompt from completion at that length, so the rest of such a prompt counts as completion
    (U: tr.py:510-523). Here the prompt the loss sees is the whole processor prompt, and the
    completion is exactly what was generated (what the rewards were given)."""
    write_koniq(tmp_path / "koniq", count=2, size=(768, 1024))   # one step takes one image
    config = tiny_config(tiny_model, tmp_path / "koniq", tmp_path / "run",
                         pixels=(MIN_PIXELS, MAX_PIXELS), num_generations=2,
                         per_device_train_batch_size=2, max_steps=1, save_steps=1,
                         max_completion_length=6)
    record = record_training(config)
    processor = record.trainer.processing_class
    text = processor.apply_chat_template(build_messages("score"), add_generation_prompt=True,
                                         tokenize=False)
    (inputs,), (call,) = record.loss_inputs, record.reward_calls
    image_of = {s.id: s.images[0]
                for s in get_task("koniq").load_split(tmp_path / "koniq", "train").samples}
    with Image.open(image_of[call["ids"][0]]) as image:
        whole = processor(text=[text], images=[image.convert("RGB")])["input_ids"][0]
    assert len(whole) > 1024
    for row in range(2):
        prompt = inputs["prompt_ids"][row][inputs["prompt_mask"][row].bool()].tolist()
        assert prompt == list(whole)
        completion = inputs["completion_ids"][row][inputs["completion_mask"][row].bool()]
        assert completion.tolist() in call["completion_ids"]
