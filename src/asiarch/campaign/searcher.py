"""A Tune ``Searcher`` whose "search space" is the stream of validated candidates.

Tune asks ``suggest`` for a config whenever a trial slot frees; the answer is the next
candidate the agents validated (``CampaignPipeline.take``), None to ask again shortly,
or ``FINISHED`` once the budget is spent and nothing can come back for repair. The
searcher holds no live handles when pickled (Tune saves it with the experiment), so a
restored experiment reconnects to the new campaign's pipeline actor by name.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import ray
from ray.tune.search import Searcher

STATE_FILE = "asiarch-searcher.json"
log = logging.getLogger(__name__)


class CandidateSearcher(Searcher):
    def __init__(self, pipeline_name: str, namespace: str | None = None, metric: str = "eval_loss", mode: str = "min"):
        super().__init__(metric=metric, mode=mode)
        self.pipeline_name, self.namespace = pipeline_name, namespace
        self.live: dict[str, str] = {}  # trial id -> candidate id
        self._handle = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    @property
    def pipeline(self):
        if self._handle is None:
            self._handle = ray.get_actor(self.pipeline_name, namespace=self.namespace)
        return self._handle

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        config = ray.get(self.pipeline.take.remote(len(self.live)))
        if config == "FINISHED":
            return Searcher.FINISHED
        if config is None:
            return None
        self.live[trial_id] = config["design"]
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.live:
            self.pipeline.trial_progress.remote(self.live[trial_id], _plain(result))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        design = self.live.pop(trial_id, None)
        if design is None:
            return
        try:  # awaited: once Tune's run returns, the pipeline counts every ended trial as being scored
            ray.get(self.pipeline.trial_finished.remote(design, _plain(result or {}), error))
        except ray.exceptions.RayError as err:  # the pipeline is gone (explore ended): the driver finds it training
            log.warning("the end of %s's trial did not reach the pipeline: %s", design, err)

    def save(self, checkpoint_path: str) -> None:
        tmp = checkpoint_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"live": self.live, "pipeline_name": self.pipeline_name}, f)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        self.live = dict(state["live"])

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        self.save(os.path.join(checkpoint_dir, STATE_FILE))

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        path = os.path.join(checkpoint_dir, STATE_FILE)
        if os.path.exists(path):
            self.restore(path)


def _plain(result: dict[str, Any]) -> dict[str, Any]:
    """Only the JSON-ready scalars of a Tune result (it also carries config and dates)."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None}
