"""Training: one readable loop that every seed and candidate trial goes through."""

from asiarch.train.trainer import StopReason, TrainConfig, Trainer, TrainResult, lr_at

__all__ = ["StopReason", "TrainConfig", "TrainResult", "Trainer", "lr_at"]
