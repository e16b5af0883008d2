"""Loading candidate source into a mixer class, and the errors for sources that break the contract."""

from __future__ import annotations

import textwrap

import pytest
import torch

from asiarch.arch import CandidateLoadError, load_mixer_class

GOOD = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Helper(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            return self.proj(x)

    class CumulativeMixer(nn.Module):
        def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
            super().__init__()
            self.inner = Helper(hidden_size)

        def forward(self, hidden_states, attention_mask=None, **kwargs):
            steps = torch.arange(1, hidden_states.shape[1] + 1, dtype=hidden_states.dtype)
            return self.inner(hidden_states.cumsum(1) / steps[None, :, None])
    """
)


def test_loads_the_one_conforming_class_and_it_runs():
    cls = load_mixer_class(GOOD)
    assert cls.__name__ == "CumulativeMixer"
    out = cls(16, 2, layer_idx=0)(torch.randn(2, 5, 16))
    assert out.shape == (2, 5, 16)


def test_class_name_selects_and_checks():
    with pytest.raises(CandidateLoadError, match="no class named 'Missing'"):
        load_mixer_class(GOOD, class_name="Missing")
    with pytest.raises(CandidateLoadError, match="Helper.__init__ must start with"):
        load_mixer_class(GOOD, class_name="Helper")


@pytest.mark.parametrize(
    "source,message",
    [
        ("class Broken(:\n    pass", "does not parse"),
        ("x = 1", "defines no torch.nn.Module subclass"),
        ("raise RuntimeError('boom')", "raised while executing: RuntimeError: boom"),
        (
            "from torch import nn\nclass M(nn.Module):\n    def __init__(self, dim, heads):\n        super().__init__()\n"
            "    def forward(self, x):\n        return x\n",
            "M.__init__ must start with",
        ),
        (
            "from torch import nn\nclass M(nn.Module):\n    def __init__(self, hidden_size, num_heads, layer_idx=None):\n"
            "        super().__init__()\n    def forward(self, hidden_states, attention_mask=None, **kw):\n        return hidden_states\n",
            "must accept \\*\\*kwargs",
        ),
        (
            "from torch import nn\nclass M(nn.Module):\n    def __init__(self, hidden_size, num_heads, layer_idx=None, **kw):\n"
            "        super().__init__()\n",
            "does not define forward",
        ),
        (
            "from torch import nn\nclass M(nn.Module):\n    def __init__(self, hidden_size, num_heads, layer_idx=None, depth, **kw):\n"
            "        pass\n",
            "does not parse",
        ),
        (
            "from torch import nn\nclass M(nn.Module):\n    def __init__(self, hidden_size, num_heads, layer_idx=None, *, depth, **kw):\n"
            "        super().__init__()\n    def forward(self, hidden_states, attention_mask=None, **kw):\n        return hidden_states\n",
            "required parameters beyond the contract: \\['depth'\\]",
        ),
    ],
)
def test_nonconforming_sources_get_a_clear_error(source, message):
    with pytest.raises(CandidateLoadError, match=message):
        load_mixer_class(source)


def test_two_conforming_classes_are_ambiguous():
    second = GOOD + "\n\nclass Another(CumulativeMixer):\n    pass\n"
    with pytest.raises(CandidateLoadError, match="2 conforming mixer classes \\(CumulativeMixer, Another\\)"):
        load_mixer_class(second)
