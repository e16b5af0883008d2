"""Seed token mixers: each a layer that parametrises one operator from ``asiarch.arch.ops``."""

from asiarch.arch.layers.attention import Attention
from asiarch.arch.layers.deltanet import DeltaNet
from asiarch.arch.layers.gated_deltanet import GatedDeltaNet
from asiarch.arch.layers.gated_deltaproduct import GatedDeltaProduct
from asiarch.arch.layers.gdn2 import GatedDeltaNet2
from asiarch.arch.layers.kda import KimiDeltaAttention
from asiarch.arch.layers.mamba2 import Mamba2
from asiarch.arch.layers.rwkv7 import RWKV7

__all__ = ["Attention", "DeltaNet", "GatedDeltaNet", "GatedDeltaNet2", "GatedDeltaProduct", "KimiDeltaAttention",
           "Mamba2", "RWKV7"]
