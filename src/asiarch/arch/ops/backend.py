"""Choosing between the pure-PyTorch path and flash-linear-attention kernels."""

from __future__ import annotations

import torch

BACKENDS = ("auto", "torch", "fla")


def use_fla(x: torch.Tensor, backend: str) -> bool:
    """True when the fla Triton kernel should run for ``x``.

    ``auto`` picks fla on CUDA tensors only: Triton has no CPU driver, so the
    chunkwise PyTorch path is the CPU implementation (and the reference on GPU).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    if backend == "fla":
        if not x.is_cuda:
            raise RuntimeError("backend='fla' needs CUDA tensors: fla's Triton kernels do not run on CPU")
        return True
    return x.is_cuda


def pad_to_chunks(x: torch.Tensor, chunk_size: int, dim: int = 1) -> torch.Tensor:
    """Right-pad ``x`` with zeros along ``dim`` to a multiple of ``chunk_size``.

    Zero keys/values/log-decays at padded positions leave the causal outputs of the
    real positions untouched; the caller slices the padding off again.
    """
    pad = (-x.shape[dim]) % chunk_size
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_zeros(shape)], dim=dim)
