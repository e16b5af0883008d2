"""The diagonal-plus-low-rank (DPLR) delta rule, chunkwise; RWKV-7's operator.

Recurrence, per head, state ``S`` of shape ``[K, V]`` (flash-linear-attention's convention,
``fla.ops.generalized_delta_rule.dplr``; RWKV-7 is the case ``gk = w``):

    S_t = (Diag(exp w_t) + b_t a_t^T) S_{t-1} + k_t v_t^T,        o_t = S_t^T (scale q_t)

``w_t <= 0`` is a per-key-channel log decay; RWKV-7 passes ``a = -kk`` and ``b = kk * iclr``
(a normalised removal key and its in-context learning rate), which makes the low-rank part
a delta-rule edit of the decayed state.

Chunkwise form. Inside a chunk (local steps ``t = 1..C``, chunk-start state ``S_0``) write
``G_t = w_1 + ... + w_t`` (per channel) and ``u_t = a_t^T S_{t-1}`` (a ``[V]`` row). Unrolling,

    S_t = e^{G_t} S_0 + sum_{j<=t} e^{G_t-G_j} (k_j v_j^T + b_j u_j)     (e^x acting per key row)
    u_t = (a_t e^{G_{t-1}})^T S_0 + sum_{j<t} [A_ak]_{tj} v_j + [A_ab]_{tj} u_j
    o_t = (q_t e^{G_t})^T S_0 + sum_{j<=t} [A_qk]_{tj} v_j + [A_qb]_{tj} u_j

with ``[A_xy]_{tj} = sum_c x_tc y_jc exp(G'_tc - G_jc)`` (``G' = G`` for queries, ``G_{t-1}``
for ``a``). So ``U = (I - A_ab)^{-1} ((a e^{G_{t-1}}) S_0 + A_ak V)``: one unit lower-triangular
solve per chunk gives ``U = W S_0 + U0`` with ``W, U0`` independent of the state, and only the
state recursion ``S <- e^{G_C} S + K_end^T V + B_end^T (U0 + W S)`` runs chunk by chunk.

Numerical safety. The plain factored form ``(x e^{G_t}) (y e^{-G_j})^T`` overflows once the decay
is strong (``e^{-G_j}`` reaches ``e^{320}`` for ``w = -5`` over 64 steps). Here the chunk is cut
into the fewest sub-chunks whose decay spans are at most ``MAX_SPAN`` (60): rows in sub-chunk
``p`` are scaled to its reference point ``r`` (the step before it), ``x_t e^{G_t - G_r} <= 1``,
and columns up to the end of ``p`` by ``e^{G_r - G_j} <= e^{MAX_SPAN}``; products that land
above the diagonal are finite and masked out. RWKV-7's decays (``w >= -0.61``) span at most 39
over a 64-chunk, so they use one sub-chunk: plain matmuls. Stronger decays fall back to smaller
sub-chunks (one host sync picks the size), down to single steps; a step's log decay is clamped
at ``-MAX_SPAN`` (a factor of 1e-26 instead of a smaller one, with zero gradient there).
"""

from __future__ import annotations

import torch

from asiarch.arch.ops.backend import pad_to_chunks, use_fla
from asiarch.arch.ops.delta_rule import _to_chunks

MAX_SPAN = 60.0  # largest decay exponent a factor may carry: e^60 ~ 1e26, far from fp32's ~3e38


def _sub_chunk_size(g: torch.Tensor, chunk_size: int) -> int:
    """The largest divisor ``c`` of the chunk size whose sub-chunks each decay by at most ``MAX_SPAN``.

    ``g [..., C, K]`` is the within-chunk cumulative log decay. The span of a sub-chunk is the
    largest ``G_r - G_j`` from its reference point ``r`` (the step before it) to a step ``j`` in it.
    """
    for c in (d for d in range(chunk_size, 0, -1) if chunk_size % d == 0):
        sub_g = g.unflatten(-2, (chunk_size // c, c))
        ref = torch.cat([torch.zeros_like(sub_g[..., :1, :1, :]), sub_g[..., :-1, -1:, :]], dim=-3)
        if c == 1 or (ref - sub_g).amax().item() <= MAX_SPAN:
            return c
    raise AssertionError("unreachable: c = 1 always qualifies")


def dplr_chunk_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pure-PyTorch chunkwise DPLR delta rule on ``[B, T, H, D]`` inputs, computed in fp32.

    ``q, k, a, b, gk`` are ``[B, T, H, K]`` (``gk`` the log decay, <= 0), ``v`` is ``[B, T, H, V]``,
    ``initial_state`` ``[B, H, K, V]``. Returns ``(o [B, T, H, V] in v's dtype, final state or None)``.
    """
    bsz, t, h, dk = q.shape
    dv = v.shape[-1]
    out_dtype = v.dtype
    q, k, v, a, b, gk = (x.float() for x in (q, k, v, a, b, gk))
    q = q * scale
    gk = gk.clamp(min=-MAX_SPAN)  # a step decaying by more than e^-60 (~1e-26) decays by exactly that
    q, k, v, a, b, gk = (_to_chunks(pad_to_chunks(x, chunk_size), chunk_size) for x in (q, k, v, a, b, gk))
    n_chunks = q.shape[2]

    g = gk.cumsum(-2)  # G_t, [B, H, N, C, K]
    g_prev = g - gk  # G_{t-1}
    g_end = g[..., -1:, :]  # G_C
    c = _sub_chunk_size(g, chunk_size)  # the whole chunk for RWKV-7's decays (span <= 0.61 C)
    n_sub = chunk_size // c

    # All four [C, C] matrices from one matmul per sub-chunk p, factored through its reference point
    # r_p (G at the step before p): rows x_t e^{G_t - G_r} (<= 1), columns y_j e^{G_r - G_j} for
    # j up to the end of p (<= e^{MAX_SPAN}: earlier columns decay, p's own grow at most by its span).
    sub = lambda x: x.unflatten(-2, (n_sub, c))  # noqa: E731  [..., C, K] -> [..., P, c, K]
    ref = torch.cat([torch.zeros_like(g[..., :1, :]), g[..., c - 1 : -1 : c, :]], dim=-2)[..., None, :]
    rows = torch.cat([sub(q) * (sub(g) - ref).exp(), sub(a) * (sub(g_prev) - ref).exp()], dim=-2)  # [.., P, 2c, K]
    steps = torch.arange(chunk_size, device=q.device)
    upto = steps[None, :] < (torch.arange(1, n_sub + 1, device=q.device) * c)[:, None]  # [P, C]: j < (p + 1) c
    col_decay = (ref - g[..., None, :, :]).masked_fill(~upto[:, :, None], float("-inf")).exp()  # [.., P, C, K]
    cols = torch.cat([k[..., None, :, :] * col_decay, b[..., None, :, :] * col_decay], dim=-2)  # [.., P, 2C, K]
    blocks = (rows @ cols.transpose(-1, -2)).unflatten(-1, (2, chunk_size)).unflatten(-3, (2, c))
    causal = steps[:, None] >= steps[None, :]
    (a_qk, a_qb), (a_ak, a_ab) = [
        [m.flatten(-3, -2).masked_fill(~keep, 0.0) for m in part.unbind(-2)]  # [B, H, N, C, C]
        for part, keep in zip(blocks.unbind(-4), (causal, causal.tril(-1)))  # query rows: j <= t; a rows: j < t
    ]

    # U = (I - A_ab)^{-1} [(a e^{G_{t-1}}) S_0 + A_ak V] = W S_0 + U0.
    eye = torch.eye(chunk_size, device=q.device, dtype=q.dtype)
    rhs = torch.cat([a * g_prev.exp(), a_ak @ v], dim=-1)
    solved = torch.linalg.solve_triangular(eye - a_ab, rhs, upper=False, unitriangular=True)
    w_s0, u0 = solved.split([dk, dv], dim=-1)

    to_end = (g_end - g).exp()  # e^{G_C - G_j} <= 1
    kv_end = (k * to_end).transpose(-1, -2) @ v  # [B, H, N, K, V]
    b_end_t = (b * to_end).transpose(-1, -2)
    chunk_decay = g_end.transpose(-1, -2).exp()  # [B, H, N, K, 1]

    # Only the state recursion is sequential (unbind: see delta_rule.py).
    state = q.new_zeros(bsz, h, dk, dv) if initial_state is None else initial_state.float()
    chunk_states, corrections = [], []
    for w_n, u0_n, kv_n, b_t_n, decay_n in zip(
        w_s0.unbind(2), u0.unbind(2), kv_end.unbind(2), b_end_t.unbind(2), chunk_decay.unbind(2)
    ):
        u_n = u0_n + w_n @ state
        chunk_states.append(state)
        corrections.append(u_n)
        state = decay_n * state + kv_n + b_t_n @ u_n
    u = torch.stack(corrections, dim=2)
    o = (q * g.exp()) @ torch.stack(chunk_states, dim=2) + a_qk @ v + a_qb @ u  # [B, H, N, C, V]
    o = o.movedim(1, 3).reshape(bsz, n_chunks * chunk_size, h, dv)[:, :t]
    return o.to(out_dtype), (state if output_final_state else None)


def chunk_rwkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
    lower_bound: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RWKV-7's DPLR delta rule; argument order follows ``fla.ops.rwkv7.chunk_rwkv7``.

    ``r, w, k, a, b [B,T,H,K]`` (``w`` the log decay, <= 0), ``v [B,T,H,V]``; returns
    ``(o, final_state)``. ``chunk_size`` is the PyTorch path's; on CUDA fla picks its own
    (64 when ``lower_bound``, a promise that ``w >= lower_bound``, makes that safe, else 16).
    ``lower_bound`` is not needed by the PyTorch path, which is safe for any decay.
    """
    if use_fla(r, backend):
        from fla.ops.rwkv7 import chunk_rwkv7 as fla_chunk_rwkv7

        return fla_chunk_rwkv7(
            r, w, k, v, a, b, scale=scale, initial_state=initial_state,
            output_final_state=output_final_state, lower_bound=lower_bound,
        )
    return dplr_chunk_torch(r, k, v, a, b, w, scale, initial_state, output_final_state, chunk_size)
