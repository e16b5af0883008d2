"""Causal depthwise short convolution (the 'ShortConv' of DeltaNet, Mamba2, ...)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShortConvolution(nn.Module):
    """Depthwise causal Conv1d over time with an optional SiLU, on ``[B, T, C]``.

    Left padding by ``kernel_size - 1`` keeps position t blind to t+1..T, so the
    module is causal and works for any sequence length.
    """

    def __init__(self, channels: int, kernel_size: int = 4, activation: str | None = "silu", bias: bool = False):
        super().__init__()
        if activation not in (None, "silu"):
            raise ValueError(f"activation must be None or 'silu', got {activation!r}")
        self.kernel_size = kernel_size
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv1d(F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0)), self.weight, self.bias, groups=x.shape[-1])
        y = y.transpose(1, 2)
        return F.silu(y) if self.activation == "silu" else y
