"""`qalign` and `deqa-score` on qbench's own mPLUG-Owl2, with a tiny random checkpoint laid out
as the released ones (built offline): batched scores equal one-at-a-time scores and a softmax
taken by hand; the loader reads the release's key names from safetensors or sharded .bin and
refuses anything else in one line; the prompt keeps the space SentencePiece encodes before
" ASSISTANT:"; images are padded with the mean colour; `qbench run` scores with it; the
weights' own code runs only on request (through a stand-in here: the original code is not on
this machine; benchmarks/owl2_equality.py compares with it)."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TOY_PLUGIN
from qbench import ModelConfig, ModelError, Sample, create_model
from qbench.baselines.mplug_owl2 import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_INDEX,
    Owl2ImageProcessor,
    Owl2Tokenizer,
    load_mplug_owl2,
    write_tiny_checkpoint,
)
from qbench.baselines.qalign import LEVEL_WORDS, OWL2_CONVERSATIONS, SWAPPED_PROMPT
from qbench.cli.main import main

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("owl2") / "tiny-owl2", seed=3)


def photos(sizes, seed=0):
    """(width, height) images: smooth colour ramps plus noise, unlike each other."""
    rng = np.random.default_rng(seed)
    out = []
    for width, height in sizes:
        ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0, 255, 3)
        noise = rng.normal(0, rng.uniform(5, 60), (height, width, 3))
        out.append([Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8))])
    return out


def samples(n):
    return [Sample(id=f"s{i}", task="t", kind="score", images=("x.png",)) for i in range(n)]


def scorer(path: Path, name: str = "qalign", **options):
    return create_model(name, ModelConfig(model_path=path, device="cpu", options=options))


def copy_checkpoint(tiny: Path, folder: Path) -> Path:
    shutil.copytree(tiny, folder)
    return folder


# ------------------------------------------------------------------------ scoring

def test_batched_scores_equal_one_image_at_a_time(tiny):
    model = scorer(tiny)
    batch = photos([(40, 70), (56, 56), (90, 30), (120, 97), (23, 23)])
    together = model.predict(samples(5), batch)
    alone = [model.predict(samples(1), [imgs])[0] for imgs in batch]
    assert all(p.ok and 1 <= p.score <= 5 for p in together)
    assert [p.score for p in together] == pytest.approx([p.score for p in alone], abs=1e-5)
    for p in together:
        assert sum(p.extra["level_probs"].values()) == pytest.approx(1, abs=1e-4)
    # the images matter: otherwise equal scores would prove nothing
    assert max(p.score for p in together) - min(p.score for p in together) > 1e-3


def test_score_is_the_softmax_of_the_level_words_first_pieces(tiny):
    model = scorer(tiny, conversation="scorer")
    batch = photos([(64, 48), (30, 60)], seed=1)
    predictions = model.predict(samples(2), batch)
    tokenizer = Owl2Tokenizer(tiny)
    network = load_mplug_owl2(tiny, "cpu", torch.float32)
    pixels = Owl2ImageProcessor.from_folder(tiny)([imgs[0] for imgs in batch])
    everything = network.next_token_logits(pixels, tokenizer.prompt(OWL2_CONVERSATIONS["scorer"]),
                                           range(network.config.vocab_size))
    # the upstream scripts' ids: tokenizer(word).input_ids[1], the piece after BOS
    ids = [tokenizer.sp.encode(word)[0] for word in LEVEL_WORDS]
    expected = torch.softmax(everything[:, ids], -1) @ torch.tensor([5.0, 4, 3, 2, 1])
    assert [p.score for p in predictions] == pytest.approx(expected.tolist(), abs=1e-5)
    assert model.settings()["implementation"] == "qbench"
    assert model.settings()["prompt"] == OWL2_CONVERSATIONS["scorer"]


def test_bfloat16_runs_and_stays_near_float32(tiny):
    batch = photos([(50, 40), (40, 50), (64, 64)], seed=2)
    exact = [p.score for p in scorer(tiny).predict(samples(3), batch)]
    half = scorer(tiny, dtype="bfloat16")
    assert half.settings()["dtype"] == "bfloat16"
    assert [p.score for p in half.predict(samples(3), batch)] == pytest.approx(exact, abs=0.05)


def test_qbench_run_scores_a_task_with_the_tiny_checkpoint(tiny, tmp_path, capsys):
    data = tmp_path / "data" / "toy"
    data.mkdir(parents=True)
    lines = ["name,mos"]
    for i, (imgs,) in enumerate(photos([(40, 30), (30, 40), (32, 32), (50, 20)], seed=4)):
        imgs.save(data / f"img{i}.png")
        lines.append(f"img{i}.png,{1 + i}")
    (data / "labels.csv").write_text("\n".join(lines) + "\n")
    code = main(["--include", str(TOY_PLUGIN), "run", "--model",
                 "deqa-score", "--model-path", str(tiny), "--tasks", "toy", "--data-root",
                 str(tmp_path / "data"), "--output", str(tmp_path / "results"), "--device", "cpu",
                 "--batch-size", "3", "--no-progress"])
    assert code in (0, None)
    [run_dir] = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["status"] == "ok" and 1 <= r["score"] <= 5 for r in rows)
    settings = json.loads((run_dir / "manifest.json").read_text())["model_settings"]
    assert settings["implementation"] == "qbench" and settings["dtype"] == "float32"


# ------------------------------------------------------------------------ prompt and images

def test_eval_script_prompt_keeps_the_space_before_assistant(tiny):
    assert OWL2_CONVERSATIONS["eval-script"] == ("USER: How would you rate the quality of this "
                                                 "image?\n<|image|> ASSISTANT: The quality of "
                                                 "the image is")
    assert OWL2_CONVERSATIONS["scorer"].endswith("\n<|image|>\nASSISTANT: The quality of the "
                                                 "image is")
    tokenizer = Owl2Tokenizer(tiny)
    prompt = tokenizer.prompt(OWL2_CONVERSATIONS["eval-script"])
    def pieces(ids):
        return "".join(tokenizer.sp.id_to_piece(i) for i in ids)

    assert prompt.prefix[0] == tokenizer.sp.bos_id()
    # SentencePiece's dummy prefix, then the text as it is: " ASSISTANT" keeps its own space
    # (transformers 5's converted LlamaTokenizer merges the two and shifts every logit)
    assert pieces(prompt.suffix) == "▁▁ASSISTANT:▁The▁quality▁of▁the▁image▁is"
    assert pieces(prompt.prefix[1:]).startswith("▁USER:")
    ids = prompt.input_ids()
    assert ids.count(IMAGE_INDEX) == 1 and ids.index(IMAGE_INDEX) == len(prompt.prefix)
    with pytest.raises(Exception, match="exactly one"):
        tokenizer.prompt("no image here")


def test_images_are_padded_with_the_mean_colour_then_normalised(tiny):
    processor = Owl2ImageProcessor.from_folder(tiny)
    side = processor.crop_size
    pixels = processor([Image.new("RGB", (side // 2, side), (255, 0, 0))])
    assert pixels.shape == (1, 3, side, side) and pixels.dtype == torch.float32
    mean, std = np.array(CLIP_MEAN, np.float32), np.array(CLIP_STD, np.float32)
    fill = (np.array([int(255 * m) for m in CLIP_MEAN]) * (1 / 255)).astype(np.float32)
    red = (np.array([1.0, 0.0, 0.0], np.float32) - mean) / std
    assert pixels[0, :, side // 2, 0].numpy() == pytest.approx((fill - mean) / std, abs=1e-6)
    assert pixels[0, :, side // 2, side // 2].numpy() == pytest.approx(red, abs=1e-6)


# ------------------------------------------------------------------------ the loader

RELEASED_KEYS = [  # key names of the released checkpoints (the original module layout)
    "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
    "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.multiway.1.weight",
    "model.layers.0.self_attn.v_proj.multiway.0.weight", "model.layers.0.mlp.gate_proj.weight",
    "model.layers.0.input_layernorm.multiway.1.weight",
    "model.layers.1.post_attention_layernorm.multiway.0.weight",
    "model.vision_model.embeddings.cls_token", "model.vision_model.embeddings.patch_embed.weight",
    "model.vision_model.embeddings.position_embedding",
    "model.vision_model.encoder.layers.0.self_attn.query_key_value.weight",
    "model.vision_model.encoder.layers.1.mlp.fc2.bias", "model.vision_model.post_layernorm.bias",
    "model.visual_abstractor.query_embeds", "model.visual_abstractor.vit_eos",
    "model.visual_abstractor.visual_fc.weight",
    "model.visual_abstractor.encoder.layers.0.crossattention.attention.k_pos_embed",
    "model.visual_abstractor.encoder.layers.0.crossattention.normk.weight",
    "model.visual_abstractor.encoder.layers.1.crossattention.output.mlp.ffn_ln.bias",
    "model.visual_abstractor.encoder.layers.1.crossattention.output.norm2.weight",
]


def state_of(tiny: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(tiny / "model.safetensors"))


def test_tiny_checkpoint_uses_the_released_key_names(tiny):
    keys = set(state_of(tiny))
    assert set(RELEASED_KEYS) <= keys
    config = json.loads((tiny / "config.json").read_text())
    assert config["model_type"] == "mplug_owl2"
    assert set(config["visual_config"]) == {"visual_model", "visual_abstractor"}


def test_sharded_bin_checkpoint_loads_like_safetensors(tiny, tmp_path):
    """Older releases: pytorch_model-0000N-of-0000M.bin with an index, rotary frequencies saved,
    no position tables (recomputed)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    state = state_of(tiny)
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    state = {k: v for k, v in state.items() if not k.endswith("pos_embed")}
    keys = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": keys[::2],
              "pytorch_model-00002-of-00002.bin": keys[1::2]}
    for name, names in shards.items():
        torch.save({k: state[k].to(torch.bfloat16) for k in names}, folder / name)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"weight_map": {k: name for name, names in shards.items() for k in names}}))
    shutil.copy(tiny / "config.json", folder)
    pixels = torch.randn(2, 3, 56, 56)
    prompt = Owl2Tokenizer(tiny).prompt(OWL2_CONVERSATIONS["eval-script"])
    from_bin = load_mplug_owl2(folder, "cpu", torch.float32)
    reference = load_mplug_owl2(tiny, "cpu", torch.float32)
    for name, table in reference.named_buffers():  # recomputed = what the checkpoint carried
        assert torch.equal(dict(from_bin.named_buffers())[name], table)
    # bfloat16 storage: the same network up to that rounding
    assert torch.allclose(from_bin.next_token_logits(pixels, prompt, range(50)),
                          reference.next_token_logits(pixels, prompt, range(50)), atol=0.05)


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("model.layers.1.mlp.up_proj.weight"), "1 missing"),
    (lambda s: s.update({"model.extra.weight": torch.zeros(2)}), "1 unknown"),
    (lambda s: s.update({"lm_head.weight": torch.zeros(3, 3)}), "has shape"),
])
def test_damaged_checkpoints_are_refused_in_one_line(tiny, tmp_path, damage, message):
    from safetensors.torch import save_file
    folder = copy_checkpoint(tiny, tmp_path / "damaged")
    state = state_of(tiny)
    damage(state)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match=message) as info:
        scorer(folder)
    assert "\n" not in str(info.value) and str(info.value).startswith("qalign:")


def test_missing_files_and_other_models_are_refused(tiny, tmp_path):
    other = copy_checkpoint(tiny, tmp_path / "llava")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"model_type": "llava"}))
    with pytest.raises(ModelError, match="not 'mplug_owl2'"):
        scorer(other)
    bare = copy_checkpoint(tiny, tmp_path / "bare")
    (bare / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="has no weights"):
        scorer(bare)
    small = copy_checkpoint(tiny, tmp_path / "small")
    (small / "config.json").write_text(json.dumps(config | {"vocab_size": 100}))
    with pytest.raises(ModelError, match="not a pair"):  # another model's tokenizer
        scorer(small)


def test_tokenizer_and_preprocessor_may_live_in_another_folder(tiny, tmp_path):
    """DeQA-Score's evaluation reads them from its repository's preprocessor/ folder."""
    weights = copy_checkpoint(tiny, tmp_path / "weights")
    preprocessor = tmp_path / "preprocessor"
    preprocessor.mkdir()
    for name in ("tokenizer.model", "tokenizer_config.json", "preprocessor_config.json"):
        (weights / name).rename(preprocessor / name)
    with pytest.raises(ModelError, match="preprocessor=DIR"):
        scorer(weights, "deqa-score")
    batch = photos([(40, 40), (20, 50)])
    moved = scorer(weights, "deqa-score", preprocessor=str(preprocessor))
    assert [p.score for p in moved.predict(samples(2), batch)] == pytest.approx(
        [p.score for p in scorer(tiny, "deqa-score").predict(samples(2), batch)], abs=1e-6)


# ------------------------------------------------------------------------ the weights' own code

STAND_IN_CODE = textwrap.dedent('''
    """A stand-in with mPLUG-Owl2's calling convention: input_ids carry -200 where the image
    goes, pixel values come as `images`."""
    import torch
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.modeling_outputs import CausalLMOutput

    class StandInConfig(PretrainedConfig):
        model_type = "owl2_stand_in"

        def __init__(self, vocab_size=600, **kwargs):
            self.vocab_size = vocab_size
            super().__init__(**kwargs)

    class StandInOwl2(PreTrainedModel):
        config_class = StandInConfig
        seen = []

        def __init__(self, config):
            super().__init__(config)
            self.embed = torch.nn.Embedding(config.vocab_size, 8)
            self.image = torch.nn.Linear(3, 8)
            self.head = torch.nn.Linear(8, config.vocab_size)
            self.post_init()

        def _init_weights(self, module):
            pass

        def forward(self, input_ids, images):
            StandInOwl2.seen.append((input_ids.clone(), images.clone()))
            text = self.embed(input_ids.clamp(min=0))
            image = self.image(images.mean(dim=(2, 3)))[:, None, :]
            hidden = torch.where((input_ids == -200)[..., None], image, text).cumsum(dim=1)
            return CausalLMOutput(logits=self.head(hidden))
''')


def write_stand_in(folder: Path, tiny: Path, code: str = STAND_IN_CODE) -> Path:
    """The tiny checkpoint's tokenizer and preprocessor with stand-in remote code and weights."""
    import importlib.util
    folder.mkdir()
    (folder / "owl2_stand_in.py").write_text(code)
    spec = importlib.util.spec_from_file_location("owl2_stand_in_local",
                                                  folder / "owl2_stand_in.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    module.StandInOwl2(module.StandInConfig()).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "owl2_stand_in.StandInConfig",
                          "AutoModelForCausalLM": "owl2_stand_in.StandInOwl2"}
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.model", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(tiny / name, folder)
    return folder


def test_remote_code_runs_only_when_asked_and_pinned(tmp_path, tiny):
    folder = write_stand_in(tmp_path / "owl2", tiny)
    with pytest.raises(ModelError, match="not 'mplug_owl2'"):  # by default: qbench's network
        scorer(folder)
    with pytest.raises(ModelError, match="applies with --model-arg trust_remote_code=true"):
        scorer(folder, code_sha256="0" * 64)
    with pytest.raises(ModelError, match="not the pinned"):
        scorer(folder, trust_remote_code=True, code_sha256="0" * 64)
    buggy = write_stand_in(tmp_path / "buggy", tiny,
                           STAND_IN_CODE + f'\nPROMPT = "{SWAPPED_PROMPT} is"\n')
    with pytest.raises(ModelError, match="prompt-order bug"):
        scorer(buggy, trust_remote_code=True)


def test_remote_code_that_breaks_on_this_transformers_says_what_to_do(tmp_path, tiny):
    broken = write_stand_in(tmp_path / "broken", tiny)
    (broken / "owl2_stand_in.py").write_text(
        "from transformers.models.llama.modeling_llama import NoSuchAttention\n" + STAND_IN_CODE)
    with pytest.raises(ModelError, match=r"transformers 4\.36") as info:
        scorer(broken, "deqa-score", trust_remote_code=True)
    assert "\n" not in str(info.value)


def test_remote_code_gets_qbench_prompt_ids_and_pixels(tmp_path, tiny):
    folder = write_stand_in(tmp_path / "owl2", tiny)
    model = scorer(folder, trust_remote_code=True)
    batch = photos([(30, 60), (50, 50)])
    predictions = model.predict(samples(2), batch)
    assert all(p.ok and 1 <= p.score <= 5 for p in predictions)
    assert len(model.settings()["code_sha256"]) == 64
    assert model.settings()["implementation"] == "remote-code"

    input_ids, images = type(model.network.network).seen[-1]
    assert input_ids.tolist() == [model.prompt.input_ids()] * 2
    assert torch.equal(images, model.image_processor([imgs[0] for imgs in batch]))
    with torch.no_grad():  # by hand: the stand-in's logits at the level words, softmax, 5..1
        logits = model.network.network(input_ids=input_ids, images=images).logits[:, -1]
    probs = torch.softmax(logits[:, model.token_ids], dim=-1)
    expected = probs @ torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    assert [p.score for p in predictions] == pytest.approx(expected.tolist(), abs=1e-5)


# ------------------------------------------------------------------------ GPU benchmark

def test_gpu_throughput_script_dry_run(capsys):
    """The 7B throughput benchmark, on the tiny configuration on the CPU."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "owl2_gpu_throughput", ROOT / "benchmarks" / "owl2_gpu_throughput.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--dry-run"])
    out = capsys.readouterr().out
    assert "ratio batch 4 / batch 1 images/s" in out
    assert float(out.split("level logits max abs diff ")[1].split(",")[0]) < 1e-4
