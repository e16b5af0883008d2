"""Triton kernels for seed and discovered mixers (installed as ``asiarch.kernels``).

Empty for now: the seeds use flash-linear-attention's kernels on CUDA. Kernels added here
are tested against the PyTorch references in ``asiarch.arch.ops``.
"""
