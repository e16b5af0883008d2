"""Verify's PBT on a real local Ray: members clone only within their design and keep their identity.

Two designs with two members each (training seeds 0 and 1) share two CPUs, so PBT also
time-shares them (four trials, two running). A member's loss is its weight plus its training seed, so seed 1 is
always the weaker member of its design and clones seed 0 at every perturbation. The
trainable writes its design and seed into each checkpoint and refuses to restore another
design's. The campaign's progress callback follows the run and deletes the checkpoints; Tune keeps
as few per trial as ``pbt_checkpoints_to_keep`` allows.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import ray
from pyarrow import fs as pafs
from ray import cloudpickle, tune
from ray.tune.experiment import Trial

from asiarch.campaign.schedulers import DesignPBT, explore_scheduler, pbt_checkpoints_to_keep, verify_scheduler
from asiarch.campaign.tune_progress import StageProgress, TrialProgress

STEPS = 12
TOKENS_PER_STEP = 100
PERTURB_EVERY = 2  # steps


def member(config: dict) -> None:
    """A stand-in for a verify trial: one weight that decays at the learning rate."""
    run = config["run"]
    step, weight, cloned = 0, 1.0, 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = json.loads(Path(folder, "state.json").read_text())
        if saved["design"] != run["design"]:
            raise AssertionError(f"{run['design']} was given the weights of {saved['design']}")
        step, weight = saved["step"], saved["weight"]
        cloned = int(saved["training_seed"] != run["training_seed"])
    while True:  # like the campaign's trainable, it reports once more at the end, even right after a restore
        final = step >= STEPS
        if not final:
            step += 1
            weight *= 1.0 - config["lr"]
            time.sleep(0.05)
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "state.json").write_text(json.dumps(
                {"design": run["design"], "training_seed": run["training_seed"], "step": step, "weight": weight}))
            tune.report({"eval_loss": weight + run["training_seed"], "tokens_seen": step * TOKENS_PER_STEP,
                         "step": step, "total_steps": STEPS, "cloned": cloned},
                        checkpoint=tune.Checkpoint.from_directory(folder))
        cloned = 0
        if final:
            return


def design_of(config: dict) -> str:
    return config["run"]["design"]


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test module


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_pbt_clones_within_a_design_and_members_keep_their_identity(local_ray, tmp_path):
    runs = [{"design": design, "training_seed": seed} for design in ("alpha", "beta") for seed in (0, 1)]
    scheduler = verify_scheduler(PERTURB_EVERY * TOKENS_PER_STEP, tune.loguniform(0.02, 0.5), group_of=design_of)
    assert isinstance(scheduler, DesignPBT)
    progress = TrialProgress("verify", delete_checkpoints=True)
    tuner = tune.Tuner(
        tune.with_resources(member, {"cpu": 1}),
        param_space={"run": tune.grid_search(runs), "lr": 0.1},
        tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(
            name="pbt", storage_path=str(tmp_path), verbose=0, callbacks=[progress],
            failure_config=tune.FailureConfig(max_failures=2),  # a worker lost to the machine is retried, as in verify
            checkpoint_config=tune.CheckpointConfig(num_to_keep=pbt_checkpoints_to_keep(PERTURB_EVERY, 1))),
    )
    grid = tuner.fit()

    assert not grid.errors, grid.errors  # a restore of another design's checkpoint raises in the trainable
    # every member ends with its own design and training seed, and its learning rate was explored
    assert sorted((r.config["run"]["design"], r.config["run"]["training_seed"]) for r in grid) == sorted(
        (run["design"], run["training_seed"]) for run in runs)
    clones = {r.config["run"]["design"]: int(r.metrics_dataframe["cloned"].sum()) for r in grid
              if r.config["run"]["training_seed"] == 1}
    assert clones["alpha"] > 0 and clones["beta"] > 0, clones  # the weaker member of each design cloned the other
    policy = [json.loads(line) for line in (tmp_path / "pbt" / "pbt_global.txt").read_text().splitlines()]
    assert policy
    for _, _, _, _, source, new in policy:
        assert source["run"]["design"] == new["run"]["design"]
        assert (new["run"]["training_seed"], source["run"]["training_seed"]) == (1, 0)

    summary = progress.summary()
    assert (summary.done, summary.running, summary.errored, summary.total) == (4, 0, 0, 4)
    assert progress.line() == "verify trials: 4/4 done, 0 running"
    assert not list((tmp_path / "pbt").glob("*/checkpoint_*")), "finished trials left checkpoints behind"


def test_pbt_per_training_seed_clones_only_within_a_seed(local_ray, tmp_path):
    """``verify.pbt_population=seed``: each training seed of a design is its own population of learning rates,
    so a clone never carries one seed's weights into another's run and the seeds stay independent samples."""
    from asiarch.campaign.verify import _design_and_seed_of

    runs = [{"design": "alpha", "training_seed": seed} for seed in (0, 1)]
    scheduler = verify_scheduler(PERTURB_EVERY * TOKENS_PER_STEP, tune.loguniform(0.02, 0.5),
                                 group_of=_design_and_seed_of)
    tuner = tune.Tuner(
        tune.with_resources(member, {"cpu": 1}),
        param_space={"run": tune.grid_search(runs), "lr": tune.grid_search([0.02, 0.3])},  # a slow and a fast member
        tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(
            name="pbt-seed", storage_path=str(tmp_path), verbose=0, failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=pbt_checkpoints_to_keep(PERTURB_EVERY, 1))),
    )
    grid = tuner.fit()
    assert not grid.errors, grid.errors
    assert sum(int(r.metrics_dataframe["cloned"].sum()) for r in grid) == 0  # no member took another seed's weights
    policy = [json.loads(line) for line in (tmp_path / "pbt-seed" / "pbt_global.txt").read_text().splitlines()]
    assert policy, "the slow member of a seed never cloned the fast one"
    for _, _, _, _, source, new in policy:
        assert source["run"] == new["run"]  # same design, same training seed: only the learning rate came along


def test_pbt_per_training_seed_keeps_each_seeds_best_member_and_counts_every_members_time():
    from asiarch.campaign.settings import VerifySettings
    from asiarch.campaign.verify import VerifyStage

    def result(seed, lr, loss, seconds):
        return SimpleNamespace(config={"run": {"design": "alpha", "training_seed": seed}, "lr": lr},
                               metrics={"eval_loss": loss, "time_total_s": seconds, "weights_of": seed},
                               metrics_dataframe=None)

    grid = [result(0, 0.01, 3.40, 10.0), result(0, 0.02, 3.35, 11.0), result(1, 0.01, 3.30, 12.0),
            result(1, 0.02, 3.45, 13.0)]
    stage = VerifyStage.__new__(VerifyStage)
    stage.ctx = SimpleNamespace(verify=VerifySettings(search="pbt", pbt_population="seed"))
    (runs,) = stage._runs_by_design(grid)["alpha"].values()
    assert [(r["weights_of"], r["eval_loss"], r["train_seconds"]) for r in runs] == [(0, 3.35, 21.0), (1, 3.30, 25.0)]
    stage.ctx = SimpleNamespace(verify=VerifySettings(search="pbt"))  # one population per design: every run kept
    (runs,) = stage._runs_by_design(grid)["alpha"].values()
    assert len(runs) == 4
    with pytest.raises(ValueError, match="verify.pbt_population must be one of design, seed"):
        VerifySettings(pbt_population="trial")
    with pytest.raises(ValueError, match="at least two"):
        VerifySettings(search="pbt", pbt_population="seed", lr_multipliers=[1.0])


DESIGN_LOSS = {"d0": 1.0, "d1": 2.0, "d2": 3.0, "d3": 0.5, "d4": 1.5}


def constant_design(config: dict) -> None:
    """A stand-in for an explore trial: its design's loss, the same at every step."""
    for step in range(1, 10):
        tune.report({"eval_loss": DESIGN_LOSS[config["design"]], "tokens_seen": step * TOKENS_PER_STEP, "step": step})


def asha_over_the_ladder(referee, tmp_path: Path):
    """ExploreASHA (rungs at steps 2 and 6 of 9) over the DESIGN_LOSS designs, one trial at a time in grid order,
    so the order of arrival at the rungs is the order the trials ran in: the scheduler and Tune's results."""
    scheduler = explore_scheduler(9 * TOKENS_PER_STEP, 0.0, 3, first_rung_tokens=2 * TOKENS_PER_STEP, referee=referee)
    grid = tune.Tuner(
        constant_design, param_space={"design": tune.grid_search(list(DESIGN_LOSS))},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(name="asha", storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert not grid.errors
    return scheduler, grid


def test_explore_asha_reports_each_stop_with_the_cutoff_it_missed(local_ray, tmp_path):
    """One trial at a time, so the order of arrival at the rungs is the order the trials ran in."""
    stops: list[tuple[str, dict]] = []
    scheduler, grid = asha_over_the_ladder(lambda design, rung: stops.append((design, rung)) or True, tmp_path)
    assert scheduler.rungs == [6 * TOKENS_PER_STEP, 2 * TOKENS_PER_STEP]
    ran = sorted(grid, key=lambda r: r.metrics_dataframe["timestamp"].min())
    stopped = {r.config["design"] for r in grid if r.metrics["step"] < 9}
    assert {design for design, _ in stops} == stopped and stopped  # every stop of Tune's ASHA, and only those
    seen: list[float] = []
    for result in ran:  # the rule ASHA applies at the first rung: behind the best third of those before it
        design = result.config["design"]
        if design in stopped:
            (rung,) = [r for d, r in stops if d == design]
            assert rung["step"] == 2 and rung["designs"] == len(seen) and rung["mode"] == "min"
            assert rung["cutoff"] == pytest.approx(float(np.percentile(seen, 100 / 3)))
            assert rung["value"] == DESIGN_LOSS[design] > rung["cutoff"]
        seen.append(DESIGN_LOSS[design])


def test_progress_line_names_the_running_trials_step():
    progress = StageProgress("verify", total=10, started=5, running=2, done=3, steps={"a": (30, 192), "b": (50, 192)})
    assert progress.line() == "verify trials: 3/10 done, 2 running at step 40/192"


def test_the_progress_callback_pickles_as_its_configuration():
    """Tune pickles callbacks into ``tuner.pkl``; the copy starts empty (its lock is not pickled)."""
    progress = TrialProgress("explore", total=3)
    copy = cloudpickle.loads(cloudpickle.dumps(progress))
    assert (copy.stage, copy.total, copy.delete_checkpoints) == ("explore", 3, False)
    assert copy.line() == ""  # until Tune sets it up
    copy.setup(total_num_samples=3)
    assert copy.line() == "explore trials: 0/3 done, 0 running"


def fake_trial(root: Path, trial_id: str, status: str, checkpoint_in: str | None = None) -> SimpleNamespace:
    """What the callback reads of a Tune trial: id, status, folder and latest checkpoint."""
    folder = root / trial_id
    (folder / "checkpoint_000000").mkdir(parents=True, exist_ok=True)
    latest = root / (checkpoint_in or trial_id) / "checkpoint_000000"
    return SimpleNamespace(trial_id=trial_id, status=status, path=str(folder), is_saving=False,
                           checkpoint=tune.Checkpoint(str(latest), filesystem=pafs.LocalFileSystem()))


def test_a_trial_completed_during_its_last_save_keeps_its_checkpoints_until_the_save_is_processed(tmp_path):
    """Tune can finish a trial before it processes the save of its last checkpoint, which deletes the oldest
    one beyond num_to_keep; deleting them first made Tune log 'Error handling checkpoint' (a real campaign)."""
    progress = TrialProgress("verify", delete_checkpoints=True)
    progress.setup(total_num_samples=1)
    trial = fake_trial(tmp_path, "a", Trial.RUNNING)
    trial.status, trial.is_saving = Trial.TERMINATED, True
    progress.on_trial_complete(1, [trial], trial)
    assert (tmp_path / "a" / "checkpoint_000000").exists()
    trial.is_saving = False  # Tune processed the save, then calls on_trial_save
    progress.on_trial_save(2, [trial], trial)
    assert not (tmp_path / "a" / "checkpoint_000000").exists()
    # a save still pending when the experiment ends is never processed: its checkpoints go then
    other = fake_trial(tmp_path, "b", Trial.TERMINATED)
    other.is_saving = True
    progress.on_trial_complete(3, [trial, other], other)
    assert (tmp_path / "b" / "checkpoint_000000").exists()
    progress.on_experiment_end([trial, other])
    assert not (tmp_path / "b" / "checkpoint_000000").exists()


def test_checkpoints_go_only_when_tune_finished_the_trial_and_no_clone_needs_them(tmp_path):
    progress = TrialProgress("verify", delete_checkpoints=True)
    progress.setup(total_num_samples=3)
    a = fake_trial(tmp_path, "a", Trial.RUNNING)
    b = fake_trial(tmp_path, "b", Trial.PAUSED, checkpoint_in="a")  # b cloned a and has not restarted yet
    c = fake_trial(tmp_path, "c", Trial.RUNNING)
    trials = [a, b, c]
    progress.on_step_end(1, trials)
    a.status = Trial.TERMINATED
    progress.on_trial_complete(2, trials, a)
    assert (tmp_path / "a" / "checkpoint_000000").exists()  # b restarts from it
    b.checkpoint = tune.Checkpoint(str(tmp_path / "b" / "checkpoint_000000"), filesystem=pafs.LocalFileSystem())
    progress.on_trial_save(3, trials, b)
    assert not (tmp_path / "a" / "checkpoint_000000").exists() and (tmp_path / "a").exists()
    # an interrupted experiment: Tune marks the live trials terminated, then ends the experiment
    b.status = c.status = Trial.TERMINATED
    progress.on_experiment_end(trials)
    assert (tmp_path / "b" / "checkpoint_000000").exists() and (tmp_path / "c" / "checkpoint_000000").exists()
    assert progress.line() == "verify trials: 3/3 done, 0 running"


def test_an_errored_trial_keeps_its_checkpoints_until_every_trial_finished(tmp_path):
    progress = TrialProgress("verify", delete_checkpoints=True)
    progress.setup()
    failed, other = fake_trial(tmp_path, "x", Trial.RUNNING), fake_trial(tmp_path, "y", Trial.RUNNING)
    trials = [failed, other]
    failed.status = Trial.ERROR
    progress.on_trial_error(1, trials, failed)
    assert (tmp_path / "x" / "checkpoint_000000").exists()  # a restore with resume_errored needs it
    other.status = Trial.TERMINATED
    progress.on_trial_complete(2, trials, other)
    assert not list(tmp_path.glob("*/checkpoint_*"))
    assert progress.line() == "verify trials: 1/2 done, 0 running, 1 errored"


def test_the_first_asha_rung_lands_after_the_warm_up():
    from asiarch.campaign.schedulers import first_rung_step

    assert first_rung_step(64, 0.125, warmup_steps=30, report_every=8) == 32  # not step 8, inside the warm-up
    assert first_rung_step(400, 0.125, warmup_steps=30, report_every=50) == 50  # the first evaluation after it
    assert first_rung_step(64, 0.5, warmup_steps=4, report_every=8) == 32  # past the warm-up: the grace fraction
    assert first_rung_step(12, 0.125, warmup_steps=30, report_every=3) == 12  # never beyond the budget


def test_successive_halving_replays_the_rungs_over_measured_curves():
    from asiarch.campaign.schedulers import rung_steps, successive_halving

    assert rung_steps(192, 24, 3) == [24, 72] and rung_steps(192, 96, 2) == [96] and rung_steps(192, 192, 3) == []
    with pytest.raises(ValueError):
        rung_steps(192, 24, 1)
    # a slow starter (b) is behind at step 24 and best at the end; c never evaluated before step 72
    curves = {"a": {24: 5.0, 72: 4.5, 192: 4.2}, "b": {24: 5.6, 72: 4.4, 192: 3.9},
              "c": {72: 4.6, 192: 4.3}, "d": {24: 5.2, 72: 4.9, 192: 4.6}}
    assert successive_halving(curves, [24], 2, 192) == {"a": 192, "d": 192, "b": 24, "c": 24}
    assert successive_halving(curves, [72], 2, 192) == {"b": 192, "a": 192, "c": 72, "d": 72}
    assert successive_halving(curves, [24, 72], 2, 192) == {"a": 192, "d": 72, "b": 24, "c": 24}
    assert successive_halving(curves, [], 2, 192) == dict.fromkeys(curves, 192)


def test_a_stop_the_referee_overrules_trains_on_to_the_next_rung(local_ray, tmp_path):
    """The referee spares d2 at every rung (as the campaign's does for a gap within noise): it trains to the end."""
    asked: list[tuple[str, float]] = []

    def referee(design: str, rung: dict) -> bool:
        asked.append((design, rung["step"]))
        return design != "d2"

    scheduler, grid = asha_over_the_ladder(referee, tmp_path)
    reached = {r.config["design"]: r.metrics["step"] for r in grid}
    # d2 (the worst) was behind at step 2 (and at step 6 among those that got there) and ran on each time
    assert reached["d2"] == 9 and ("d2", 2) in asked and ("d2", 6) in asked
    stopped = {design for design, step in reached.items() if step < 9}
    assert stopped and stopped == {design for design, _ in asked} - {"d2"}  # the other stops stood
    assert scheduler.stopped == len(stopped) and scheduler.spared == 2
    assert "2 stop(s) overruled" in scheduler.debug_string()


@ray.remote(num_cpus=0)
class AnchoredRuling:
    """The campaign pipeline's ``rule_on_rung_stop`` over a fixed anchor: what the referee asks, by actor name."""

    def __init__(self, anchor: dict):
        self.anchor, self.rulings = anchor, []

    def rule_on_rung_stop(self, design: str, rung: dict, significance: float | None) -> bool:
        from asiarch.campaign import scoring

        judged = scoring.rule_on_rung(rung, self.anchor, significance)
        self.rulings.append((design, judged))
        return judged["stood"]

    def seen(self) -> list:
        return self.rulings


def test_the_campaign_referee_spares_stops_within_the_anchors_noise(local_ray, tmp_path):
    from asiarch.campaign.schedulers import PipelineRungReferee

    # three anchor runs evaluated at each step with losses 1.0, 1.25, 1.5: sd 0.25 there, read with 2 df
    anchor = {"run_curves": [[[step, loss, 0.0] for step in range(1, 10)] for loss in (1.0, 1.25, 1.5)]}
    ruling = AnchoredRuling.options(name="pipeline-under-test", namespace="rungs").remote(anchor)
    referee = PipelineRungReferee("pipeline-under-test", "rungs", significance=0.05)
    scheduler, grid = asha_over_the_ladder(referee, tmp_path)
    reached = {r.config["design"]: r.metrics["step"] for r in grid}
    rulings = ray.get(ruling.seen.remote())
    assert rulings and {j["stood"] for _, j in rulings} == {True, False}  # this ladder has both kinds
    for design, judged in rulings:
        assert judged["noise_sd"] == pytest.approx(0.25) and judged["noise_runs"] == 3
        assert judged["stood"] == (judged["p"] < 0.05)
        if judged["stood"]:
            assert reached[design] == judged["step"]  # stopped where the referee let it
        else:
            assert reached[design] > judged["step"]  # within noise: trained on past that rung
    assert scheduler.spared == sum(not j["stood"] for _, j in rulings) > 0
    ray.kill(ruling)
    assert PipelineRungReferee("no-such-pipeline", "rungs", 0.05)("d0", {"step": 2}) is True  # no pipeline: ASHA's stop


def counting_to_three(config):
    """Reports steps 1..3, each with a checkpoint holding its step."""
    for step in range(1, 4):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "step").write_text(str(step))
            tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(folder))


class CheckpointsSeenBeforeTuneRegistersThem(tune.Callback):
    """At ``on_checkpoint`` Tune has the result naming the new checkpoint but still holds the previous one as
    ``trial.checkpoint``: the state a node lost between a report and Tune's save round trip leaves behind."""

    def __init__(self):
        self.seen = []

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        from asiarch.campaign.explore import last_checkpoint

        found, step = last_checkpoint(trial), None
        if found is not None:
            with found.as_directory() as folder:
                step = int(Path(folder, "step").read_text())
        self.seen.append((trial.last_result["step"], trial.checkpoint is not None, step))


def test_a_crashed_trial_resumes_from_the_checkpoint_it_reported_even_if_tune_never_registered_it(local_ray, tmp_path):
    watcher = CheckpointsSeenBeforeTuneRegistersThem()
    tune.Tuner(counting_to_three, run_config=tune.RunConfig(name="ckpt", storage_path=str(tmp_path), verbose=0,
                                                             callbacks=[watcher])).fit()
    # (reported step, Tune had registered a checkpoint, the step in the checkpoint last_checkpoint found)
    assert watcher.seen == [(1, False, 1), (2, True, 2), (3, True, 3)]


def one_seed_fails(config):
    """A verify-like run: the run on training seed 1 raises (its infrastructure, say) on every try."""
    if config["training_seed"] == 1:
        raise OSError("disk full\nmore of the traceback")
    tune.report({"eval_loss": 1.0, "final": True})


def test_verify_names_the_runs_tune_gave_up_on_and_why(local_ray, tmp_path):
    """They are left out of their design's result; the campaign says which and why (``verify.failed_runs``)."""
    from asiarch.campaign.stage import trial_name
    from asiarch.campaign.verify import failed_runs

    grid = tune.Tuner(one_seed_fails, param_space={"stage": "verify", "name": "deltanet",
                                                   "training_seed": tune.grid_search([0, 1, 2])},
                      tune_config=tune.TuneConfig(trial_dirname_creator=trial_name),
                      run_config=tune.RunConfig(name="failing", storage_path=str(tmp_path), verbose=0,
                                                failure_config=tune.FailureConfig(max_failures=1))).fit()
    (line,) = failed_runs(grid)
    assert line.startswith("verify_deltanet_s1_") and line.endswith(": OSError: disk full"), line
