"""Render a :class:`~asiarch.proposer.genome.Genome` as candidate source code.

The output is self-contained PyTorch that imports only what the candidate policy allows
(``torch``, ``math`` and the vetted operators in ``asiarch.arch.ops``), so the chunkwise
CPU paths and the flash-linear-attention kernels on CUDA come with it. Rendering is a pure
function of the genome and the class name: the same inputs give byte-identical source.
"""

from __future__ import annotations

import json

import re

from asiarch.proposer.genome import DELTA_OPS, Genome, name_for, seed_genome

__all__ = ["class_name_for", "render"]

_OPERATOR_TEXT = {
    "delta": "the delta rule (an error-correcting write to a matrix state)",
    "gated_delta": "the gated delta rule (delta-rule writes plus a per-head forget gate)",
    "ssd": "a scalar-decay linear recurrence (Mamba2's SSD)",
    "linear": "plain causal linear attention (an undecayed running sum of k v^T)",
}
_FEATURE_CODE = {
    "identity": "{x}",
    "silu": "F.silu({x})",
    "elu1": "(F.elu({x}) + 1.0)",
    "relu": "F.relu({x})",
}


def class_name_for(genome: Genome) -> str:
    """A CamelCase class name derived from :func:`name_for`."""
    words = re.split(r"[^0-9A-Za-z]+", name_for(genome))
    return "".join(w[:1].upper() + w[1:] for w in words if w) or "Mixer"


GENOME_MARKER = "asiarch-genome:"


def genome_from_source(source: str) -> Genome | None:
    """The genome a rendered source was made from, or None for code written otherwise."""
    for line in source.splitlines():
        if line.startswith(f"# {GENOME_MARKER}"):
            try:
                return Genome.from_dict(json.loads(line.split(GENOME_MARKER, 1)[1]))
            except (ValueError, TypeError):
                return None
    return None


def seed_of_genome(source: str) -> str | None:
    """The seed whose genome a rendered source carries (None for other genomes or other code)."""
    genome = genome_from_source(source)
    if genome is None:
        return None
    for name in ("deltanet", "gated_deltanet", "mamba2"):
        if genome.normalised() == seed_genome(name).normalised():
            return name
    return None


def render(genome: Genome, class_name: str | None = None) -> str:
    """Contract-conforming candidate source for ``genome`` (normalised first)."""
    g = genome.normalised()
    cls = class_name or class_name_for(g)
    if not cls.isidentifier():
        raise ValueError(f"class name {cls!r} is not a Python identifier")
    delta = g.operator in DELTA_OPS
    conv = g.short_conv
    feat = _FEATURE_CODE[g.feature_map]

    imports = []
    if delta:
        imports.append("chunk_gated_delta_rule" if g.operator == "gated_delta" else "chunk_delta_rule")
    else:
        imports.append("chunk_ssd")
    if conv:
        imports.append("ShortConvolution")
    if g.decay == "scalar_data":
        imports.append("init_decay_parameters")
    imports.sort(key=lambda s: (not s[0].isupper(), s))

    motifs = ", ".join(sorted(g.motifs()))
    items = [f"{k}={v!r}" for k, v in g.to_dict().items()]
    settings = [", ".join(items[i:i + 4]) for i in range(0, len(items), 4)]
    doc = [
        f'"""{cls}: {name_for(g)}, a token mixer built on {_OPERATOR_TEXT[g.operator]}.',
        "",
        "Written by asiarch's offline symbolic proposer (a template renderer, not a language",
        "model) from the genome",
        *(f"    {line}" for line in settings),
        f"Motifs: {motifs}.",
        '"""',
    ]
    marker = f"# {GENOME_MARKER} {json.dumps(g.to_dict(), sort_keys=True)}"  # lets proposers recover the design
    out = doc + ["", marker, "", "from __future__ import annotations", ""]
    if g.window:
        out.append("import math")
        out.append("")
    out += ["import torch", "import torch.nn.functional as F", "from torch import nn", "",
            f"from asiarch.arch.ops import {', '.join(imports)}", "", ""]

    I1, I2 = " " * 4, " " * 8
    # ------------------------------------------------------------------ __init__
    out += [
        f"class {cls}(nn.Module):",
        f'{I1}"""{name_for(g)}; see the module docstring for the design."""',
        "",
        f"{I1}def __init__(",
        f"{I2}self,",
        f"{I2}hidden_size: int,",
        f"{I2}num_heads: int,",
        f"{I2}layer_idx: int | None = None,",
        f"{I2}chunk_size: int = 64,",
        f"{I2}norm_eps: float = 1e-5,",
        f'{I2}backend: str = "auto",',
        f"{I2}**kwargs,",
        f"{I1}):",
        f"{I2}super().__init__()",
        f"{I2}self.num_heads = num_heads" + (f" * {g.head_mult}  # more, narrower heads" if g.head_mult > 1 else ""),
        f"{I2}if hidden_size % self.num_heads:",
        f'{I2}    raise ValueError(f"hidden_size {{hidden_size}} is not divisible by {{self.num_heads}} heads")',
        f"{I2}self.hidden_size, self.layer_idx = hidden_size, layer_idx",
        f"{I2}self.head_dim = hidden_size // self.num_heads",
        f"{I2}self.value_dim = " + (f"{g.value_expand} * hidden_size  # expanded values and state" if g.value_expand > 1 else "hidden_size"),
        f"{I2}self.head_v_dim = self.value_dim // self.num_heads",
        f"{I2}self.chunk_size, self.backend = chunk_size, backend",
        f"{I2}self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)",
        f"{I2}self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)",
        f"{I2}self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)",
    ]
    if conv:
        out += [
            f"{I2}# causal depthwise short convolutions (kernel {conv}) on q, k and v",
            f"{I2}self.q_conv = ShortConvolution(hidden_size, {conv}, activation=None)",
            f"{I2}self.k_conv = ShortConvolution(hidden_size, {conv}, activation=None)",
            f'{I2}self.v_conv = ShortConvolution(self.value_dim, {conv}, activation="silu")',
        ]
    if g.beta in ("sigmoid", "sigmoid2"):
        out.append(f"{I2}self.b_proj = nn.Linear(hidden_size, self.num_heads, bias=False)  # write strength")
    elif g.beta == "const":
        out.append(f"{I2}self.beta_logit = nn.Parameter(torch.zeros(self.num_heads))  # data-independent write strength")
    if g.decay == "scalar_data":
        out += [
            f"{I2}# data-dependent per-head decay, Mamba2 style: g = -exp(A_log) * softplus(a_proj(x) + dt_bias)",
            f"{I2}self.a_proj = nn.Linear(hidden_size, self.num_heads, bias=False)",
            f"{I2}self.A_log, self.dt_bias = init_decay_parameters(self.num_heads)",
        ]
    elif g.decay == "fixed_multiscale":
        out += [
            f"{I2}# fixed per-head decays gamma_h = 1 - 2^-s_h, timescales from 8 to 512 steps (RetNet style)",
            f"{I2}gamma = 1.0 - torch.exp2(-torch.linspace(3.0, 9.0, self.num_heads))",
            f'{I2}self.register_buffer("log_decay", gamma.log(), persistent=False)',
        ]
    if g.output_gate != "none":
        out.append(f"{I2}self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)  # output gate")
    if g.output_norm == "rms":
        out.append(f"{I2}self.o_norm = nn.RMSNorm(self.head_v_dim, eps=norm_eps)")
    if g.window:
        temp = "math.log(self.head_dim**0.5)" if g.qk_norm == "l2" else "math.log(self.head_dim**-0.5)"
        out += [
            f"{I2}# local branch: causal softmax attention over the last {g.window} tokens, O(T * W)",
            f"{I2}self.window = {g.window}",
            f"{I2}self.local_log_temp = nn.Parameter(torch.full((self.num_heads,), {temp}))",
            f"{I2}self.local_mix = nn.Parameter(torch.full((self.num_heads,), 0.5))",
        ]
    if g.d_skip:
        out += [
            f"{I2}self.D = nn.Parameter(torch.ones(self.num_heads))  # per-head skip from v to the output",
            f"{I2}self.D._no_weight_decay = True",
        ]
    out.append(f"{I2}self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)")
    out.append("")

    # ------------------------------------------------------------------ local branch
    if g.window:
        out += [
            f"{I1}def _local_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:",
            f'{I2}"""Softmax attention of each token over itself and the previous window - 1 tokens."""',
            f"{I2}t, w = q.shape[1], self.window",
            f"{I2}k_win = F.pad(k, (0, 0, 0, 0, w - 1, 0)).unfold(1, w, 1)  # [B, T, H, K, W]",
            f"{I2}v_win = F.pad(v, (0, 0, 0, 0, w - 1, 0)).unfold(1, w, 1)  # [B, T, H, V, W]",
            f'{I2}scores = torch.einsum("bthk,bthkw->bthw", q, k_win) * self.local_log_temp.exp().view(1, 1, -1, 1)',
            f"{I2}pos = torch.arange(t, device=q.device).view(t, 1) + torch.arange(w, device=q.device).view(1, w)",
            f'{I2}scores = scores.masked_fill((pos < w - 1).view(1, t, 1, w), float("-inf"))  # before the start',
            f'{I2}return torch.einsum("bthw,bthvw->bthv", scores.softmax(dim=-1), v_win)',
            "",
        ]

    # ------------------------------------------------------------------ forward
    out += [
        f"{I1}def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:",
        f"{I2}b, t, _ = hidden_states.shape",
        f"{I2}heads = (b, t, self.num_heads, self.head_dim)",
    ]
    qx, kx, vx = "self.q_proj(hidden_states)", "self.k_proj(hidden_states)", "self.v_proj(hidden_states)"
    if conv:
        qx, kx, vx = f"self.q_conv({qx})", f"self.k_conv({kx})", f"self.v_conv({vx})"
    else:
        vx = f"F.silu({vx})"
    out += [
        f"{I2}q = {feat.format(x=qx)}.view(heads)",
        f"{I2}k = {feat.format(x=kx)}.view(heads)",
        f"{I2}v = {vx}.view(b, t, self.num_heads, self.head_v_dim)",
    ]
    if g.qk_norm == "l2":
        out += [f"{I2}q = F.normalize(q, p=2, dim=-1)", f"{I2}k = F.normalize(k, p=2, dim=-1)"]
    if g.beta == "sigmoid":
        out.append(f"{I2}beta = self.b_proj(hidden_states).sigmoid()")
    elif g.beta == "sigmoid2":
        out.append(f"{I2}beta = 2.0 * self.b_proj(hidden_states).sigmoid()  # in (0, 2): eigenvalues in (-1, 1)")
    elif g.beta == "const":
        out.append(f"{I2}beta = self.beta_logit.sigmoid().view(1, 1, -1).expand(b, t, self.num_heads)")
    if g.decay == "scalar_data":
        out += [
            f"{I2}dt = F.softplus(self.a_proj(hidden_states).float() + self.dt_bias)  # [B, T, H]",
            f"{I2}g = -self.A_log.float().exp() * dt",
        ]
    elif g.decay == "fixed_multiscale":
        out.append(f"{I2}g = self.log_decay.view(1, 1, -1).expand(b, t, self.num_heads)")
    ck = "chunk_size=self.chunk_size, backend=self.backend"
    if g.operator == "delta":
        out.append(f"{I2}o, _ = chunk_delta_rule(q, k, v, beta, {ck})")
    elif g.operator == "gated_delta":
        out.append(f"{I2}o, _ = chunk_gated_delta_rule(q, k, v, g, beta, {ck})")
    elif g.operator == "ssd":
        if g.decay == "scalar_data":
            out.append(f"{I2}v_in = v * dt.unsqueeze(-1).to(v.dtype)  # discretised input, as in Mamba2")
        else:
            out.append(f"{I2}v_in = v * (1.0 - self.log_decay.exp()).view(1, 1, -1, 1).to(v.dtype)  # unit-gain input")
        out.append(f"{I2}o, _ = chunk_ssd(q, k, v_in, g, {ck})")
    else:
        out += [
            f"{I2}g = q.new_zeros(b, t, self.num_heads, dtype=torch.float32)  # no decay: a running sum",
            f"{I2}o, _ = chunk_ssd(q, k, v, g, {ck})",
        ]
    if g.output_norm == "rms":
        out.append(f"{I2}o = self.o_norm(o)")
    if g.window:
        out.append(f"{I2}o = o + self.local_mix.view(1, 1, -1, 1) * self._local_attention(q, k, v)")
    if g.d_skip:
        out.append(f"{I2}o = o + v * self.D.view(1, 1, -1, 1).to(v.dtype)")
    if g.output_gate != "none":
        act = "F.silu" if g.output_gate == "silu" else "torch.sigmoid"
        out.append(f"{I2}o = o * {act}(self.g_proj(hidden_states)).view(b, t, self.num_heads, self.head_v_dim)")
    out.append(f"{I2}return self.o_proj(o.reshape(b, t, self.value_dim))")
    return "\n".join(out) + "\n"
