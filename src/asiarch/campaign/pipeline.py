"""The campaign's agents at work ahead of the trial slots, as one Ray actor.

``CampaignPipeline`` keeps ``lookahead`` validated candidates ready: Researcher actors
propose, Engineer actors check and repair, in background threads, so a Tune trial slot
that frees finds a candidate waiting instead of waiting for an LLM. It also does what
follows a trial: the Judge's score, the fitness, the Analyst's reading, and a repair
when the candidate's code failed in training. The Tune ``Searcher`` only calls ``take``
and reports trial results here; the memory (through the single writer) holds the truth,
so a restarted campaign rebuilds this actor's queues from it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray

from asiarch.campaign import scoring
from asiarch.campaign.fitness import FitnessFn
from asiarch.memory import Candidate, CampaignCounts, Kind, Memory, Status, lifecycle
from asiarch.campaign.placement import on_this_node

log = logging.getLogger(__name__)


@dataclass
class PipelineSettings:
    campaign: str
    seed: str
    memory_uri: str
    max_candidates: int
    lookahead: int
    researchers: int = 1
    engineers: int = 2
    max_proposals: int = 40
    max_device_seconds: float | None = None
    max_usd: float | None = None
    explore_lr: float = 3e-3
    explore_seed: int = 0
    bench_key: str = "mqar_accuracy"  # the trial-summary key of the fitness's benchmark term
    bench_chance: Any = None  # scoring.Chance of the benchmark at explore (None: not gated)
    crash_retries: int = 2  # new trials for a candidate whose trial Tune gave up on (explore.max_failures)
    check_options: dict[str, Any] = field(default_factory=dict)
    hidden_dirs: list[str] = field(default_factory=list)  # what the checks' worker hides (StageContext.hidden_from_candidates)
    agents: Any = None  # AgentsConfig
    qa: dict[str, Any] | None = None  # training QA, passed to every trial (asiarch.train.qa; None: off)


@ray.remote(num_cpus=0, max_concurrency=32)
class CampaignPipeline:
    def __init__(self, settings: PipelineSettings, backend: Any, writer: Any, explore_scale: Any,
                 fitness_fn: FitnessFn, baseline: dict[str, Any] | None = None):
        from asiarch.agents import AnalystActor, EngineerActor, JudgeActor, ResearcherActor

        self.s, self.writer, self.scale, self.fitness_fn = settings, writer, explore_scale, fitness_fn
        self.recall_chance = scoring.mqar_chance(explore_scale) if explore_scale is not None else None  # for the Judge
        common = dict(backend=backend, uri=settings.memory_uri, writer=writer, campaign=settings.campaign,
                      config=settings.agents)
        here = on_this_node()  # the driver's node: a lost worker node costs trials, never the agents
        self.researchers = [ResearcherActor.options(**here).remote(**common) for _ in range(settings.researchers)]
        self.engineers = [EngineerActor.options(**here).remote(**common) for _ in range(settings.engineers)]
        self.judge, self.analyst = JudgeActor.options(**here).remote(**common), AnalystActor.options(**here).remote(**common)
        self.reader = Memory(settings.memory_uri, read_only=True)
        self.lock = threading.RLock()
        self.ready: collections.deque[str] = collections.deque()
        self.in_flight = 0  # proposals being written or checked
        self.post_in_flight = 0  # finished trials being judged, scored, analysed or repaired
        self.proposals = 0  # proposals started by this campaign (stored rows plus those being written)
        self.events: list[str] = []
        self.curves: dict[str, list[float]] = {}  # explore eval-loss curves of running trials
        self.done: set[str] = set()  # trials over: a late progress report must not overwrite the final write
        self.crashes: dict[str, int] = {}  # trials of a candidate that ended in a crash, not a code error
        self.resume_points: dict[str, Any] = {}  # a crashed trial's last checkpoint (tune.Checkpoint): its next trial's start
        self.rung_stops: dict[str, dict[str, Any]] = {}  # ASHA's stops: what each stopped design was measured against
        self.rung_spared: dict[str, list[dict[str, Any]]] = {}  # stops overruled: within the anchor's noise, trained on
        self.rung_noted = threading.Condition(self.lock)
        self.baseline = baseline
        self.baseline_ready = threading.Event()
        if baseline is not None:
            self.baseline_ready.set()
        self.stopping = False
        self.anchor_error: str | None = None  # why the anchor seed did not train: nothing can be scored
        self.finished = False  # explore's candidate budget is spent and nothing can come back
        self.workers = ThreadPoolExecutor(max_workers=settings.researchers + settings.engineers + 4)
        self._recover()
        self.filler = threading.Thread(target=self._fill_loop, daemon=True)
        self.filler.start()

    # -- state recovered from the memory ------------------------------------------------
    def _recover(self) -> None:
        to_validate = []
        mine = self.reader.list_candidates(campaign=self.s.campaign, kind=Kind.CANDIDATE.value)
        for c in sorted(mine, key=lambda c: c.created_at):
            self.proposals += 1
            if c.status == Status.VALIDATED:
                (self.ready.appendleft if c.reached_training else self.ready.append)(c.id)
            elif c.status == Status.PROPOSED:
                to_validate.append(c.id)
        for cid in to_validate:  # the driver stopped while these were being checked
            self._start(self._validate, cid)

    def requeue_orphans(self, ids_in_tune: list[str]) -> list[str]:
        """Candidates marked training that Tune's restored experiment does not know: train them again."""
        known = set(ids_in_tune)
        orphans = [c.id for c in self.reader.list_candidates(campaign=self.s.campaign, status=Status.TRAINING.value,
                                                             kind=Kind.CANDIDATE.value) if c.id not in known]
        with self.lock:
            for cid in orphans:
                if cid not in self.ready:
                    self.ready.appendleft(cid)
        return orphans

    # -- proposing ahead of the trial slots ---------------------------------------------
    def _used(self) -> CampaignCounts:
        """The budget used so far, read from the memory (the one account of it)."""
        return self.reader.campaign_counts(self.s.campaign)

    def _budget_left(self, used: CampaignCounts) -> bool:
        s = self.s
        if s.max_device_seconds is not None and used.device_seconds >= s.max_device_seconds:
            return False
        return not (s.max_usd is not None and used.usd >= s.max_usd)

    def _can_start_new(self, used: CampaignCounts) -> bool:
        return used.trained < self.s.max_candidates and self._budget_left(used) and not self.stopping

    def _wanted(self) -> int:
        with self.lock:
            if self.proposals >= self.s.max_proposals or self.stopping:
                return 0
            used = self._used()
            fresh_ready = sum(1 for c in self.reader.get_candidates(list(self.ready)) if not c.reached_training)
            still_trainable = self.s.max_candidates - used.trained - fresh_ready - self.in_flight
            room = self.s.lookahead - len(self.ready) - self.in_flight
            if not self._can_start_new(used):
                return 0
            return max(0, min(still_trainable, room, self.s.max_proposals - self.proposals))

    def _fill_loop(self) -> None:
        while not self.stopping:
            for _ in range(self._wanted()):
                with self.lock:
                    self.proposals += 1
                    researcher = self.researchers[self.proposals % len(self.researchers)]
                self._start(self._propose_and_validate, researcher)
            time.sleep(0.5)  # each pass reads the budget from the memory

    def _start(self, fn, *args) -> None:
        with self.lock:
            self.in_flight += 1
        self.workers.submit(self._guarded, fn, *args)

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as err:  # an agent failed: record it and go on with the next proposal
            log.exception("pipeline step failed")
            self.events.append(f"{fn.__name__} failed: {type(err).__name__}: {err}")
        finally:
            with self.lock:
                self.in_flight -= 1

    def _propose_and_validate(self, researcher) -> None:
        candidate: Candidate = ray.get(researcher.propose.remote(self.s.seed))
        if candidate.status == Status.PROPOSED:
            self._validate(candidate.id)

    def _validate(self, candidate_id: str) -> None:
        engineer = self.engineers[hash(candidate_id) % len(self.engineers)]
        candidate: Candidate = ray.get(engineer.validate.remote(candidate_id, self.scale, hide=self.s.hidden_dirs,
                                                                **self.s.check_options))
        with self.lock:
            if candidate.status == Status.VALIDATED:
                self.ready.append(candidate_id)

    # -- the Tune searcher's side ---------------------------------------------------------
    def take(self, live_trials: int) -> dict[str, Any] | str | None:
        """A validated candidate as a trial config; None: wait; "FINISHED": explore is over."""
        with self.lock:
            used = self._used()
            for _ in range(len(self.ready)):
                cid = self.ready.popleft()
                c = self.reader.get_candidate(cid)
                if c is None or c.status not in (Status.VALIDATED, Status.TRAINING):
                    continue
                if (c.reached_training and self._budget_left(used)) or (not c.reached_training and self._can_start_new(used)):
                    resume = self.resume_points.pop(cid, None)
                    if resume is None:  # a trial from the start; a resumed one continues its curve
                        self.curves[cid] = []
                    self.done.discard(cid)
                    # awaited: the next budget decision reads this candidate as trained
                    ray.get(self.writer.update_candidate.remote(cid, status=Status.TRAINING, status_reason="explore trial"))
                    config = {"kind": Kind.CANDIDATE.value, "design": cid, "name": c.name, "code": c.code,
                              "stage": "explore", "training_seed": self.s.explore_seed, "lr": self.s.explore_lr}
                    if resume is not None:
                        config["resume_from"] = resume
                    return {**config, "qa": self.s.qa} if self.s.qa else config
                self.ready.appendleft(cid)
                break
            if self._over(live_trials, used):
                self.finished = True
                return "FINISHED"
            return None

    def keep_checkpoint(self, design: str, checkpoint: Any) -> None:
        """The last checkpoint of a trial that crashed (its node died, its worker was killed): the new
        trial the crash retry starts continues from it instead of training the candidate again."""
        with self.lock:
            self.resume_points[design] = checkpoint

    def _over(self, live_trials: int, used: CampaignCounts) -> bool:
        """Explore is complete: nothing runs or is being scored or checked, nothing can come back for
        another trial, and no new candidate may start (budget spent) or be proposed."""
        exhausted = self.proposals >= self.s.max_proposals and self.in_flight == 0
        no_retry_waiting = not any(c.reached_training for c in self.reader.get_candidates(list(self.ready)))
        return live_trials == 0 and self.post_in_flight == 0 and self.in_flight == 0 and no_retry_waiting and (
            not self._can_start_new(used) or exhausted)

    def explore_over(self) -> bool:
        """Asked once Tune has stopped: did explore complete, or was Tune stopped under it?"""
        with self.lock:
            return self.finished or self._over(0, self._used())

    def trial_progress(self, design: str, result: dict[str, Any]) -> None:
        """Live loss curve of a running explore trial, for people watching the memory."""
        if "eval_loss" not in result or result.get("already_trained"):
            return
        with self.lock:
            if design in self.done:
                return
            if design not in self.curves:  # a trial restored after a restart: continue its stored curve
                c = self.reader.get_candidate(design)
                self.curves[design] = list(c.explore.loss_curve) if c is not None else []
            curve = self.curves[design]
            curve.append(float(result["eval_loss"]))
            curve = list(curve)
        self.writer.set_stage.remote(design, "explore", loss_curve=curve, eval_loss=result["eval_loss"],
                                     mqar_accuracy=result.get("mqar_accuracy"), benchmark=result.get(self.s.bench_key),
                                     tokens_trained=int(result.get("tokens_seen", 0)))

    def trial_finished(self, design: str, result: dict[str, Any] | None, error: bool) -> None:
        with self.lock:
            self.done.add(design)
            self.post_in_flight += 1
        self.workers.submit(self._after_trial, design, result or {}, error)

    def _after_trial(self, design: str, result: dict[str, Any], error: bool) -> None:
        try:
            self._score_trial(design, result, error)
        except Exception as err:
            log.exception("after-trial step failed")
            self.events.append(f"scoring {design} failed: {type(err).__name__}: {err}")
            self.writer.update_candidate.remote(design, status_reason=f"scoring failed: {type(err).__name__}: {err}")
        finally:
            with self.lock:
                self.post_in_flight -= 1

    def _score_trial(self, design: str, result: dict[str, Any], error: bool) -> None:
        if result.get("already_trained"):
            return
        seconds = float(result.get("time_total_s") or 0.0)
        c = self.reader.get_candidate(design)
        spent = {"device_seconds": c.device_seconds + seconds, "tokens_trained": int(result.get("tokens_seen") or 0)}
        if self.anchor_error is not None:
            self._unscorable(design, spent)
            return
        if error:
            # Tune ends a trial whose worker dies while two calls to it are in flight (a reused actor being
            # reset, then trained) on the second failure, whatever max_failures says: retry in a new trial
            with self.lock:
                crashes = self.crashes[design] = self.crashes.get(design, 0) + 1
            if crashes <= self.s.crash_retries:
                ray.get(self.writer.update_candidate.remote(design, status=Status.VALIDATED, status_reason=(
                    f"its trial crashed ({crashes} of {self.s.crash_retries} new trials used); training it again"),
                    **spent))
                with self.lock:
                    self.events.append(f"trial of {design} crashed; a new trial will train it")
                    self.ready.appendleft(design)  # it already counts toward the budget
                return
            ray.get(self.writer.update_candidate.remote(
                design, status=Status.FAILED, status_reason="the trial crashed on every retry (see Tune's trial log)",
                **spent))
            return
        if result.get("code_error"):
            ray.get(self.writer.update_candidate.remote(design, status=Status.FAILED,
                                                        status_reason=f"training failed: {result['code_error'][:2000]}", **spent))
            retrains = sum(1 for r in c.repairs if any(f.get("check") == "training" for f in r.get("failures", [])))
            limit = getattr(self.s.agents, "max_repairs", 3)
            if retrains >= limit:
                ray.get(self.writer.update_candidate.remote(design, status=Status.FAILED, status_reason=(
                    f"training failed after {retrains} repair attempt(s) (agents.max_repairs={limit}): "
                    f"{result['code_error'][:1500]}")))
                return
            engineer = self.engineers[hash(design) % len(self.engineers)]
            repaired: Candidate = ray.get(engineer.repair_training_failure.remote(
                design, result["code_error"], self.scale, hide=self.s.hidden_dirs, **self.s.check_options))
            with self.lock:
                if repaired.status == Status.VALIDATED:
                    self.ready.appendleft(design)  # trains again first; it already counts toward the budget
            return
        step, total = int(result.get("step") or 0), int(result.get("total_steps") or 0)
        early = bool(total) and step < total
        with self.lock:
            history = self.curves.pop(design, None)
        history = list(c.explore.loss_curve if history is None else history)
        if result.get("eval_loss") is not None:  # its progress report may not have landed yet
            history = scoring.curve_ending_at(history, result["eval_loss"], step, self.scale.train.report_every)
        metrics = scoring.stage_metrics([result], self.s.bench_key, loss_curve=history)
        status = Status.STOPPED if early else Status.FINISHED
        reason = (f"stopped at step {step}/{total}: {result['qa_stopped']}" if result.get("qa_stopped") else
                  f"stopped at step {step}/{total}: {result.get('stop_message') or result.get('stop_reason')}"
                  if early and result.get("stop_reason") not in (None, "completed") else
                  f"ASHA stopped it at step {step}/{total}" if early else f"trained {step} steps")
        if result.get("qa_notes"):
            reason += f"; training QA: {result['qa_notes']}"
        elif result.get("leak_checked"):
            reason += ("; training QA: its last loss, suspiciously far below the seed's, was audited for causality in "
                       "a fresh sandbox (a secret suffix replaced): causal")
        ray.get(self.writer.set_stage.remote(
            design, "explore", loss_curve=metrics.loss_curve, eval_loss=metrics.eval_loss,
            mqar_accuracy=metrics.mqar_accuracy, benchmark=metrics.benchmark, benchmarks=metrics.benchmarks,
            status=status, status_reason=reason, **spent))
        self._judge_and_score(design, early, step, total)

    def rule_on_rung_stop(self, design: str, rung: dict[str, Any], significance: float | None) -> bool:
        """From the explore scheduler (``PipelineRungReferee``): ASHA would stop ``design`` at this rung.

        Returns whether the stop stands (``scoring.rung_stands``): the gap to the cutoff is
        read against the anchor's spread at that step; a design within that noise trains on.
        Before the anchor is measured (it trains alongside the first trials unless the
        baseline cache has it) there is no noise to read, and ASHA's stop stands.
        """
        judged = scoring.rule_on_rung(rung, self.baseline, significance)
        stands = judged["stood"]
        with self.rung_noted:
            if stands:
                self.rung_stops[design] = judged
                self.rung_noted.notify_all()
            else:
                self.rung_spared.setdefault(design, []).append(judged)
        return stands

    def _rung_stop(self, design: str, wait_s: float = 30.0) -> dict[str, Any] | None:
        """The rung ``design`` was stopped at; the scheduler's note and the trial's end travel separately."""
        with self.rung_noted:
            self.rung_noted.wait_for(lambda: design in self.rung_stops, timeout=wait_s)
            return self.rung_stops.pop(design, None)

    def set_baseline(self, baseline: dict[str, Any]) -> None:
        self.baseline = baseline
        self.baseline_ready.set()

    def anchor_failed(self, reason: str) -> None:
        """The anchor seed did not train: every explore fitness is relative to it, so nothing more starts, and
        each trial that ends goes back to be trained again when the campaign continues (``_unscorable``)."""
        with self.lock:
            self.anchor_error, self.stopping = reason, True
            self.events.append(f"the anchor seed did not train: {reason}")
        self.baseline_ready.set()

    def anchor_error_text(self) -> str | None:
        """Why the anchor seed did not train (None while it trains or once it has): read by explore's stopper."""
        return self.anchor_error

    def send_back_unscored(self) -> list[str]:
        """After the anchor failed: the candidates still marked training (Tune ended their trials without telling
        the searcher) go back to be trained again, as ``_unscorable`` does for the trials that ended."""
        mine = self.reader.list_candidates(campaign=self.s.campaign, status=Status.TRAINING.value,
                                           kind=Kind.CANDIDATE.value)
        for c in mine:
            self._unscorable(c.id)
        return [c.id for c in mine]

    def _unscorable(self, design: str, spent: dict[str, Any] | None = None) -> None:
        """A trial that ended with no anchor to score it against: its candidate trains again when the campaign
        continues (a resume trains the anchor first), rather than standing unscored among the scored."""
        ray.get(self.writer.update_candidate.remote(design, status=Status.VALIDATED, status_reason=(
            f"its explore trial ended after the anchor seed failed ({self.anchor_error}); it trains again when the "
            "campaign continues"), **(spent or {})))

    def qa_reference(self) -> dict[str, Any] | None:
        """What training QA compares a running trial with: the anchor seed's explore curve and pace."""
        b = self.baseline
        if b is None:
            return None
        return {"seed": b.get("name"), "loss_curve": b.get("loss_curve") or [],
                "wall_tokens_per_second": b.get("wall_tokens_per_second"),
                "cpu_tokens_per_second": b.get("cpu_tokens_per_second")}

    def _judge_and_score(self, design: str, early: bool, step: int, total: int) -> None:
        if not self.baseline_ready.wait(timeout=24 * 3600):
            raise RuntimeError("the seed baseline never arrived")
        if self.baseline is None:  # the anchor failed while this trial waited for it
            self._unscorable(design)
            return
        baseline = self.baseline
        judge_score, judge_error = None, None
        try:
            judged: Candidate = ray.get(self.judge.score.remote(design, [baseline], self.recall_chance))
            judge_score = judged.judge.get("overall")
        except Exception as err:  # recorded as a missing fitness term, never a silent default
            judge_error = f"{type(err).__name__}: {err}"
        c = self.reader.get_candidate(design)
        fitness = scoring.score(self.fitness_fn, c.name, c.explore, baseline, judge_score, "explore",
                                chance=self.s.bench_chance, stopped_at=step if early else None,
                                early_stopped=early, reached_step=step, total_steps=total)
        if judge_error:
            fitness.parts.setdefault("missing", {})["judge"] = f"the Judge failed: {judge_error}"
        fitness.parts[lifecycle.SCORED_AT] = round(self._used().device_seconds / 3600, 6)  # this trial's included
        changes: dict[str, Any] = {}
        asha = f"ASHA stopped it at step {step}/{total}"
        rung = self._rung_stop(design) if early and c.status_reason.startswith(asha) else None
        if rung is not None:  # how sure ASHA's cut was: the gap to its cutoff against the anchor's noise there
            if rung.get("p") is None:  # decided before the anchor was measured: read it now, for the record
                rung = scoring.rung_confidence(rung, *scoring.rung_noise(rung, baseline))
            fitness.parts["asha_rung"] = rung
            changes["status_reason"] = c.status_reason.replace(asha, f"{asha} ({scoring.rung_text(rung)})", 1)
        with self.lock:
            spared = self.rung_spared.pop(design, [])
        if spared:  # rungs at which ASHA would have stopped it, overruled as within noise
            fitness.parts["asha_spared"] = spared
        ray.get(self.writer.set_stage.remote(design, "explore", fitness=fitness.value, fitness_parts=fitness.parts,
                                             **changes))
        try:
            ray.get(self.analyst.analyse.remote(design, [baseline]))
        except Exception as err:
            self.events.append(f"the Analyst failed on {design}: {type(err).__name__}: {err}")

    # -- what people and the driver see ------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self.lock:
            used = self._used()
            return {"finished": self.finished, "ready": len(self.ready), "proposing": self.in_flight,
                    "scoring": self.post_in_flight,
                    "trained": used.trained, "proposals": self.proposals, "device_seconds": used.device_seconds,
                    "usd": used.usd, "events": list(self.events[-5:])}

    def stop(self) -> None:
        self.stopping = True
