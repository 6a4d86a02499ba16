"""mPLUG-Owl2, the network behind Q-Align and DeQA-Score, for today's torch (no remote code, no
transformers model classes): the CLIP-style ViT, the visual abstractor (learned queries
cross-attending to the ViT output) and the LLaMA-2 decoder with modality-adaptive modules (MAM:
visual tokens get their own RMSNorms and K/V projections). It loads the released checkpoints
(q-future/one-align, zhiyuanyou/DeQA-Score-Mix3) by their own key names and computes next-token
logits for a batch of images sharing one prompt.

Inputs are prepared as the upstream evaluation scripts prepare them, independently of the
installed transformers: the prompt is tokenized by SentencePiece itself (what the slow
LlamaTokenizer of transformers 4.36 does; the converted tokenizer of transformers 5 drops the
space before " ASSISTANT:"), and images are padded to a square of the mean colour, resized,
cropped and normalised as transformers 4.36's CLIPImageProcessor does (PIL resampling).
`benchmarks/owl2_equality.py` checks both, and the logits, against the original code.

Needs torch and numpy only (PIL for images, sentencepiece for the tokenizer, safetensors for
weights, each imported where used): benchmarks load this file on its own.
"""
from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from PIL import Image

IMAGE_TAG = "<|image|>"
IMAGE_INDEX = -200  # where the remote code expects the image in input_ids


class Owl2Error(Exception):
    """A checkpoint or input this implementation cannot take; the message is one line."""


# ------------------------------------------------------------------------------ configuration

@dataclass(frozen=True)
class VisionConfig:
    """config.json `visual_config.visual_model`; defaults are the original class's."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 448
    patch_size: int = 14
    layer_norm_eps: float = 1e-6


@dataclass(frozen=True)
class AbstractorConfig:
    """config.json `visual_config.visual_abstractor`."""

    num_learnable_queries: int = 64
    hidden_size: int = 1024
    num_hidden_layers: int = 6
    num_attention_heads: int = 16
    intermediate_size: int = 2816
    layer_norm_eps: float = 1e-6
    encoder_hidden_size: int = 1024
    grid_size: int = 32


@dataclass(frozen=True)
class Owl2Config:
    """The decoder's fields of config.json (LLaMA-2 7B by default) and the two visual parts."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    attention_bias: bool = False
    vision: VisionConfig = VisionConfig()
    abstractor: AbstractorConfig = AbstractorConfig()

    @property
    def visual_tokens(self) -> int:
        """Tokens one image takes in the decoder: the abstractor's queries and an end marker."""
        return self.abstractor.num_learnable_queries + 1


def _known_fields(cls, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)} - {"vision", "abstractor"}
    return {k: v for k, v in values.items() if k in names and v is not None}


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Owl2Error(f"cannot read {path}: {exc}") from None


def read_config(path: Path) -> Owl2Config:
    """An mPLUG-Owl2 config.json, checked for what this implementation covers."""
    raw = read_json(path)
    if raw.get("model_type") != "mplug_owl2":
        raise Owl2Error(f"{path} describes model_type {raw.get('model_type')!r}, not "
                         "'mplug_owl2' (Q-Align / DeQA-Score weights)")
    if raw.get("rope_scaling") or raw.get("hidden_act", "silu") != "silu":
        raise Owl2Error(f"{path}: rope_scaling and activations other than silu are not part "
                         "of the released Q-Align / DeQA-Score models")
    visual = raw.get("visual_config") or {}
    text = _known_fields(Owl2Config, raw)
    text.setdefault("num_key_value_heads", text.get("num_attention_heads", 32))
    config = Owl2Config(**text,
                        vision=VisionConfig(**_known_fields(VisionConfig,
                                                            visual.get("visual_model", {}))),
                        abstractor=AbstractorConfig(**_known_fields(
                            AbstractorConfig, visual.get("visual_abstractor", {}))))
    widths = {config.vision.hidden_size, config.abstractor.hidden_size,
              config.abstractor.encoder_hidden_size}
    if len(widths) != 1:
        raise Owl2Error(f"{path}: the abstractor attends over the ViT output, so the ViT and "
                         f"abstractor widths must agree (got {sorted(widths)})")
    patches = config.vision.image_size // config.vision.patch_size
    if patches != config.abstractor.grid_size:
        raise Owl2Error(f"{path}: the ViT sees {patches}x{patches} patches but the abstractor's "
                         f"position table is {config.abstractor.grid_size}x"
                         f"{config.abstractor.grid_size}")
    return config


def config_json(config: Owl2Config) -> dict[str, Any]:
    """config.json in the released layout (what the original MPLUGOwl2Config reads)."""
    text = {k: v for k, v in asdict(config).items() if k not in ("vision", "abstractor")}
    return {"architectures": ["MPLUGOwl2LlamaForCausalLM"], "model_type": "mplug_owl2",
            **text, "hidden_act": "silu", "rope_scaling": None, "bos_token_id": 1,
            "eos_token_id": 2, "tie_word_embeddings": False,
            "visual_config": {"visual_model": asdict(config.vision) | {"hidden_act": "quick_gelu"},
                              "visual_abstractor": asdict(config.abstractor)}}


# ------------------------------------------------------------------------------ decoder (MAM)

# A span of the decoder sequence: (start, end, way), way 0 for text and 1 for visual tokens.
Span = tuple[int, int, int]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype  # normalised in float32, scaled in the model's dtype, as LLaMA does
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Multiway(nn.Module):
    """Two copies of a module: `multiway.0` for text tokens, `multiway.1` for visual ones."""

    def __init__(self, make):
        super().__init__()
        self.multiway = nn.ModuleList([make(), make()])

    def forward(self, x: torch.Tensor, spans: Sequence[Span]) -> torch.Tensor:
        return torch.cat([self.multiway[way](x[:, start:end]) for start, end, way in spans], 1)


def rotary_tables(length: int, head_dim: int, theta: float, device, dtype):
    """cos and sin of LLaMA's rotary embedding, computed in float32 as transformers 4.36 does."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, length, heads * dim) -> (batch, heads, length, dim)."""
    return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class DecoderAttention(nn.Module):
    def __init__(self, config: Owl2Config):
        super().__init__()
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.hidden_size // self.heads
        size, bias = config.hidden_size, config.attention_bias
        kv_size = self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(size, size, bias=bias)
        self.k_proj = Multiway(lambda: nn.Linear(size, kv_size, bias=bias))
        self.v_proj = Multiway(lambda: nn.Linear(size, kv_size, bias=bias))
        self.o_proj = nn.Linear(size, size, bias=bias)

    def forward(self, x, spans, cos, sin):
        batch, length, _ = x.shape
        q = rotate(split_heads(self.q_proj(x), self.heads), cos, sin)
        k = rotate(split_heads(self.k_proj(x, spans), self.kv_heads), cos, sin)
        v = split_heads(self.v_proj(x, spans), self.kv_heads)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class DecoderMLP(nn.Module):
    def __init__(self, config: Owl2Config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: Owl2Config):
        super().__init__()
        self.self_attn = DecoderAttention(config)
        self.mlp = DecoderMLP(config)
        norm = partial(RMSNorm, config.hidden_size, config.rms_norm_eps)
        self.input_layernorm = Multiway(norm)
        self.post_attention_layernorm = Multiway(norm)

    def forward(self, x, spans, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x, spans), spans, cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x, spans))


# ------------------------------------------------------------------------------ vision encoder

class Stack(nn.Module):
    """`encoder.layers.N`: the layer list under the key names of the release."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class VisionEmbeddings(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        patches = (config.image_size // config.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embed = nn.Conv2d(3, config.hidden_size, config.patch_size,
                                     stride=config.patch_size, bias=False)
        self.position_embedding = nn.Parameter(torch.zeros(1, patches + 1, config.hidden_size))
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixels):
        patches = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(pixels.shape[0], 1, -1).to(patches.dtype)
        x = torch.cat([cls, patches], dim=1)
        return self.pre_layernorm(x + self.position_embedding[:, :x.shape[1]].to(x.dtype))


class VisionAttention(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x):
        batch, length, size = x.shape
        # the fused projection interleaves q, k, v per head: (..., heads, 3, head_dim)
        qkv = self.query_key_value(x).reshape(batch, length, self.heads, 3, size // self.heads)
        q, k, v = qkv.permute(3, 0, 2, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.dense(out.transpose(1, 2).reshape(batch, length, size))


class VisionMLP(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x):
        x = self.fc1(x)
        return self.fc2(x * torch.sigmoid(1.702 * x))  # QuickGELU, whatever the config says


class VisionLayer(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = VisionAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = VisionMLP(config)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class VisionModel(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.embeddings = VisionEmbeddings(config)
        self.encoder = Stack([VisionLayer(config) for _ in range(config.num_hidden_layers)])
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixels):
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


# ------------------------------------------------------------------------------ visual abstractor

def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """The abstractor's fixed position table, in numpy float32 as the original builds it."""
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000 ** omega
    angles = np.einsum("m,d->md", positions.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d_with_cls(dim: int, grid: int) -> np.ndarray:
    """A zero row for the ViT's class token, then one row per patch: the first half encodes
    the patch's column, the second its row (numpy's meshgrid order, as the original)."""
    axis = np.arange(grid, dtype=np.float32)
    columns, rows = np.meshgrid(axis, axis)
    table = np.concatenate([sincos_1d(dim // 2, columns), sincos_1d(dim // 2, rows)], axis=1)
    return np.concatenate([np.zeros([1, dim]), table], axis=0)


class AbstractorAttention(nn.Module):
    def __init__(self, config: AbstractorConfig):
        super().__init__()
        self.config = config
        size = config.hidden_size
        self.query = nn.Linear(size, size)
        self.key = nn.Linear(config.encoder_hidden_size, size)
        self.value = nn.Linear(config.encoder_hidden_size, size)
        # released checkpoints carry these tables; `fill_position_tables` computes them otherwise
        self.register_buffer("q_pos_embed", torch.zeros(config.num_learnable_queries, size))
        self.register_buffer("k_pos_embed", torch.zeros(config.grid_size ** 2 + 1, size))

    def position_tables(self) -> dict[str, torch.Tensor]:
        c = self.config
        queries = np.arange(c.num_learnable_queries, dtype=np.float32)
        return {"q_pos_embed": torch.from_numpy(sincos_1d(c.hidden_size, queries)).float(),
                "k_pos_embed": torch.from_numpy(
                    sincos_2d_with_cls(c.hidden_size, c.grid_size)).float()}

    def forward(self, queries, context):
        """queries: the normed query states; context: the queries then the normed ViT output."""
        heads = self.config.num_attention_heads
        q_pos = self.q_pos_embed.to(queries.dtype)
        qk_pos = torch.cat([q_pos, self.k_pos_embed.to(queries.dtype)])
        q = split_heads(self.query(queries + q_pos), heads)
        k = split_heads(self.key(context + qk_pos), heads)
        v = split_heads(self.value(context), heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(queries.shape[0], queries.shape[1], -1)


class AbstractorMLP(nn.Module):
    def __init__(self, config: AbstractorConfig):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_ln = nn.LayerNorm(config.intermediate_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.w2(self.ffn_ln(F.silu(self.w1(x)) * self.w3(x)))


class AbstractorOutput(nn.Module):
    def __init__(self, config: AbstractorConfig):
        super().__init__()
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm2 = nn.LayerNorm(config.hidden_size)  # the default eps, as in the original
        self.mlp = AbstractorMLP(config)


class AbstractorCrossAttention(nn.Module):
    def __init__(self, config: AbstractorConfig):
        super().__init__()
        self.attention = AbstractorAttention(config)
        self.output = AbstractorOutput(config)
        self.norm1 = nn.LayerNorm(config.hidden_size)
        self.normk = nn.LayerNorm(config.hidden_size)

    def forward(self, x, image):
        queries = self.norm1(x)
        context = torch.cat([queries, self.normk(image)], dim=1)
        # the residual starts from the *normed* queries, as in the original
        x = queries + self.output.out_proj(self.attention(queries, context))
        return x + self.output.mlp(self.output.norm2(x))


class AbstractorLayer(nn.Module):
    def __init__(self, config: AbstractorConfig):
        super().__init__()
        self.crossattention = AbstractorCrossAttention(config)


class VisualAbstractor(nn.Module):
    def __init__(self, config: AbstractorConfig, language_size: int):
        super().__init__()
        self.encoder = Stack([AbstractorLayer(config) for _ in range(config.num_hidden_layers)])
        self.visual_fc = nn.Linear(config.hidden_size, language_size)
        self.query_embeds = nn.Parameter(torch.zeros(1, config.num_learnable_queries,
                                                     config.hidden_size))
        self.vit_eos = nn.Parameter(torch.zeros(1, 1, language_size))

    def forward(self, image):
        x = self.query_embeds.expand(image.shape[0], -1, -1)
        for layer in self.encoder.layers:
            x = layer.crossattention(x, image)
        x = self.visual_fc(x)
        return torch.cat([x, self.vit_eos.expand(x.shape[0], -1, -1)], dim=1)


# ------------------------------------------------------------------------------ the whole model

class Owl2Backbone(nn.Module):
    """Everything under the `model.` prefix of the released checkpoints."""

    def __init__(self, config: Owl2Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.vision_model = VisionModel(config.vision)
        self.visual_abstractor = VisualAbstractor(config.abstractor, config.hidden_size)


class MplugOwl2(nn.Module):
    """Inference only: the logits of chosen next tokens after one prompt, for a batch of images.
    All rows share the prompt, so every row has the same layout (text, the image's visual
    tokens, text) and the batch needs no padding."""

    def __init__(self, config: Owl2Config):
        super().__init__()
        self.config = config
        self.model = Owl2Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, 3, S, S) -> (batch, visual_tokens, hidden)."""
        return self.model.visual_abstractor(self.model.vision_model(pixels))

    def last_hidden_state(self, pixels: torch.Tensor, prefix: torch.Tensor,
                          suffix: torch.Tensor) -> torch.Tensor:
        """The final normed hidden state at the last position of `prefix <image> suffix`."""
        batch = pixels.shape[0]
        embed = self.model.embed_tokens
        visual = self.encode_images(pixels)
        x = torch.cat([embed(prefix).expand(batch, -1, -1), visual.to(self.dtype),
                       embed(suffix).expand(batch, -1, -1)], dim=1)
        start, end, length = len(prefix), len(prefix) + visual.shape[1], x.shape[1]
        spans = [s for s in ((0, start, 0), (start, end, 1), (end, length, 0)) if s[0] < s[1]]
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        cos, sin = rotary_tables(length, head_dim, self.config.rope_theta, x.device, x.dtype)
        for layer in self.model.layers:
            x = layer(x, spans, cos, sin)
        return self.model.norm(x[:, -1])

    @torch.inference_mode()
    def next_token_logits(self, pixels: torch.Tensor, prompt: Owl2Prompt,
                          vocab_ids: Sequence[int]) -> torch.Tensor:
        """float32 logits (batch, len(vocab_ids)) of the token after the prompt, each row with
        its image in the prompt's image place."""
        device = self.lm_head.weight.device
        hidden = self.last_hidden_state(
            pixels.to(device, self.dtype, non_blocking=True),
            torch.tensor(prompt.prefix, device=device),
            torch.tensor(prompt.suffix, device=device))
        rows = self.lm_head.weight[torch.tensor(list(vocab_ids), device=device)]
        return F.linear(hidden, rows).float()

    def fill_position_tables(self) -> None:
        """Compute the abstractor's position tables a checkpoint did not carry."""
        for module in self.modules():
            if isinstance(module, AbstractorAttention):
                for name, table in module.position_tables().items():
                    if getattr(module, name).is_meta:
                        device = module.query.weight.device
                        module._buffers[name] = table.to(device)


# ------------------------------------------------------------------------------ loading

def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's shards: safetensors or PyTorch .bin, sharded (index) or single."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text()).get("weight_map", {})
            shards = sorted({folder / name for name in weight_map.values()})
            missing = [s.name for s in shards if not s.is_file()]
            if missing:
                raise Owl2Error(f"{folder}: {index} lists shards that are not there: "
                                 f"{', '.join(missing[:3])}")
            return shards
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).is_file():
            return [folder / single]
    raise Owl2Error(f"{folder} has no weights (model*.safetensors or pytorch_model*.bin)")


def read_shard(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as shard:
                for key in shard.keys():
                    yield key, shard.get_tensor(key)
        else:
            yield from torch.load(path, map_location="cpu", weights_only=True, mmap=True).items()
    except (OSError, RuntimeError, ValueError) as exc:
        raise Owl2Error(f"cannot read weights {path}: {str(exc).splitlines()[0]}") from None


# older transformers saved the rotary frequencies; they are recomputed here
IGNORED_KEYS = re.compile(r"\.rotary_emb\.inv_freq$")
POSITION_TABLES = ("q_pos_embed", "k_pos_embed")


def _assign(root: nn.Module, key: str, value: torch.Tensor) -> None:
    path, _, name = key.rpartition(".")
    module = root.get_submodule(path)
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[name] = value


def load_weights(net: MplugOwl2, folder: Path, device: str, dtype: torch.dtype) -> None:
    """Released tensors into `net` (built on the meta device) by their key names. Parameters
    take `dtype`; the position tables stay float32 and are cast where they are used."""
    expected = dict(net.named_parameters()) | dict(net.named_buffers())
    loaded, unexpected = set(), []
    for shard in weight_files(folder):
        for key, tensor in read_shard(shard):
            if IGNORED_KEYS.search(key):
                continue
            if key not in expected:
                unexpected.append(key)
                continue
            if tuple(tensor.shape) != tuple(expected[key].shape):
                raise Owl2Error(f"{folder}: {key} has shape {tuple(tensor.shape)}, config.json "
                                 f"implies {tuple(expected[key].shape)}")
            target = torch.float32 if key.endswith(POSITION_TABLES) else dtype
            _assign(net, key, tensor.to(device=device, dtype=target))
            loaded.add(key)
    missing = [k for k in expected if k not in loaded and not k.endswith(POSITION_TABLES)]
    if unexpected or missing:
        raise Owl2Error(f"{folder} is not an mPLUG-Owl2 checkpoint of this config: "
                         f"{len(missing)} missing tensors ({', '.join(missing[:3])}), "
                         f"{len(unexpected)} unknown ({', '.join(unexpected[:3])})")
    net.fill_position_tables()


def load_mplug_owl2(folder: Path, device: str, dtype: torch.dtype) -> MplugOwl2:
    """The released checkpoint in `folder` (config.json + weights), in eval mode."""
    config = read_config(folder / "config.json")
    with torch.device("meta"):
        net = MplugOwl2(config)
    load_weights(net, folder, device, dtype)
    return net.eval()


# ------------------------------------------------------------------------------ prompt and images

@dataclass(frozen=True)
class Owl2Prompt:
    """Token ids around the image: `prefix` starts with BOS, the image's tokens follow it."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]

    def input_ids(self) -> list[int]:
        """As the remote code takes them: IMAGE_INDEX where the image goes."""
        return [*self.prefix, IMAGE_INDEX, *self.suffix]


class Owl2Tokenizer:
    """The checkpoint's SentencePiece model (tokenizer.model), used as the upstream scripts use
    LlamaTokenizer(use_fast=False) under transformers 4.36: each piece of text around the image
    encoded on its own with SentencePiece's dummy prefix, BOS before the first."""

    def __init__(self, folder: Path):
        import sentencepiece
        config_path = folder / "tokenizer_config.json"
        try:
            config = json.loads(config_path.read_text()) if config_path.is_file() else {}
            self.sp = sentencepiece.SentencePieceProcessor(
                model_file=str(folder / "tokenizer.model"))
        except (OSError, RuntimeError, ValueError) as exc:
            raise Owl2Error(f"cannot read the tokenizer in {folder}: "
                             f"{str(exc).splitlines()[0]}") from None
        self.add_bos = bool(config.get("add_bos_token", True))

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text)) if text else []

    def prompt(self, text: str) -> Owl2Prompt:
        pieces = text.split(IMAGE_TAG)
        if len(pieces) != 2:
            raise Owl2Error(f"an mPLUG-Owl2 prompt holds exactly one {IMAGE_TAG}: {text!r}")
        bos = [self.sp.bos_id()] if self.add_bos else []
        return Owl2Prompt(tuple(bos + self.encode(pieces[0])), tuple(self.encode(pieces[1])))

    def first_token(self, word: str) -> int:
        """The upstream scripts' level-word id: `tokenizer(word).input_ids[1]`, the first
        piece after BOS."""
        return self.encode(word)[0]


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Centre the image on a square canvas of `fill` (the models were trained this way,
    instead of letting the processor crop)."""
    from PIL import Image as PILImage
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = PILImage.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _square_side(value: Any, what: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and "shortest_edge" in value:
        return int(value["shortest_edge"])
    if isinstance(value, dict) and value.get("height") == value.get("width") is not None:
        return int(value["height"])
    raise Owl2Error(f"preprocessor_config.json: unsupported {what} {value!r}")


def _rgb(values: Any) -> tuple[float, float, float]:
    """One value per RGB channel (a ValueError unless there are three)."""
    red, green, blue = map(float, values)
    return red, green, blue


@dataclass(frozen=True)
class Owl2ImageProcessor:
    """preprocessor_config.json (a CLIPImageProcessor) applied as transformers 4.36 applies it,
    after padding to a square of the mean colour: PIL resize of the shortest edge, centre crop,
    x/255 in float32, (x - mean) / std."""

    size: int
    crop_size: int
    resample: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @classmethod
    def from_folder(cls, folder: Path) -> Owl2ImageProcessor:
        try:
            raw = json.loads((folder / "preprocessor_config.json").read_text())
            mean, std = _rgb(raw["image_mean"]), _rgb(raw["image_std"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Owl2Error(f"cannot read {folder}/preprocessor_config.json: "
                             f"{type(exc).__name__}: {exc}") from None
        steps = ("do_resize", "do_center_crop", "do_rescale", "do_normalize")
        if not all(raw.get(step, True) for step in steps) or raw.get("rescale_factor",
                                                                     1 / 255) != 1 / 255:
            raise Owl2Error(f"{folder}/preprocessor_config.json turns off a CLIP step or "
                             "changes the 1/255 rescale; the released models use all of them")
        size = _square_side(raw.get("size", 224), "size")
        crop = _square_side(raw.get("crop_size", size), "crop_size")
        if crop > size:
            raise Owl2Error(f"{folder}/preprocessor_config.json crops {crop} out of {size}")
        return cls(size, crop, int(raw.get("resample", 3)), mean, std)

    @property
    def fill(self) -> tuple[int, int, int]:
        red, green, blue = self.image_mean
        return int(255 * red), int(255 * green), int(255 * blue)

    def pixel_array(self, image: Image.Image) -> np.ndarray:
        square = pad_to_square(image.convert("RGB"), self.fill)
        # the shortest edge to `size`: the whole square, since it is one
        resized = square.resize((self.size, self.size), resample=self.resample, reducing_gap=None)
        top = (self.size - self.crop_size) // 2
        array = np.asarray(resized)[top:top + self.crop_size, top:top + self.crop_size]
        array = (array * (1 / 255)).astype(np.float32)
        array = (array - np.array(self.image_mean, np.float32)) / np.array(self.image_std,
                                                                            np.float32)
        return array.transpose(2, 0, 1)

    def __call__(self, images: Sequence[Image.Image], pool: Executor | None = None
                 ) -> torch.Tensor:
        """(batch, 3, crop, crop) float32; with `pool`, the images are prepared on its threads
        (PIL's resize and numpy's arithmetic release the GIL), each exactly as alone."""
        arrays = (list(pool.map(self.pixel_array, images)) if pool
                  else [self.pixel_array(im) for im in images])
        return torch.from_numpy(np.stack(arrays))


# ------------------------------------------------------------------------------ random weights

def random_weights(net: MplugOwl2, seed: int, device: str = "cpu",
                   dtype: torch.dtype = torch.float32) -> MplugOwl2:
    """Fresh random tensors for every parameter of `net` (built on the meta device), made on
    `device`: norm weights near 1, matrices with variance 1/fan_in, biases small, embeddings
    and learned tokens N(0, 1), so activations and logits stay of order one."""
    generator = torch.Generator(device=device).manual_seed(seed)
    norms = {name for name, m in net.named_modules() if isinstance(m, (RMSNorm, nn.LayerNorm))}
    for key, param in list(net.named_parameters()):
        owner, _, kind = key.rpartition(".")
        noise = torch.randn(param.shape, generator=generator, device=device)
        if owner in norms:
            value = 1.0 + 0.1 * noise if kind == "weight" else 0.1 * noise
        elif kind == "bias":
            value = 0.1 * noise
        elif kind == "weight" and param.dim() >= 2 and not owner.endswith("embed_tokens"):
            value = noise / math.sqrt(math.prod(param.shape[1:]))
        else:  # token embeddings, class token, ViT position table, queries, end-of-image token
            value = noise
        _assign(net, key, value.to(dtype))
    net.fill_position_tables()
    return net.eval()


# ------------------------------------------------------------------------------ tiny checkpoint

TINY_CONFIG = Owl2Config(
    vocab_size=448, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4,
    vision=VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, image_size=56, patch_size=14),
    abstractor=AbstractorConfig(num_learnable_queries=8, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=48,
                                encoder_hidden_size=32, grid_size=4))
TINY_CORPUS = [
    "USER: How would you rate the quality of this image?",
    "A chat between a curious human and an artificial intelligence assistant.",
    *(f"ASSISTANT: The quality of the image is {word}." for word in
      ("excellent", "good", "fair", "poor", "bad")),
]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_sentencepiece(vocab_size: int) -> bytes:
    """A LLaMA-style SentencePiece BPE model (byte fallback, dummy prefix, <unk> <s> </s> at
    0 1 2) trained on a few sentences: the level words become single pieces."""
    import sentencepiece
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_CORPUS * 50), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, hard_vocab_limit=False,
        minloglevel=2)
    return model.getvalue()


def write_tiny_checkpoint(folder: Path, seed: int = 0, config: Owl2Config = TINY_CONFIG) -> Path:
    """A tiny random mPLUG-Owl2 laid out as the released folders are: config.json,
    model.safetensors under the release's key names, tokenizer.model with
    tokenizer_config.json, and a CLIP preprocessor_config.json. Offline, well under 1 MB."""
    import sentencepiece
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(tiny_sentencepiece(config.vocab_size))
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    config = replace(config, vocab_size=pieces.get_piece_size())
    (folder / "config.json").write_text(json.dumps(config_json(config), indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "legacy": False, "clean_up_tokenization_spaces": False, "model_max_length": 2048},
        indent=2))
    side = config.vision.image_size
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "CLIPFeatureExtractor", "image_processor_type":
        "CLIPImageProcessor", "size": side, "crop_size": side, "resample": 3,
        "do_resize": True, "do_center_crop": True, "do_normalize": True,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}, indent=2))
    with torch.device("meta"):
        net = MplugOwl2(config)
    state = random_weights(net, seed).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    return folder
