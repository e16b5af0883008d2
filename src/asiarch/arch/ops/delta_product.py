"""The gated delta product (Siems et al., 2025, "DeltaProduct"): n delta-rule steps per token.

Recurrence, per head, state ``S`` ``[K, V]``; token ``t`` carries ``n`` keys, values and write
strengths ``k_{t,i}, v_{t,i}, beta_{t,i}`` and one log decay ``g_t``:

    S <- exp(g_t) S;   for i = 1..n:  S <- S + beta_{t,i} k_{t,i} (v_{t,i} - S^T k_{t,i})^T;
    o_t = S^T (scale q_t)

so the state transition is a product of ``n`` generalised Householder matrices
``(I - beta k k^T)`` times a scalar decay. With ``n`` sub-steps interleaved into a sequence of
length ``T n`` (fla's layout: ``k, v, beta`` are ``[B, T n, H, ...]``, token-major), this is the
gated delta rule on that longer sequence with the decay on each token's first sub-step only and
the query on its last; the PyTorch path reuses the chunkwise gated delta rule that way.
"""

from __future__ import annotations

import torch

from asiarch.arch.ops.backend import use_fla
from asiarch.arch.ops.delta_rule import delta_rule_chunk_torch


def chunk_gated_delta_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    num_householder: int,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta product; argument order and layout follow ``fla.ops.gated_delta_product``.

    ``q [B,T,H,K]``; ``k [B,T*n,H,K]``, ``v [B,T*n,H,V]``, ``beta [B,T*n,H]`` (sub-step ``i`` of
    token ``t`` at ``t*n + i``); ``g [B,T,H]`` log decay (<= 0) or None. Returns ``(o [B,T,H,V],
    final_state)``. ``chunk_size`` counts steps of the interleaved sequence (PyTorch path only).
    fla's kernel rejects fp32, so under ``backend="auto"`` fp32 CUDA tensors take the PyTorch path.
    """
    n = num_householder
    b, t, h, dk = q.shape
    if k.shape[1] != t * n or v.shape[1] != t * n or beta.shape[1] != t * n:
        raise ValueError(f"k, v and beta need T * num_householder = {t * n} steps, got {k.shape[1]}, "
                         f"{v.shape[1]}, {beta.shape[1]}")
    if use_fla(q, backend) and (backend == "fla" or q.dtype != torch.float32):
        from fla.ops.gated_delta_product import chunk_gated_delta_product as fla_chunk_gated_delta_product

        return fla_chunk_gated_delta_product(
            q, k, v, g, beta, num_householder=n, scale=scale, initial_state=initial_state,
            output_final_state=output_final_state,
        )
    # Query only on each token's last sub-step, decay only on its first.
    q_steps = torch.stack([torch.zeros_like(q)] * (n - 1) + [q], dim=2).flatten(1, 2)
    g_steps = None
    if g is not None:
        g_steps = torch.stack([g] + [torch.zeros_like(g)] * (n - 1), dim=2).flatten(1, 2)
    scale = dk**-0.5 if scale is None else scale
    o, state = delta_rule_chunk_torch(
        q_steps, k, v, beta, g_steps, scale, initial_state, output_final_state, chunk_size
    )
    return o.unflatten(1, (t, n))[:, :, -1], state
