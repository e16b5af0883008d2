"""The delta rule and the gated delta rule, chunkwise.

Recurrence (state ``S`` is ``[K, V]`` per head, ``alpha_t = exp(g_t)``, 1 if ungated):

    S_t = alpha_t S_{t-1} + beta_t k_t (v_t - alpha_t S_{t-1}^T k_t)^T,    o_t = S_t^T (scale q_t)

Chunkwise form (Yang et al., 2024, "Parallelizing Linear Transformers with the Delta Rule
over Sequence Length"): inside a chunk the corrections ``u`` solve a unit lower-triangular
system (the WY representation), so a chunk costs a few matmuls and one triangular solve;
only the chunks are visited sequentially. Cost is O(T C (K + V) + T K V): linear in T.
"""

from __future__ import annotations

import torch

from asiarch.arch.ops.backend import pad_to_chunks, use_fla


def _to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[B, T, H, ...]`` (T a multiple of chunk_size) -> ``[B, H, N, C, ...]``."""
    b, t, h = x.shape[:3]
    x = x.reshape(b, t // chunk_size, chunk_size, h, *x.shape[3:])
    return x.movedim(3, 1)


def _decay_matrix(g_cum: torch.Tensor) -> torch.Tensor:
    """``exp(G_t - G_j)`` for j <= t and 0 above the diagonal, from cumulative log-decays."""
    c = g_cum.shape[-1]
    diff = g_cum[..., :, None] - g_cum[..., None, :]
    causal = torch.ones(c, c, dtype=torch.bool, device=g_cum.device).tril()
    return diff.masked_fill(~causal, float("-inf")).exp()


def delta_rule_chunk_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pure-PyTorch chunkwise (gated) delta rule on ``[B, T, H, D]`` inputs, computed in fp32."""
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    out_dtype = v.dtype
    scale = dk**-0.5 if scale is None else scale
    q, k, v, beta = (x.float() for x in (q, k, v, beta))
    q = q * scale
    q, k, v, beta = (pad_to_chunks(x, chunk_size) for x in (q, k, v, beta))
    q, k, v = (_to_chunks(x, chunk_size) for x in (q, k, v))  # [B, H, N, C, D]
    beta = _to_chunks(beta, chunk_size)[..., None]  # [B, H, N, C, 1]
    n_chunks = q.shape[2]

    k_beta, v_beta = k * beta, v * beta
    # L[t, j] = beta_t <k_t, k_j> (times the decay from j to t) for j < t.
    kk = k_beta @ k.transpose(-1, -2)
    qk = q @ k.transpose(-1, -2)
    if g is not None:
        g_cum = _to_chunks(pad_to_chunks(g.float(), chunk_size), chunk_size).cumsum(-1)  # [B, H, N, C]
        decay = _decay_matrix(g_cum)
        kk, qk = kk * decay, qk * decay
        k_beta = k_beta * g_cum.exp()[..., None]
    unit_lower = kk.tril(-1) + torch.eye(chunk_size, device=q.device, dtype=q.dtype)
    u = torch.linalg.solve_triangular(unit_lower, v_beta, upper=False, unitriangular=True)
    w = torch.linalg.solve_triangular(unit_lower, k_beta, upper=False, unitriangular=True)
    qk = qk.tril()

    if g is not None:
        g_last = g_cum[..., -1:]  # [B, H, N, 1]
        q = q * g_cum.exp()[..., None]  # reads the chunk-start state decayed to position t
        k = k * (g_last - g_cum).exp()[..., None]  # writes decayed to the chunk end
        chunk_decay = g_last.exp()[..., None]  # [B, H, N, 1, 1]
    k_t = k.transpose(-1, -2)

    # Only the state recursion is sequential; it touches each chunk with two matmuls.
    # unbind (not u[:, :, n]) so backward stacks the chunk grads once instead of
    # materialising a zero-filled full-size gradient per chunk (quadratic in T).
    state = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.float()
    decays = chunk_decay.unbind(2) if g is not None else [None] * n_chunks
    chunk_states, corrections = [], []
    for u_n, w_n, k_t_n, decay_n in zip(u.unbind(2), w.unbind(2), k_t.unbind(2), decays):
        u_n = u_n - w_n @ state
        chunk_states.append(state)
        corrections.append(u_n)
        if decay_n is not None:
            state = state * decay_n
        state = state + k_t_n @ u_n
    u = torch.stack(corrections, dim=2)
    o = q @ torch.stack(chunk_states, dim=2) + qk @ u  # [B, H, N, C, V]
    o = o.movedim(1, 3).reshape(b, n_chunks * chunk_size, h, dv)[:, :t]
    return o.to(out_dtype), (state if output_final_state else None)


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta rule over ``q, k [B,T,H,K]``, ``v [B,T,H,V]``, ``beta [B,T,H]``; returns ``(o, final_state)``."""
    if use_fla(q, backend):
        from fla.ops.delta_rule import chunk_delta_rule as fla_chunk_delta_rule

        return fla_chunk_delta_rule(
            q, k, v, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state
        )
    return delta_rule_chunk_torch(
        q, k, v, beta, None, scale, initial_state, output_final_state, chunk_size
    )


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule; ``g [B,T,H]`` is the per-step log decay (<= 0). Argument order follows fla."""
    if use_fla(q, backend):
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_chunk_gated_delta_rule

        return fla_chunk_gated_delta_rule(
            q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state
        )
    return delta_rule_chunk_torch(q, k, v, beta, g, scale, initial_state, output_final_state, chunk_size)
