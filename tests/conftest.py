"""Shared test setup: a local-only Ray, one torch thread, and the CUDA skip marker."""

from __future__ import annotations

import os
import warnings

# Keep any Ray started by a test on 127.0.0.1; set before ray is imported anywhere.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
warnings.filterwarnings("ignore", message="Triton is not supported on current platform")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: flash-linear-attention's Triton kernels do not run on CPU"
)
