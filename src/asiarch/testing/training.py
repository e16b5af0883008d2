"""Short training of a validated candidate in a Ray worker process (never in the driver)."""

from __future__ import annotations

from typing import Any

import ray

from asiarch.config import ScaleConfig
from asiarch.memory import StageMetrics
from asiarch.train.protocol import TrialData, train_mixer
from asiarch.train.trainer import MEASURED_STOPS


@ray.remote(num_cpus=1, max_retries=0)
def train_candidate(source: str, scale: ScaleConfig, data: TrialData) -> dict[str, Any]:
    """Load the candidate's class here, in the worker, and train it; the summary comes back."""
    from asiarch.arch import load_mixer_class

    return train_mixer(load_mixer_class(source), scale, data, downstream=False)


def explore_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """Candidate fields from a training summary (MQAR accuracy is the benchmark at cpu_tiny)."""
    history = summary.get("history") or []
    metrics = StageMetrics(loss_curve=[h["eval_loss"] for h in history], eval_loss=summary.get("eval_loss"),
                           mqar_accuracy=summary.get("mqar_accuracy"), benchmark=summary.get("mqar_accuracy"),
                           benchmarks={"mqar": summary.get("mqar_accuracy")})
    finished = summary.get("stop_reason") in MEASURED_STOPS
    return {"explore": metrics, "status": "finished" if finished else "failed",
            "status_reason": summary.get("stop_message", ""), "tokens_trained": summary.get("tokens_seen", 0),
            "device_seconds": summary.get("train_seconds", 0.0)}
