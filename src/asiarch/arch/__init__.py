"""Architectures: the candidate contract, the seed token mixers and the LM harness."""

from __future__ import annotations

from torch import nn

from asiarch.arch.contract import CandidateLoadError, contract_violations, load_mixer_class
from asiarch.arch.layers import (
    RWKV7, Attention, DeltaNet, GatedDeltaNet, GatedDeltaNet2, GatedDeltaProduct, KimiDeltaAttention, Mamba2,
)
from asiarch.arch.model import LanguageModel, ModelConfig, count_parameters

# Name -> mixer class. Read-only by convention: register user seeds in a copy. The first four are the
# 2024 baselines; the rest are the 2025-26 frontier (fla 0.6.0's KDA, GDN-2, RWKV-7, Gated DeltaProduct).
SEEDS: dict[str, type[nn.Module]] = {
    "deltanet": DeltaNet,
    "gated_deltanet": GatedDeltaNet,
    "mamba2": Mamba2,
    "attention": Attention,
    "kda": KimiDeltaAttention,
    "gdn2": GatedDeltaNet2,
    "rwkv7": RWKV7,
    "gated_deltaproduct": GatedDeltaProduct,
}

def seed_source(name: str) -> str:
    """The source text of a seed mixer, in the candidate format (a parent for proposals)."""
    import inspect

    if name not in SEEDS:
        raise KeyError(f"unknown seed {name!r}; seeds are {sorted(SEEDS)}")
    return inspect.getsource(inspect.getmodule(SEEDS[name]))


__all__ = [
    "seed_source",
    "SEEDS",
    "Attention",
    "CandidateLoadError",
    "DeltaNet",
    "GatedDeltaNet",
    "GatedDeltaNet2",
    "GatedDeltaProduct",
    "KimiDeltaAttention",
    "LanguageModel",
    "Mamba2",
    "ModelConfig",
    "RWKV7",
    "contract_violations",
    "count_parameters",
    "load_mixer_class",
]
