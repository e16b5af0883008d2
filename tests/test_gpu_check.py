"""scripts/gpu_check.sh --dry-run: on a CPU machine, every part of the GPU check exists and builds."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from asiarch.arch import SEEDS

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_covers_every_seed_and_kernel(tmp_path):
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=ROOT, env={**os.environ, "OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [r for r in rows if r["ok"] is False] == []
    items = {r["item"] for r in rows}
    assert {f"seed {name}" for name in SEEDS} <= items  # a seed added without an fla twin in FLA_LAYERS fails here
    assert {"kernel ssd_triton", "kernel sliding_window_attention_triton", "paper_20m config composes"} <= items
    assert "gpu_check: one CUDA GPU" in proc.stdout  # the single table
