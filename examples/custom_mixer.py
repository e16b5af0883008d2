"""Bring your own token mixer: write it as source text, load it, train it like a seed.

The source below is a deliberately simple causal mixer (a gated exponential moving average
per channel). Candidate source is executed by ``load_mixer_class``; in a campaign that
happens only inside the sandboxed trial workers, never in the driver. Here you wrote it.

    .venv/bin/python examples/custom_mixer.py scale.train.steps=100
"""

from __future__ import annotations

import sys

from asiarch.arch import load_mixer_class
from asiarch.config import load_scale
from asiarch.train.protocol import prepare_data, train_mixer

SOURCE = '''
import torch
import torch.nn.functional as F
from torch import nn


class GatedEMA(nn.Module):
    """Per-channel exponential moving average with a learned decay and an output gate."""

    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.in_proj = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.decay_logit = nn.Parameter(torch.linspace(-2.0, 4.0, hidden_size))
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        x, gate = self.in_proj(hidden_states).chunk(2, dim=-1)
        log_decay = F.logsigmoid(self.decay_logit)                      # [D], log of a decay in (0, 1)
        t = torch.arange(hidden_states.shape[1], device=x.device, dtype=x.dtype)
        # y_t = sum_{s<=t} a^(t-s) (1-a) x_s, computed in closed form (stable for short T)
        weights = torch.exp((t[:, None] - t[None, :]).clamp(min=0)[..., None] * log_decay)
        weights = weights * (t[:, None] >= t[None, :])[..., None]
        y = torch.einsum("tsd,bsd->btd", weights, x) * (1 - log_decay.exp())
        return self.out_proj(y * F.silu(gate))
'''


def main() -> None:
    mixer_cls = load_mixer_class(SOURCE)
    scale = load_scale(["scale=cpu_tiny", *sys.argv[1:]])
    summary = train_mixer(mixer_cls, scale, prepare_data(scale), report=print, downstream=False)
    print(f"{mixer_cls.__name__}: eval loss {summary['eval_loss']:.3f}, MQAR {summary['mqar_accuracy']:.3f}")


if __name__ == "__main__":
    main()
