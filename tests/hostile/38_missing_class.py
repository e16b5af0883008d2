# expect: contract
# why: Defines the mixer as a plain function and a non-Module class, so there is no nn.Module subclass.
import torch
from torch import nn


def cumulative_mixer(hidden_states, weight):
    steps = torch.arange(1, hidden_states.shape[1] + 1, dtype=hidden_states.dtype)
    return (hidden_states @ weight).cumsum(1) / steps[None, :, None]


class CumulativeMixer:
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        self.weight = torch.randn(hidden_size, hidden_size) / hidden_size**0.5

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        return cumulative_mixer(hidden_states, self.weight)
