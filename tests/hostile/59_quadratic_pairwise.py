# expect: complexity
# why: Builds an explicit [B, T, T, head_dim] pairwise-difference tensor (an RBF kernel over all token pairs).
import torch
from torch import nn


class PairwiseKernelMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)
        self.head_dim = hidden_size // num_heads

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        b, t, d = hidden_states.shape
        k = torch.tanh(self.k(hidden_states))[..., : self.head_dim]
        v = self.v(hidden_states)
        diff = k[:, :, None, :] - k[:, None, :, :]  # [B, T, T, head_dim]: every pair of tokens
        weight = torch.exp(-diff.pow(2).sum(-1))  # [B, T, T]
        past = torch.ones(t, t, dtype=v.dtype, device=v.device).tril()
        weight = weight * past
        mixed = (weight @ v) / weight.sum(-1, keepdim=True)
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
