"""The offline proposer's design space: a :class:`Genome` is a point in a small, explicit
space of linear-attention token mixers.

Every field is one architectural decision; :meth:`Genome.normalised` repairs combinations
that make no sense (a delta rule without L2-normalised keys, a "linear" operator with a
write strength, ...) and :meth:`Genome.motifs` names the cognition-base motifs the genome
realises, so retrieved knowledge can steer which fields the search changes.

This is a symbolic proposer: no language model is involved anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from asiarch.memory.cognition.motifs import MOTIFS

__all__ = [
    "FIELD_CHOICES", "Genome", "REFERENCE_PARAMETERS", "SEED_GENOMES", "estimate_parameters", "name_for",
    "seed_genome",
]

# The values each field may take, in a fixed order (the order matters for determinism).
FIELD_CHOICES: dict[str, tuple[Any, ...]] = {
    "operator": ("delta", "gated_delta", "ssd", "linear", "dplr"),
    "feature_map": ("identity", "silu", "elu1", "relu"),
    "qk_norm": ("l2", "none"),
    "beta": ("sigmoid", "sigmoid2", "const", "none", "channel"),
    "decay": ("none", "scalar_data", "fixed_multiscale", "channel_data"),
    "short_conv": (0, 2, 3, 4),
    "output_gate": ("none", "silu", "sigmoid"),
    "output_norm": ("rms", "none"),
    "head_mult": (1, 2),
    "value_expand": (1, 2),
    "window": (0, 16, 32, 64),
    "d_skip": (False, True),
    "householder": (1, 2),
    "token_shift": (False, True),
}

DELTA_OPS = ("delta", "gated_delta")
DECAYED_OPS = ("gated_delta", "ssd", "dplr")
LOW_RANK = 32  # rank of the low-rank projections that produce per-channel gates (fla's KDA / RWKV-7 style)

# DeltaNet at hidden 128 / 4 heads: q, k, v, o projections, beta projection, three
# kernel-4 short convolutions and the per-head RMSNorm weight.
REFERENCE_PARAMETERS = 4 * 128 * 128 + 128 * 4 + 3 * 128 * 4 + 32
MAX_PARAMETER_RATIO = 1.9  # the checker allows 2.0; keep a margin


@dataclass(frozen=True)
class Genome:
    """One token mixer. Field values are listed in :data:`FIELD_CHOICES`.

    operator      "delta" (delta rule), "gated_delta" (delta rule with a forget gate),
                  "ssd" (scalar-decay linear recurrence, Mamba2's SSD; with channel_data decay
                  it is GLA), "linear" (plain causal linear attention: SSD with zero log-decay),
                  "dplr" (RWKV-7's state update: a per-channel decay plus a rank-1 removal along
                  its own normalised key with a per-channel in-context learning rate)
    feature_map   kernel on q/k before the norm: "identity", "silu", "elu1" (elu+1), "relu"
    qk_norm       "l2" or "none" (the delta ops always use "l2")
    beta          write strength: "sigmoid", "sigmoid2" (2*sigmoid: eigenvalues of the
                  transition in [-1, 1]), "const" (a learned per-head constant), "none"
                  (only for "ssd"/"linear", which have no write strength), "channel"
                  (Gated DeltaNet-2: a per-key-channel erase gate and a per-value-channel
                  write gate, delta family only)
    decay         "none", "scalar_data" (Mamba2-style data-dependent per-head decay),
                  "fixed_multiscale" (RetNet-like fixed per-head decays), "channel_data"
                  (a data-dependent decay per key channel, from a low-rank projection: KDA)
    short_conv    kernel size of causal depthwise convolutions on q/k/v; 0 = none
    output_gate   "none", "silu", "sigmoid" gate from the input on the mixer output
    output_norm   per-head "rms" norm on the operator output, or "none"
    head_mult     1 or 2: split the width into num_heads * head_mult heads
    value_expand  1 or 2: value (and state) width is value_expand * hidden_size
    window        0, or W: a causal sliding-window softmax branch over the last W tokens
    d_skip        a per-head learned skip ``o += D * v`` (Mamba2's D)
    householder   1, or 2 delta-rule (Householder) steps per token, each with its own key,
                  value and strength (Gated DeltaProduct); delta family with a scalar decay or none
    token_shift   mix each token's input with the previous token's by a learned per-channel
                  weight before the projections (RWKV's token shift)
    """

    operator: str = "delta"
    feature_map: str = "silu"
    qk_norm: str = "l2"
    beta: str = "sigmoid"
    decay: str = "none"
    short_conv: int = 4
    output_gate: str = "none"
    output_norm: str = "rms"
    head_mult: int = 1
    value_expand: int = 1
    window: int = 0
    d_skip: bool = False
    householder: int = 1
    token_shift: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in FIELD_CHOICES[f.name]:
                raise ValueError(f"Genome.{f.name}={value!r}; choose from {FIELD_CHOICES[f.name]}")

    # ---------------------------------------------------------------- validity
    def normalised(self) -> "Genome":
        """The nearest valid genome (idempotent). The decay field decides between the
        decayed and undecayed variant of an operator family."""
        g = self
        family_delta = g.operator in DELTA_OPS
        if g.operator == "dplr":
            # its own removal key is L2-normalised; the decay is per channel; the beta projection
            # becomes the per-channel in-context learning rate
            g = replace(g, decay="channel_data", qk_norm="l2", beta="sigmoid", householder=1)
        elif family_delta:
            g = replace(g, operator="gated_delta" if g.decay != "none" else "delta", qk_norm="l2")
            if g.beta == "none":
                g = replace(g, beta="sigmoid")
            if g.householder > 1 and (g.decay == "channel_data" or g.beta == "channel"):
                g = replace(g, householder=1)  # the product of steps is built on the scalar-decay delta rule
        else:
            g = replace(g, operator="ssd" if g.decay != "none" else "linear", beta="none", householder=1)
            if g.operator == "linear":
                # Undecayed linear attention sums over the whole prefix: keep its scale in check.
                g = replace(g, output_norm="rms")
            if g.qk_norm == "none" and g.feature_map == "identity" and g.output_norm == "none":
                g = replace(g, output_norm="rms")
        for costly in ({"value_expand": 1}, {"head_mult": 1}, {"householder": 1}):
            if estimate_parameters(g) > MAX_PARAMETER_RATIO * REFERENCE_PARAMETERS:
                g = replace(g, **costly)
        return g

    def is_valid(self) -> bool:
        return self.normalised() == self

    # ---------------------------------------------------------------- motifs
    def motifs(self) -> set[str]:
        """The motif tags (from ``MOTIFS``) this genome realises."""
        g = self.normalised()
        tags = {"chunkwise_parallel"}
        if g.operator in DELTA_OPS or g.operator == "dplr":
            tags.add("delta_rule")
        if g.feature_map != "identity":
            tags.add("feature_map")
        if g.qk_norm == "l2":
            tags.add("qk_norm")
        if g.beta != "none":
            tags.add("beta_param")
        if g.beta == "sigmoid2":
            tags.add("negative_eigenvalues")
        if g.decay == "channel_data":
            tags |= {"vector_decay", "data_dependent_decay"}
        if g.householder > 1:
            tags.add("householder_products")
        if g.token_shift:
            tags.add("token_shift")
        if g.decay == "scalar_data":
            tags |= {"scalar_decay", "data_dependent_decay"}
        if g.decay == "fixed_multiscale":
            tags |= {"scalar_decay", "fixed_decay", "multiscale_heads", "positional_encoding"}
        if g.head_mult == 2 and g.decay != "none":
            tags.add("multiscale_heads")  # more heads, more distinct decay timescales
        if g.short_conv:
            tags.add("short_conv")
        if g.output_gate != "none":
            tags.add("output_gate")
        if g.output_norm != "none":
            tags.add("output_norm")
        if g.value_expand == 2:
            tags.add("state_expansion")
        if g.window:
            tags.add("sliding_window")
        if g.d_skip:
            tags.add("residual_skip")
        assert tags <= MOTIFS, tags - MOTIFS
        return tags

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Genome":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__}).normalised()


def estimate_parameters(genome: Genome, hidden_size: int = 128, num_heads: int = 4) -> int:
    """Parameter count of ``render(genome)`` at this shape (mirrors the renderer exactly)."""
    g = genome
    heads = num_heads * g.head_mult
    dv = g.value_expand * hidden_size
    steps = g.householder  # keys, values and strengths per token
    n = hidden_size * hidden_size + steps * hidden_size * hidden_size + steps * hidden_size * dv + dv * hidden_size
    if g.short_conv:
        n += (hidden_size + steps * (hidden_size + dv)) * g.short_conv
    if g.operator == "dplr":
        n += 2 * hidden_size * LOW_RANK + hidden_size  # in-context learning rate (low rank) and the removal key's scale
    elif g.beta in ("sigmoid", "sigmoid2"):
        n += steps * hidden_size * heads
    elif g.beta == "const":
        n += steps * heads
    elif g.beta == "channel":
        n += (hidden_size * LOW_RANK + LOW_RANK * hidden_size) + (hidden_size * LOW_RANK + LOW_RANK * dv)
    if g.decay == "scalar_data":
        n += hidden_size * heads + 2 * heads
    elif g.decay == "channel_data":
        n += 2 * hidden_size * LOW_RANK + 2 * hidden_size
    if g.output_gate != "none":
        n += hidden_size * dv
    if g.output_norm == "rms":
        n += dv // heads
    if g.window:
        n += 2 * heads  # local temperature and mixing weight
    if g.d_skip:
        n += heads
    if g.token_shift:
        n += hidden_size
    return n


# The seeds the offline proposer can start from, as genomes close to their layers.
SEED_GENOMES: dict[str, Genome] = {
    "deltanet": Genome(),
    "gated_deltanet": Genome(operator="gated_delta", decay="scalar_data", output_gate="silu"),
    # Mamba2 shares B/C across heads and expands x; here per-head q/k of the same width.
    "mamba2": Genome(operator="ssd", feature_map="silu", qk_norm="none", beta="none", decay="scalar_data",
                     output_gate="silu", output_norm="rms", d_skip=True),
    # KDA: the gated delta rule with a per-channel decay from a low-rank projection, sigmoid output gate.
    "kda": Genome(operator="gated_delta", decay="channel_data", output_gate="sigmoid"),
    # Gated DeltaNet-2: KDA with per-channel erase (key) and write (value) gates instead of one beta.
    "gdn2": Genome(operator="gated_delta", decay="channel_data", beta="channel", output_gate="sigmoid"),
    # RWKV-7: token shift, per-channel decay, removal along its own key with a per-channel learning rate.
    "rwkv7": Genome(operator="dplr", feature_map="identity", decay="channel_data", short_conv=0, token_shift=True,
                   output_gate="sigmoid"),
    # Gated DeltaProduct: two Householder (delta) steps per token under one scalar decay.
    "gated_deltaproduct": Genome(operator="gated_delta", decay="scalar_data", householder=2, output_gate="silu"),
}


def seed_genome(name: str) -> Genome:
    """A genome close to one of the seed mixers (the keys of :data:`SEED_GENOMES`)."""
    if name not in SEED_GENOMES:
        raise ValueError(f"unknown seed {name!r}; choose from {', '.join(SEED_GENOMES)}")
    return SEED_GENOMES[name].normalised()


_OP_SLUG = {"delta": "delta", "gated_delta": "gdelta", "ssd": "ssd", "linear": "lin", "dplr": "dplr"}


def name_for(genome: Genome) -> str:
    """A short readable slug, one token per non-default choice (injective on valid genomes)."""
    g = genome.normalised()
    parts = [_OP_SLUG[g.operator]]
    if g.feature_map != "identity":
        parts.append(g.feature_map)
    if g.qk_norm == "none":
        parts.append("noqknorm")
    if g.beta == "sigmoid2":
        parts.append("neg")
    elif g.beta == "const":
        parts.append("cbeta")
    elif g.beta == "channel":
        parts.append("chgate")
    if g.decay == "fixed_multiscale":
        parts.append("ms")
    elif g.decay == "channel_data" and g.operator != "dplr":
        parts.append("cdecay")
    if g.householder > 1:
        parts.append(f"hh{g.householder}")
    if g.token_shift:
        parts.append("tshift")
    parts.append(f"conv{g.short_conv}" if g.short_conv else "noconv")
    if g.output_gate == "silu":
        parts.append("ogate")
    elif g.output_gate == "sigmoid":
        parts.append("sgate")
    if g.output_norm == "none":
        parts.append("nonorm")
    if g.head_mult == 2:
        parts.append("h2")
    if g.value_expand == 2:
        parts.append("v2")
    if g.window:
        parts.append(f"sw{g.window}")
    if g.d_skip:
        parts.append("dskip")
    return "-".join(parts)
