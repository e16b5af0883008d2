"""Initialisation of data-dependent decay gates (Mamba2 style), shared by gated mixers."""

from __future__ import annotations

import math

import torch
from torch import nn


def init_decay_parameters(num_heads: int, dt_min: float = 1e-3, dt_max: float = 0.1) -> tuple[nn.Parameter, nn.Parameter]:
    """``A_log`` and ``dt_bias`` initialised as in Mamba2, so initial decays span many timescales."""
    a_log = nn.Parameter(torch.log(torch.empty(num_heads).uniform_(1, 16)))
    dt = torch.exp(torch.rand(num_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
    a_log._no_weight_decay = True
    dt_bias._no_weight_decay = True
    return a_log, dt_bias
