"""A Tune callback that follows one stage's trials for the campaign's status line.

Tune calls it from its own loop (the thread running ``Tuner.fit``), while the campaign's
progress thread reads it: the hooks rebuild a snapshot of the trials and swap it in
under a lock, and ``line()`` reads the latest snapshot. It can also delete the checkpoints of finished trials,
which PBT needs while it runs but nobody needs afterwards.

``Tuner.restore`` (Ray 2.60) takes no callbacks: a restored experiment runs with the copy
of this callback pickled into its ``tuner.pkl``, not the campaign's instance, so after a
driver restart the campaign's instance sees nothing of that stage (its ``line()`` stays
empty). Checkpoint cleanup still happens, done by the restored copy.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from pyarrow import fs as pafs
from ray.tune import Callback
from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "checkpoint_"  # Tune's name for the checkpoint folders in a trial's folder


@dataclass(frozen=True)
class StageProgress:
    """Where one stage's trials are: counts by state and the running trials' steps."""

    stage: str
    total: int | None = None  # trials Tune will run, when it knows
    started: int = 0
    pending: int = 0
    running: int = 0
    paused: int = 0
    done: int = 0
    errored: int = 0
    steps: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # running trial -> (step, total_steps)

    @property
    def seen(self) -> int:
        return self.pending + self.running + self.paused + self.done + self.errored

    def line(self) -> str:
        """``verify trials: 3/10 done, 2 running at step 40/192`` (the running trials' mean step)."""
        total = self.total if self.total is not None else self.seen
        text = f"{self.stage} trials: {self.done}/{total} done, {self.running} running"
        if self.steps:
            mean = sum(step for step, _ in self.steps.values()) / len(self.steps)
            ends = {end for _, end in self.steps.values() if end}
            text += f" at step {mean:.0f}" + (f"/{ends.pop()}" if len(ends) == 1 else "")
        if self.paused:
            text += f", {self.paused} paused"
        if self.errored:
            text += f", {self.errored} errored"
        return text


class TrialProgress(Callback):
    """Counts one stage's trials (started, running, paused, done, errored) and their steps.

    With ``delete_checkpoints``, a trial that finished leaves no checkpoint behind: its
    checkpoint folders go once no unfinished trial would resume from one of them (a PBT
    member that cloned it and has not restarted yet). Finished means Tune said so
    (``on_trial_complete``, or already finished when a restored experiment starts): when
    an experiment is interrupted, Tune marks its live trials terminated before
    ``on_experiment_end``, yet a restore resumes them from their checkpoints. A trial that
    errored keeps its checkpoints until every trial has finished, since a restore with
    ``resume_errored`` resumes it from them.
    """

    def __init__(self, stage: str, total: int | None = None, delete_checkpoints: bool = False):
        self.stage = stage
        self.total = total
        self.delete_checkpoints = delete_checkpoints
        self._lock = threading.Lock()
        self._progress: StageProgress | None = None  # None until Tune sets this callback up
        self._steps: dict[str, tuple[int, int | None]] = {}  # trial id -> (step, total_steps) last reported
        self._started: set[str] = set()
        self._seen: set[str] = set()
        self._final: dict[str, str] = {}  # trial id -> Trial.TERMINATED or Trial.ERROR, as Tune decided
        self._cleaned: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks into the experiment (``tuner.pkl``): the configuration only."""
        return {"stage": self.stage, "total": self.total, "delete_checkpoints": self.delete_checkpoints}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    # -- reading (any thread) -----------------------------------------------------------------------
    def summary(self) -> StageProgress | None:
        """The stage's trials as last seen; None if Tune never ran with this instance."""
        with self._lock:
            return self._progress

    def line(self) -> str:
        """``verify trials: 3/10 done, 2 running at step 40/192`` ("" if Tune never ran with this instance)."""
        summary = self.summary()
        return summary.line() if summary is not None else ""

    # -- Tune's hooks (Tune's thread) -------------------------------------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info: Any) -> None:
        if self.total is None and isinstance(total_num_samples, int) and 0 < total_num_samples < 2**31:
            self.total = total_num_samples
        with self._lock:
            self._progress = StageProgress(self.stage, self.total)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._snapshot(trials)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._started.add(trial.trial_id)
        self._snapshot(trials)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        if isinstance(result.get("step"), (int, float)):
            total = result.get("total_steps")
            self._steps[trial.trial_id] = (int(result["step"]), int(total) if isinstance(total, (int, float)) else None)
        self._snapshot(trials)

    def on_trial_save(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._clean(trials)  # the saving trial may have restarted from another's checkpoint, now released

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._final[trial.trial_id] = Trial.TERMINATED
        self._snapshot(trials)
        self._clean(trials)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._final[trial.trial_id] = Trial.ERROR  # Tune calls this once the trial's retries are spent
        self._snapshot(trials)
        self._clean(trials)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._snapshot(trials, first_sight=False)  # statuses here may be Tune's clean-up, not a verdict
        self._clean(trials, experiment_ended=True)

    # -- internals -----------------------------------------------------------------------------------
    def _snapshot(self, trials: list[Trial], first_sight: bool = True) -> None:
        """Count the trials by status; a trial already finished when first seen was finished by an earlier run."""
        if first_sight:
            for trial in trials:
                if trial.trial_id not in self._seen:
                    self._seen.add(trial.trial_id)
                    if trial.status in (Trial.TERMINATED, Trial.ERROR):
                        self._final.setdefault(trial.trial_id, trial.status)
        count = {status: sum(1 for t in trials if t.status == status)
                 for status in (Trial.PENDING, Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED, Trial.ERROR)}
        steps = {t.trial_id: self._steps[t.trial_id] for t in trials
                 if t.status == Trial.RUNNING and t.trial_id in self._steps}
        started = len(self._started | {t.trial_id for t in trials if t.status != Trial.PENDING})
        progress = StageProgress(self.stage, self.total, started=started, pending=count[Trial.PENDING],
                                 running=count[Trial.RUNNING], paused=count[Trial.PAUSED],
                                 done=count[Trial.TERMINATED], errored=count[Trial.ERROR], steps=steps)
        with self._lock:
            self._progress = progress

    def _clean(self, trials: list[Trial], experiment_ended: bool = False) -> None:
        """Delete the checkpoint folders of finished trials that no unfinished trial resumes from."""
        if not self.delete_checkpoints:
            return
        everyone_finished = all(t.trial_id in self._final for t in trials)
        needed = [t.checkpoint.path for t in trials if t.trial_id not in self._final and t.checkpoint is not None]
        for trial in trials:
            verdict = self._final.get(trial.trial_id)
            # a trial can complete while Tune still processes its last save, which then deletes the
            # oldest checkpoint beyond num_to_keep: wait for that save (its on_trial_save comes back here;
            # a save still pending when the experiment ends is never processed)
            if (verdict is None or (verdict == Trial.ERROR and not everyone_finished)
                    or (trial.is_saving and not experiment_ended)
                    or trial.trial_id in self._cleaned or trial.checkpoint is None or trial.path is None):
                continue
            folder = trial.path.rstrip("/") + "/"
            if any(path.startswith(folder) for path in needed):
                continue  # a member that cloned this one restarts from it
            try:
                _delete_checkpoint_folders(trial.checkpoint.filesystem, trial.path)
            except OSError as err:  # never break Tune's loop over disk space; try again at the next event
                logger.warning("could not delete the checkpoints of trial %s: %s", trial.trial_id, err)
                continue
            self._cleaned.add(trial.trial_id)


def _delete_checkpoint_folders(filesystem: pafs.FileSystem, trial_path: str) -> None:
    for info in filesystem.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith(CHECKPOINT_PREFIX):
            filesystem.delete_dir(info.path)
