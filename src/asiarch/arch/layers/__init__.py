"""Seed token mixers: each a layer that parametrises one operator from ``asiarch.arch.ops``."""

from asiarch.arch.layers.attention import Attention
from asiarch.arch.layers.deltanet import DeltaNet
from asiarch.arch.layers.gated_deltanet import GatedDeltaNet
from asiarch.arch.layers.mamba2 import Mamba2

__all__ = ["Attention", "DeltaNet", "GatedDeltaNet", "Mamba2"]
