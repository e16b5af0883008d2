"""The funnel's Tune schedulers: ASHA for explore, PBT within each design for verify."""

from __future__ import annotations

from typing import Any, Callable

from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
from ray.tune.search.sample import Domain


def explore_scheduler(budget_tokens: int, grace_fraction: float, reduction_factor: int,
                      metric: str = "eval_loss", mode: str = "min") -> ASHAScheduler:
    """ASHA whose rungs are fractions of the explore token budget (``tokens_seen``)."""
    return ASHAScheduler(time_attr="tokens_seen", metric=metric, mode=mode, max_t=budget_tokens,
                         grace_period=max(1, int(grace_fraction * budget_tokens)), reduction_factor=reduction_factor)


class DesignPBT(PopulationBasedTraining):
    """Population-based training where a trial only exploits members of its own group.

    In verify, the population holds several designs; copying the weights of one design
    into another would be meaningless (and their state dicts differ), so the quantiles
    are taken within the group of the trial that just reported (its design).
    """

    def __init__(self, group_of: Callable[[dict[str, Any]], str], **kwargs: Any):
        super().__init__(**kwargs)
        self._group_of = group_of
        self._current_group: str | None = None

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._current_group = self._group_of(trial.config)
        try:
            return super().on_trial_result(tune_controller, trial, result)
        finally:
            self._current_group = None

    def _get_new_config(self, trial, trial_to_clone):
        """The clone's learning rate, perturbed; but this member keeps its own design and training seed."""
        new_config, operations = super()._get_new_config(trial, trial_to_clone)
        new_config = {**new_config, "run": trial.config["run"]}
        return new_config, operations

    def _quantiles(self):
        if self._current_group is None:
            return super()._quantiles()
        everyone = self._trial_state
        try:
            self._trial_state = {t: s for t, s in everyone.items() if self._group_of(t.config) == self._current_group}
            return super()._quantiles()
        finally:
            self._trial_state = everyone


def verify_scheduler(perturbation_tokens: int, lr_domain: Domain, metric: str = "eval_loss", mode: str = "min",
                     group_of: Callable[[dict[str, Any]], str] | None = None) -> DesignPBT:
    """PBT over the learning rate, perturbing every ``perturbation_tokens`` within each design."""
    return DesignPBT(group_of=group_of or (lambda config: config["design"]), time_attr="tokens_seen", metric=metric,
                     mode=mode, perturbation_interval=max(1, perturbation_tokens),
                     hyperparam_mutations={"lr": lr_domain}, quantile_fraction=0.5, resample_probability=0.25)
