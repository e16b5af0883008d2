# expect: complexity
# why: Builds an explicit [B, T, T] tensor of pairwise key differences (an RBF kernel over all token pairs) and mixes with it.
import torch
from torch import nn


class PairwiseKernelMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        b, t, d = hidden_states.shape
        k = torch.tanh(self.k(hidden_states)).mean(-1)  # [B, T]: one scalar key per token
        v = self.v(hidden_states)
        diff = k[:, :, None] - k[:, None, :]  # [B, T, T]: every pair of tokens
        weight = torch.exp(-4.0 * diff.pow(2)).tril()
        mixed = (weight @ v) / weight.sum(-1, keepdim=True)
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
