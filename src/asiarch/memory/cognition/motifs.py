"""The fixed motif vocabulary that tags cognition-base entries.

The offline proposer maps each tag to a code transformation of a token mixer, so an
entry may only use tags from :data:`MOTIFS`. Adding a tag means adding a transformation.
"""

from __future__ import annotations

MOTIF_DESCRIPTIONS: dict[str, str] = {
    "feature_map": "kernel feature map on q/k (elu+1, relu, softmax approximation, Taylor, polynomial)",
    "qk_norm": "L2 / RMS normalisation of queries and keys",
    "beta_param": "write-strength / learning-rate parametrisation of the state update",
    "scalar_decay": "per-head scalar forget gate on the state",
    "vector_decay": "per-channel (diagonal) forget gate on the state",
    "data_dependent_decay": "forget gate computed from the current input",
    "fixed_decay": "data-independent decay of the state (RetNet style)",
    "short_conv": "causal depthwise short convolution on q/k/v",
    "output_gate": "multiplicative gate on the mixer output",
    "output_norm": "normalisation of the mixer output (per-head RMSNorm / GroupNorm)",
    "delta_rule": "error-correcting (delta-rule) state update",
    "householder_products": "several delta steps per token / products of Householder transitions",
    "negative_eigenvalues": "state-transition eigenvalues allowed in [-1, 1]",
    "state_expansion": "larger recurrent state: more heads, larger key dim, expanded value",
    "multiscale_heads": "heads with different decay timescales",
    "mixed_heads": "heads of different mixer types inside one layer",
    "sliding_window": "local softmax attention over a sliding window",
    "hybrid_layers": "interleave softmax-attention and recurrent layers",
    "residual_skip": "skip / residual paths inside the mixer (e.g. the SSM D skip)",
    "chunkwise_parallel": "chunked training algorithm / hardware-efficient computation",
    "long_conv": "long (implicit) convolutions over the sequence",
    "test_time_training": "state updated by gradient descent on an inner objective",
    "momentum": "momentum / surprise accumulation in the state update",
    "token_shift": "mixing the current token with the previous one",
    "positional_encoding": "rotary / relative positions / decay acting as position",
}

MOTIFS: frozenset[str] = frozenset(MOTIF_DESCRIPTIONS)

__all__ = ["MOTIFS", "MOTIF_DESCRIPTIONS"]
