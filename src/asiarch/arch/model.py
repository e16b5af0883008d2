"""The LM harness every mixer is trained in (the same for seeds and candidates).

embedding -> N x [RMSNorm -> mixer -> residual -> RMSNorm -> SwiGLU MLP -> residual]
-> RMSNorm -> head tied to the embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    """The language model around a mixer; the defaults equal ``scale.model`` of ``conf/scale/cpu_tiny.yaml``."""

    vocab_size: int = 4096  # not in conf/: a campaign sets it from the tokenizer plus the MQAR tokens
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0  # SwiGLU keeps ~the parameters of a 4x GELU MLP: hidden = 2/3 * ratio * d
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # Multiply the (tied, init_std-sized) token embeddings by sqrt(hidden_size), as Gemma does.
    # Unscaled, a mixer's output of its context swamps the token's own embedding early in
    # training, and a design that mixes nothing out-learns every mixer for hundreds of steps
    # (measured at cpu_tiny: bench_fidelity, docs/fidelity_cpu_tiny.txt and the README).
    scale_embeddings: bool = True
    mixer_kwargs: dict[str, Any] = field(default_factory=lambda: {"chunk_size": 64})  # passed to every mixer

    @property
    def mlp_hidden_size(self) -> int:
        hidden = int(2 * self.mlp_ratio * self.hidden_size / 3)
        return 32 * math.ceil(hidden / 32)


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, inner_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, inner_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, inner_size, bias=False)
        self.down_proj = nn.Linear(inner_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, mixer_cls: type[nn.Module], layer_idx: int):
        super().__init__()
        self.mixer_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mixer = mixer_cls(config.hidden_size, config.num_heads, layer_idx=layer_idx, **config.mixer_kwargs)
        self.mlp_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.mlp_hidden_size)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.mixer(self.mixer_norm(x), attention_mask=attention_mask)
        return x + self.mlp(self.mlp_norm(x))


class LanguageModel(nn.Module):
    """A causal LM around one mixer class; ``forward(input_ids) -> logits [B, T, V]``.

    ``vocab_range=(lo, hi)`` returns logits over token ids ``lo..hi-1`` only. Tasks that
    own a slice of the vocabulary (the LM corpus, MQAR) each take their softmax over their
    own slice: cheaper, and a large unused slice no longer slows the other task's learning
    (measured: MQAR stalls at chance when its softmax spans the 4k LM tokens too).
    """

    def __init__(self, config: ModelConfig, mixer_cls: type[nn.Module]):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(Block(config, mixer_cls, i) for i in range(config.num_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.head.weight = self.embed.weight
        self.apply(self._init_weights)
        # GPT-2 style: shrink the residual-branch outputs with depth.
        for block in self.blocks:
            nn.init.normal_(block.mlp.down_proj.weight, std=config.init_std / math.sqrt(2 * config.num_layers))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The residual stream after the last block, before the final norm: ``[B, T, hidden_size]``.

        What a sandboxed trial hands its parent for every evaluation: the parent applies the
        harness's last norm and head itself (``HarnessHead``), from the checkpoint's weights.
        hidden_size numbers a position instead of a vocabulary's, so the files stay small at any scale.
        """
        x = self.embed(input_ids)
        if self.config.scale_embeddings:
            x = x * math.sqrt(self.config.hidden_size)
        for block in self.blocks:
            x = block(x, attention_mask)
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        vocab_range: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        x = self.norm(self.features(input_ids, attention_mask))
        if vocab_range is None:
            return self.head(x)
        lo, hi = vocab_range
        return F.linear(x, self.head.weight[lo:hi])


@dataclass(frozen=True)
class HarnessHead:
    """The harness's final RMSNorm and tied head, as tensors: logits from ``LanguageModel.features``.

    Every evaluation is scored through this, in float32: a seed's in its own process, a
    candidate's in the Tune trainable from its checkpoint's weights, so the two are
    measured alike and nothing the candidate's process does after its last block counts.
    """

    norm_weight: torch.Tensor
    head_weight: torch.Tensor
    eps: float

    @classmethod
    def of_state(cls, state: Mapping[str, torch.Tensor], eps: float, device: str | torch.device = "cpu") -> "HarnessHead":
        """From a model state dict (a checkpoint's ``trainer.model``)."""
        return cls(state["norm.weight"].detach().to(device, torch.float32),
                   state["head.weight"].detach().to(device, torch.float32), eps)

    @classmethod
    def of_model(cls, model: "LanguageModel") -> "HarnessHead":
        return cls.of_state({"norm.weight": model.norm.weight, "head.weight": model.head.weight}, model.config.norm_eps,
                            model.head.weight.device)

    def logits(self, features: torch.Tensor, vocab_range: tuple[int, int]) -> torch.Tensor:
        """Logits over token ids ``vocab_range[0]..vocab_range[1]-1`` at every position of ``features``."""
        x = features.to(self.head_weight.device, torch.float32)
        x = F.rms_norm(x, (x.shape[-1],), self.norm_weight, self.eps)
        return F.linear(x, self.head_weight[vocab_range[0] : vocab_range[1]])


class VocabView(nn.Module):
    """``model`` seen through one vocabulary slice, for code that calls ``model(input_ids)``."""

    def __init__(self, model: LanguageModel, vocab_range: tuple[int, int]):
        super().__init__()
        self.model, self.vocab_range = model, vocab_range

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, vocab_range=self.vocab_range)


def count_state(state: Mapping[str, torch.Tensor]) -> int:
    """Elements of every tensor in a state dict, shared storage counted once.

    What a checkpoint holds of a module: its parameters and its persistent buffers. The
    parameter budget counts this, in the check and in every training checkpoint, because a
    buffer the forward pass updates is capacity too, and the trainable sees only the state.
    """
    seen: set[tuple[int, ...]] = set()
    total = 0
    for tensor in state.values():
        key = ((id(tensor),) if tensor.is_meta or tensor.numel() == 0 else  # meta tensors have no storage to share
               (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), *tensor.shape))
        if key not in seen:
            seen.add(key)
            total += tensor.numel()
    return total


def count_parameters(model: nn.Module, exclude_embeddings: bool = False) -> int:
    """Unique trainable parameters (tied weights counted once), optionally without embeddings."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    if exclude_embeddings and isinstance(model, LanguageModel):
        total -= model.embed.weight.numel()
    return total
