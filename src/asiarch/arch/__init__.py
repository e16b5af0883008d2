"""Architectures: the candidate contract, the seed token mixers and the LM harness.

Names load on first use, and ``seed_source`` reads a seed's file without importing it: the
agents quote seeds and compare proposals with them, and their processes never import torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from asiarch.lazy import lazy_exports

# Seed name -> "module:class" of its mixer. The first four are the 2024 baselines; the rest are the 2025-26
# frontier (fla 0.6.0's KDA, GDN-2, RWKV-7, Gated DeltaProduct). ``SEEDS`` maps the names to the classes.
SEED_MIXERS: dict[str, str] = {
    "deltanet": "asiarch.arch.layers.deltanet:DeltaNet",
    "gated_deltanet": "asiarch.arch.layers.gated_deltanet:GatedDeltaNet",
    "mamba2": "asiarch.arch.layers.mamba2:Mamba2",
    "attention": "asiarch.arch.layers.attention:Attention",
    "kda": "asiarch.arch.layers.kda:KimiDeltaAttention",
    "gdn2": "asiarch.arch.layers.gdn2:GatedDeltaNet2",
    "rwkv7": "asiarch.arch.layers.rwkv7:RWKV7",
    "gated_deltaproduct": "asiarch.arch.layers.gated_deltaproduct:GatedDeltaProduct",
}

# public name -> the submodule that defines it
_EXPORTS = {
    **dict.fromkeys(("CandidateLoadError", "contract_violations", "load_mixer_class"), "contract"),
    **dict.fromkeys(("Attention", "DeltaNet", "GatedDeltaNet", "GatedDeltaNet2", "GatedDeltaProduct",
                     "KimiDeltaAttention", "Mamba2", "RWKV7"), "layers"),
    **dict.fromkeys(("LanguageModel", "ModelConfig", "count_parameters"), "model"),
}


def seed_source(name: str) -> str:
    """The source text of a seed mixer, in the candidate format (a parent for proposals): its module's file."""
    if name not in SEED_MIXERS:
        raise KeyError(f"unknown seed {name!r}; seeds are {sorted(SEED_MIXERS)}")
    module = SEED_MIXERS[name].split(":")[0]
    return Path(__file__).parent.joinpath(*module.split(".")[2:]).with_suffix(".py").read_text()


def _seeds() -> dict[str, type]:
    """Name -> mixer class (imports torch). Read-only by convention: register user seeds in a copy."""
    classes = {}
    for name, where in SEED_MIXERS.items():
        module, cls = where.split(":")
        classes[name] = getattr(importlib.import_module(module), cls)
    return classes


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, computed={"SEEDS": _seeds})

__all__ = ["SEEDS", "SEED_MIXERS", "seed_source", *sorted(_EXPORTS)]
