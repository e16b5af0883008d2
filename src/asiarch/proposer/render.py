"""Render a :class:`~asiarch.proposer.genome.Genome` as candidate source code.

The output is self-contained PyTorch that imports only what the candidate policy allows
(``torch``, ``math`` and the vetted operators in ``asiarch.arch.ops``), so the chunkwise
CPU paths and the Triton kernels on CUDA (flash-linear-attention's and asiarch's) come
with it. Rendering is a pure function of the genome and the class name: the same inputs
give byte-identical source.
"""

from __future__ import annotations

import json

import re

from asiarch.proposer.genome import DELTA_OPS, LOW_RANK, SEED_GENOMES, Genome, name_for, seed_genome

__all__ = ["class_name_for", "render"]

_OPERATOR_TEXT = {
    "delta": "the delta rule (an error-correcting write to a matrix state)",
    "gated_delta": "the gated delta rule (delta-rule writes plus a per-head forget gate)",
    "ssd": "a scalar-decay linear recurrence (Mamba2's SSD)",
    "linear": "plain causal linear attention (an undecayed running sum of k v^T)",
    "dplr": "RWKV-7's state update (a per-channel decay plus a rank-1 removal along its own key)",
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
    for name in SEED_GENOMES:
        if genome.normalised() == seed_genome(name):
            return name
    return None


def _operator_function(g: Genome) -> str:
    """The ``asiarch.arch.ops`` function that runs the genome's recurrence."""
    if g.operator == "dplr":
        return "chunk_rwkv7"
    if g.operator in DELTA_OPS:
        if g.householder > 1:
            return "chunk_gated_delta_product"
        if g.beta == "channel":
            return "chunk_gdn2"
        if g.decay == "channel_data":
            return "chunk_kda"
        return "chunk_gated_delta_rule" if g.operator == "gated_delta" else "chunk_delta_rule"
    return "chunk_gdn2" if g.decay == "channel_data" else "chunk_ssd"


def render(genome: Genome, class_name: str | None = None) -> str:
    """Contract-conforming candidate source for ``genome`` (normalised first)."""
    g = genome.normalised()
    cls = class_name or class_name_for(g)
    if not cls.isidentifier():
        raise ValueError(f"class name {cls!r} is not a Python identifier")
    delta = g.operator in DELTA_OPS
    conv = g.short_conv
    feat = _FEATURE_CODE[g.feature_map]

    steps = g.householder
    imports = [_operator_function(g)]
    if conv:
        imports.append("ShortConvolution")
    if g.window:
        imports.append("sliding_window_attention")
    if g.decay in ("scalar_data", "channel_data"):
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
    ]
    times = f"{steps} * " if steps > 1 else ""
    if steps > 1:
        out.append(f"{I2}# {steps} Householder (delta-rule) steps per token: a key, value and strength for each")
    out += [
        f"{I2}self.k_proj = nn.Linear(hidden_size, {times}hidden_size, bias=False)",
        f"{I2}self.v_proj = nn.Linear(hidden_size, {times}self.value_dim, bias=False)",
    ]
    if conv:
        out += [
            f"{I2}# causal depthwise short convolutions (kernel {conv}) on q, k and v",
            f"{I2}self.q_conv = ShortConvolution(hidden_size, {conv}, activation=None)",
            f"{I2}self.k_conv = ShortConvolution({times}hidden_size, {conv}, activation=None)",
            f'{I2}self.v_conv = ShortConvolution({times}self.value_dim, {conv}, activation="silu")',
        ]
    if g.token_shift:
        out.append(f"{I2}self.shift_mix = nn.Parameter(torch.full((hidden_size,), 0.5))  # token shift: weight of x_(t-1)")
    if g.operator == "dplr":
        out += [
            f"{I2}# per-channel in-context learning rate (low rank) and the removal key's per-channel scale",
            f"{I2}self.iclr_proj = nn.Sequential(nn.Linear(hidden_size, {LOW_RANK}, bias=False), nn.Linear({LOW_RANK}, hidden_size, bias=False))",
            f"{I2}self.k_k = nn.Parameter(torch.full((hidden_size,), 0.85))",
        ]
    elif g.beta in ("sigmoid", "sigmoid2"):
        out.append(f"{I2}self.b_proj = nn.Linear(hidden_size, {times}self.num_heads, bias=False)  # write strength")
    elif g.beta == "const":
        out.append(f"{I2}self.beta_logit = nn.Parameter(torch.zeros({times}self.num_heads))  # data-independent write strength")
    elif g.beta == "channel":
        out += [
            f"{I2}# per-key-channel erase gate and per-value-channel write gate (low rank), Gated DeltaNet-2 style",
            f"{I2}self.erase_proj = nn.Sequential(nn.Linear(hidden_size, {LOW_RANK}, bias=False), nn.Linear({LOW_RANK}, hidden_size, bias=False))",
            f"{I2}self.write_proj = nn.Sequential(nn.Linear(hidden_size, {LOW_RANK}, bias=False), nn.Linear({LOW_RANK}, self.value_dim, bias=False))",
        ]
    if g.decay == "channel_data":
        out += [
            f"{I2}# data-dependent decay per key channel from a low-rank projection (KDA): g = -exp(A_log) * softplus(f + dt_bias)",
            f"{I2}self.f_proj = nn.Sequential(nn.Linear(hidden_size, {LOW_RANK}, bias=False), nn.Linear({LOW_RANK}, hidden_size, bias=False))",
            f"{I2}self.A_log, self.dt_bias = init_decay_parameters(hidden_size)",
        ]
    elif g.decay == "scalar_data":
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

    # ------------------------------------------------------------------ forward
    out += [
        f"{I1}def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:",
        f"{I2}b, t, _ = hidden_states.shape",
        f"{I2}heads = (b, t, self.num_heads, self.head_dim)",
    ]
    x = "hidden_states"
    if g.token_shift:
        x = "x"
        out.append(f"{I2}x = hidden_states + (F.pad(hidden_states, (0, 0, 1, 0))[:, :-1] - hidden_states) * self.shift_mix")
    qx, kx, vx = f"self.q_proj({x})", f"self.k_proj({x})", f"self.v_proj({x})"
    if conv:
        qx, kx, vx = f"self.q_conv({qx})", f"self.k_conv({kx})", f"self.v_conv({vx})"
    else:
        vx = f"F.silu({vx})"
    t_steps = f"t * {steps}" if steps > 1 else "t"
    out += [
        f"{I2}q = {feat.format(x=qx)}.view(heads)",
        f"{I2}k = {feat.format(x=kx)}." + (f"reshape(b, {t_steps}, self.num_heads, self.head_dim)  # token t's steps at t*{steps}.."
                                          if steps > 1 else "view(heads)"),
        f"{I2}v = {vx}.{'reshape' if steps > 1 else 'view'}(b, {t_steps}, self.num_heads, self.head_v_dim)",
    ]
    if g.operator == "dplr":
        out.append(f"{I2}kk = F.normalize(k * self.k_k.view(1, 1, self.num_heads, self.head_dim), p=2, dim=-1)  # removal key")
    if g.qk_norm == "l2":
        out += [f"{I2}q = F.normalize(q, p=2, dim=-1)", f"{I2}k = F.normalize(k, p=2, dim=-1)"]
    if g.operator == "dplr":
        out.append(f"{I2}a = self.iclr_proj({x}).sigmoid().view(heads)  # per-channel in-context learning rate")
    elif g.beta == "sigmoid":
        out.append(f"{I2}beta = self.b_proj({x}).sigmoid()" + (f".reshape(b, {t_steps}, self.num_heads)" if steps > 1 else ""))
    elif g.beta == "sigmoid2":
        out.append(f"{I2}beta = 2.0 * self.b_proj({x}).sigmoid()" + (f".reshape(b, {t_steps}, self.num_heads)" if steps > 1 else "")
                   + "  # in (0, 2): eigenvalues in (-1, 1)")
    elif g.beta == "const":
        out.append(f"{I2}beta = self.beta_logit.sigmoid().view(1, 1, -1).expand(b, t, -1)"
                   + (f".reshape(b, {t_steps}, self.num_heads)" if steps > 1 else ""))
    elif g.beta == "channel":
        out += [
            f"{I2}erase = self.erase_proj({x}).sigmoid().view(heads)",
            f"{I2}write = self.write_proj({x}).sigmoid().view(b, t, self.num_heads, self.head_v_dim)",
        ]
    if g.decay == "channel_data":
        out.append(f"{I2}g = (-self.A_log.float().exp() * F.softplus(self.f_proj({x}).float() + self.dt_bias)).view(heads)")
    elif g.decay == "scalar_data":
        out += [
            f"{I2}dt = F.softplus(self.a_proj({x}).float() + self.dt_bias)  # [B, T, H]",
            f"{I2}g = -self.A_log.float().exp() * dt",
        ]
    elif g.decay == "fixed_multiscale":
        out.append(f"{I2}g = self.log_decay.view(1, 1, -1).expand(b, t, self.num_heads)")
    ck = "chunk_size=self.chunk_size, backend=self.backend"
    if g.operator == "dplr":
        out.append(f"{I2}o, _ = chunk_rwkv7(q, g, k, v, -kk, kk * a, scale=self.head_dim**-0.5, {ck})")
    elif delta and steps > 1:
        gate = "g" if g.operator == "gated_delta" else "None"
        out += [
            f"{I2}o, _ = chunk_gated_delta_product(q, k, v, {gate}, beta, {steps}, {ck})",
            f"{I2}k = k.reshape(b, t, {steps}, self.num_heads, self.head_dim)[:, :, -1]  # each token's last step",
            f"{I2}v = v.reshape(b, t, {steps}, self.num_heads, self.head_v_dim)[:, :, -1]",
        ]
    elif delta and g.beta == "channel":
        if g.decay == "none":
            out.append(f"{I2}g = q.new_zeros(heads, dtype=torch.float32)  # no decay")
        elif g.decay != "channel_data":
            out.append(f"{I2}g = g.unsqueeze(-1).expand(-1, -1, -1, self.head_dim)  # the head's decay on every channel")
        out.append(f"{I2}o, _ = chunk_gdn2(q, k, v, g, erase, write, {ck})")
    elif delta and g.decay == "channel_data":
        out.append(f"{I2}o, _ = chunk_kda(q, k, v, g, beta, {ck})")
    elif g.operator == "delta":
        out.append(f"{I2}o, _ = chunk_delta_rule(q, k, v, beta, {ck})")
    elif g.operator == "gated_delta":
        out.append(f"{I2}o, _ = chunk_gated_delta_rule(q, k, v, g, beta, {ck})")
    elif g.decay == "channel_data":  # GLA: the channel-decayed recurrence with no erase and full writes
        out.append(f"{I2}o, _ = chunk_gdn2(q, k, v, g, torch.zeros_like(k), torch.ones_like(v), {ck})")
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
        out += [
            f"{I2}temperature = self.local_log_temp.exp().view(1, 1, -1, 1)  # learned per-head sharpness",
            f"{I2}local = sliding_window_attention(q * temperature, k, v, self.window, scale=1.0, backend=self.backend)",
            f"{I2}o = o + self.local_mix.view(1, 1, -1, 1) * local",
        ]
    if g.d_skip:
        out.append(f"{I2}o = o + v * self.D.view(1, 1, -1, 1).to(v.dtype)")
    if g.output_gate != "none":
        act = "F.silu" if g.output_gate == "silu" else "torch.sigmoid"
        out.append(f"{I2}o = o * {act}(self.g_proj({x})).view(b, t, self.num_heads, self.head_v_dim)")
    out.append(f"{I2}return self.o_proj(o.reshape(b, t, self.value_dim))")
    return "\n".join(out) + "\n"
