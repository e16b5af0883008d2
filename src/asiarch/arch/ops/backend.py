"""Choosing between the pure-PyTorch path and the Triton kernels (flash-linear-attention's or asiarch's)."""

from __future__ import annotations

import functools
import importlib.util

import torch

BACKENDS = ("auto", "torch", "fla", "triton")


@functools.cache
def fla_available() -> bool:
    """Whether flash-linear-attention is installed (always, with asiarch; not so in an exported module)."""
    return importlib.util.find_spec("fla") is not None


def _check(x: torch.Tensor, backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("fla", "triton") and not x.is_cuda:
        raise RuntimeError(f"backend={backend!r} needs CUDA tensors: the Triton kernels do not run on CPU")


def use_fla(x: torch.Tensor, backend: str) -> bool:
    """True when the fla Triton kernel should run for ``x``.

    ``auto`` picks fla on CUDA tensors only (when fla is installed): Triton has no CPU
    driver, so the chunkwise PyTorch path is the CPU implementation (and the reference on
    GPU). ``triton`` asks for asiarch's own kernels (``asiarch.kernels``); an operator that
    has one checks :func:`use_triton` first, one that has none runs fla's.
    """
    _check(x, backend)
    if backend == "torch":
        return False
    if backend in ("fla", "triton"):
        return True
    return x.is_cuda and fla_available()


def use_triton(x: torch.Tensor, backend: str, prefer: bool = False) -> bool:
    """True when asiarch's own Triton kernel should run for ``x`` (for operators that have one).

    ``triton`` always (CUDA tensors only). ``auto`` on CUDA tensors when ``prefer`` (the
    operator's kernel of choice is asiarch's) or when fla is not installed.
    """
    _check(x, backend)
    if backend == "triton":
        return True
    return backend == "auto" and x.is_cuda and (prefer or not fla_available())


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
