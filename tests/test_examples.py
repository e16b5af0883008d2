"""The examples run as documented (with tiny overrides so they take seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["scale.train.steps=3", "scale.train.report_every=3", "scale.train.eval_batches=1",
        "scale.corpus.max_documents=60", "scale.corpus.tokenizer_vocab_size=400",
        "scale.mqar.num_train=300", "scale.mqar.num_test=50"]


@pytest.mark.parametrize(
    "script,args,expected",
    [
        ("train_one_seed.py", ["mamba2", *TINY], "mamba2: "),
        ("custom_mixer.py", TINY, "GatedEMA: eval loss"),
    ],
)
def test_example_runs(tmp_path, script, args, expected):
    env = {**os.environ, "ASIARCH_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expected in proc.stdout
    assert "completed" in proc.stdout or "eval loss" in proc.stdout


def test_claude_example_without_a_key_says_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "claude_campaign.py")], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "ANTHROPIC_API_KEY" in proc.stderr
    assert not (tmp_path / "runs").exists()
