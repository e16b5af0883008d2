"""Delta rules with channel-wise gates: Gated DeltaNet-2 (GDN2) and Kimi Delta Attention (KDA).

Recurrence per head (state ``S`` is ``[K, V]``; ``g_t`` in R^K is a log decay per key channel,
``b_t`` in R^K an erase gate on the key axis, ``w_t`` in R^V a write gate on the value axis):

    S_t = (I - k_t (b_t * k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t * v_t)^T,    o_t = S_t^T (scale q_t)

KDA (Kimi Linear, 2025) is the special case ``b_t = w_t = beta_t`` (a scalar per head and token);
with a scalar decay as well it is the gated delta rule of ``delta_rule.py``.

Chunkwise form. Write ``S_t = D_t S_{t-1} + k_t u_t^T``, where ``D_t = Diag(exp g_t)`` and the
correction ``u_t = w_t * v_t - (b_t * k_t)^T D_t S_{t-1}``. Inside a chunk with start state
``S_0`` and cumulative log decays ``G_t = g_1 + ... + g_t`` (per channel, non-increasing):

    D_t S_{t-1} = Diag(exp G_t) S_0 + sum_{j<t} (exp(G_t - G_j) * k_j) u_j^T

so the corrections solve the unit lower-triangular system (the WY representation)

    (I + A) U = W*V - (B*K*exp G) S_0,    A[t, j] = sum_d b_td k_td k_jd exp(G_td - G_jd)  (j < t)

i.e. ``U = U_0 - W_0 S_0`` with ``U_0 = (I+A)^{-1} (W*V)`` and ``W_0 = (I+A)^{-1} (B*K*exp G)``,
both computed for all chunks at once. Outputs and the next chunk's state are

    o_t = (q_t * exp G_t)^T S_0 + sum_{j<=t} P[t, j] u_j,   P[t, j] = sum_d q_td k_jd exp(G_td - G_jd)
    S_C = Diag(exp G_C) S_0 + sum_j (exp(G_C - G_j) * k_j) u_j^T

and only that state recursion visits the chunks in order. Cost is O(T C K + T K V): linear in T.

Numerical safety. The usual factorisation ``exp(G_t - G_j) = exp(G_t) exp(-G_j)`` overflows
fp32 once ``-G_j`` passes ~88 (a chunk of 64 steps at log decay -1.4 per step). Here nothing
positive is ever exponentiated: a chunk is cut into sub-chunks; pairs (t, j) in different
sub-chunks factor through the point just before t's sub-chunk, ``exp(G_t - R) * exp(R - G_j)``
(both exponents <= 0 since j < R's position <= t), and pairs inside one sub-chunk take their
decay elementwise. Every exponent is a sum of its own steps' log decays (masked matmuls, not
differences of cumulative sums, which cancel catastrophically when a weak decay follows strong
ones), so any finite decay, however strong, is accurate to fp32 rounding or underflows to zero.
"""

from __future__ import annotations

import torch

from asiarch.arch.ops.backend import pad_to_chunks, use_fla
from asiarch.arch.ops.delta_rule import _to_chunks

SUB_CHUNK = 8  # sqrt(64): balances the cross-sub-chunk factors (C/s copies of k) against the pairs (C*s)


def _sums(x: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """``out[..., a, :] = sum_i select[a, i] x[..., i, :]`` for a 0/1 ``select [A, L]`` and ``x [..., L, K]``.

    A matmul: each entry adds only its own terms (no difference of running sums, which would
    cancel catastrophically for a small decay following strong ones), and unlike cumsum/flip
    along a middle dimension it is fast on CPU, backward included.
    """
    return (x.transpose(-1, -2) @ select.T).transpose(-1, -2)


def _selectors(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    """0/1 matrices over positions ``0..n-1``: prefix (i <= t), suffix (i > j), pair segments (j < i <= t)."""
    pos = torch.arange(n, device=device)
    t, j, i = pos[:, None, None], pos[None, :, None], pos[None, None, :]
    return {
        "prefix": (pos[None, :] <= pos[:, None]).float(),
        "suffix": (pos[None, :] > pos[:, None]).float(),
        "segment": ((j < i) & (i <= t)).float().flatten(0, 1),  # [n*n, n]
        "causal": pos[None, :] <= pos[:, None],
    }


def _segment_sums(x: torch.Tensor) -> torch.Tensor:
    """``out[t, j] = x[j+1] + ... + x[t]`` for ``j <= t`` (0 on the diagonal) and -inf above it.

    ``x`` is ``[..., L, K]``, the result ``[..., L, L, K]``.
    """
    n = x.shape[-2]
    sel = _selectors(n, x.device)
    sums = _sums(x, sel["segment"]).unflatten(-2, (n, n))
    return sums.masked_fill(~sel["causal"][..., None], float("-inf"))


def _decayed_scores(rows: torch.Tensor, k: torch.Tensor, g: torch.Tensor, sub: int) -> torch.Tensor:
    """``M[t, j] = sum_d rows[t, d] k[j, d] exp(g[j+1, d] + ... + g[t, d])`` for ``j <= t``, 0 above.

    ``k, g`` are ``[..., C, K]`` (``g`` the per-step log decays) and ``rows`` is ``[R, ..., C, K]``
    (several row operands sharing keys and decays); returns ``[R, ..., C, C]``. ``C`` is a
    multiple of ``sub``. Every exponent is <= 0.
    """
    c = k.shape[-2]
    n = c // sub
    g_blk = g.unflatten(-2, (n, sub))  # [..., n, s, K]
    rows_blk = rows.unflatten(-2, (n, sub))  # [R, ..., n, s, K]
    k_blk = k.unflatten(-2, (n, sub))

    # Across sub-chunks, through the point just before t's sub-chunk p: exp(into p up to t)
    # times exp(from j to the end of its sub-chunk r, then through the sub-chunks between).
    sel = _selectors(sub, k.device)
    into = _sums(g_blk, sel["prefix"])  # [..., n, s, K]
    block_seg = _segment_sums(into[..., -1, :])  # [..., n, n, K]: sub-chunks r+1..a
    no_path = torch.full_like(block_seg[..., :1, :, :], float("-inf"))
    between = torch.cat([no_path, block_seg[..., :-1, :, :]], dim=-3)  # [p, r]: r+1..p-1, -inf unless r < p
    out_of = _sums(g_blk, sel["suffix"])  # [..., n, s, K]
    col_exp = between[..., :, :, None, :] + out_of[..., None, :, :, :]  # [..., n(p), n(r), s, K]
    cols = k[..., None, :, :] * col_exp.flatten(-3, -2).exp()  # [..., n, C, K], zero unless j before p
    r = rows.shape[0]
    row_f = (rows_blk * into.exp()).movedim(0, -3).flatten(-3, -2)  # [..., n, R*s, K]: no broadcast copy of cols
    off = (row_f @ cols.transpose(-1, -2)).unflatten(-2, (r, sub)).movedim(-3, 0)  # [R, ..., n, s, C]

    # Inside a sub-chunk: the decay of every pair, elementwise (faster than many tiny matmuls).
    k_pairs = k_blk[..., None, :, :] * _segment_sums(g_blk).exp()  # [..., n, s(t), s(j), K]
    diag = (rows_blk[..., :, None, :] * k_pairs).sum(-1)  # [R, ..., n, s, s]

    eye = torch.eye(n, device=k.device, dtype=k.dtype)[:, None, :, None]  # [n, 1, n, 1]
    full = off.unflatten(-1, (n, sub)) + diag[..., :, :, None, :] * eye  # [R, ..., n, s, n, s]
    return full.flatten(-4, -3).flatten(-2, -1)


def gdn2_chunk_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pure-PyTorch chunkwise GDN2 on ``[B, T, H, D]`` inputs, computed in fp32.

    ``b`` may be ``[B, T, H, K]`` or ``[B, T, H, 1]`` and ``w`` ``[B, T, H, V]`` or ``[B, T, H, 1]``
    (broadcast: the KDA case never expands its scalar beta).
    """
    bsz, t, h, dk = q.shape
    dv = v.shape[-1]
    out_dtype = v.dtype
    scale = dk**-0.5 if scale is None else scale
    q, k, v, g, b, w = (x.float() for x in (q, k, v, g, b, w))
    q = q * scale
    q, k, v, g, b, w = (_to_chunks(pad_to_chunks(x, chunk_size), chunk_size) for x in (q, k, v, g, b, w))
    n_chunks = q.shape[2]  # all now [B, H, N, C, D]

    sub = SUB_CHUNK if chunk_size % SUB_CHUNK == 0 else chunk_size
    k_erase = b * k
    qk, kk = _decayed_scores(torch.stack([q, k_erase]), k, g, sub).unbind(0)
    unit_lower = kk.tril(-1) + torch.eye(chunk_size, device=q.device, dtype=q.dtype)
    sel = _selectors(chunk_size, q.device)
    decay_in = _sums(g, sel["prefix"]).exp()  # from the chunk start to t
    u = torch.linalg.solve_triangular(unit_lower, w * v, upper=False, unitriangular=True)
    w_state = torch.linalg.solve_triangular(unit_lower, k_erase * decay_in, upper=False, unitriangular=True)

    q_in = q * decay_in  # reads the chunk-start state decayed to t
    k_out_t = (k * _sums(g, sel["suffix"]).exp()).transpose(-1, -2)  # writes decayed to the chunk end, [.., K, C]
    chunk_decay = g.sum(-2, keepdim=True).exp().transpose(-1, -2)  # [B, H, N, K, 1]

    # Sequential over chunks only; unbind so backward is linear in T (see delta_rule.py).
    state = q.new_zeros(bsz, h, dk, dv) if initial_state is None else initial_state.float()
    chunk_states, corrections = [], []
    for u_n, w_n, k_n, decay_n in zip(u.unbind(2), w_state.unbind(2), k_out_t.unbind(2), chunk_decay.unbind(2)):
        u_n = u_n - w_n @ state
        chunk_states.append(state)
        corrections.append(u_n)
        state = state * decay_n + k_n @ u_n
    u = torch.stack(corrections, dim=2)
    o = q_in @ torch.stack(chunk_states, dim=2) + qk @ u  # [B, H, N, C, V]
    o = o.movedim(1, 3).reshape(bsz, n_chunks * chunk_size, h, dv)[:, :t]
    return o.to(out_dtype), (state if output_final_state else None)


def chunk_gdn2(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GDN2 over ``q, k, g, b [B,T,H,K]``, ``v, w [B,T,H,V]``; returns ``(o, final_state [B,H,K,V])``.

    ``g`` is the per-channel log decay (<= 0). ``chunk_size`` applies to the PyTorch path; fla's
    kernel uses its own (64). Argument order follows ``fla.ops.gdn2.chunk_gdn2``.
    """
    if use_fla(q, backend):
        from fla.ops.gdn2 import chunk_gdn2 as fla_chunk_gdn2

        h0 = None if initial_state is None else initial_state.float()  # fla wants an fp32 state
        return fla_chunk_gdn2(q, k, v, g, b, w, scale=scale, initial_state=h0, output_final_state=output_final_state)
    return gdn2_chunk_torch(q, k, v, g, b, w, scale, initial_state, output_final_state, chunk_size)


def chunk_kda(
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
    """Kimi Delta Attention: GDN2 with ``b = w = beta``, ``beta [B,T,H]``; ``g [B,T,H,K]`` log decays.

    ``chunk_size`` applies to the PyTorch path; fla's kernel uses its own (64). Argument order
    follows ``fla.ops.kda.chunk_kda``.
    """
    if use_fla(q, backend):
        from fla.ops.kda import chunk_kda as fla_chunk_kda

        h0 = None if initial_state is None else initial_state.float()
        return fla_chunk_kda(q, k, v, g, beta, scale=scale, initial_state=h0, output_final_state=output_final_state)
    gate = beta[..., None]  # [B, T, H, 1]: broadcast over K (erase) and V (write)
    return gdn2_chunk_torch(q, k, v, g, gate, gate, scale, initial_state, output_final_state, chunk_size)
