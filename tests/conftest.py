"""Shared test setup: a local-only Ray, one torch thread, the CUDA skip marker, and how pytest-xdist splits
the suite over its two workers (``-n 2`` in pyproject.toml)."""

from __future__ import annotations

import os
import warnings

# Keep any Ray started by a test on 127.0.0.1; set before ray is imported anywhere.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Every Ray a test starts is its own: never one that another test (the other xdist worker's, or the two-node
# cluster of test_job_submit) has running on this machine, which `ray.init()` would otherwise join.
os.environ.setdefault("RAY_ADDRESS", "local")
warnings.filterwarnings("ignore", message="Triton is not supported on current platform")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: flash-linear-attention's Triton kernels do not run on CPU"
)


# Whole campaigns (each keeps both cores busy for minutes): one after another on one xdist worker, started first,
# while the other worker runs the rest of the suite, each module whole (its module fixtures run once); the worker
# that finishes first takes the modules left. test_cli.py (seed baselines, ~2 min) is not among them: with it the
# campaign worker ran ~2 min after the other had finished.
CAMPAIGNS = ("test_job_submit.py", "test_campaign.py", "test_hostile_campaign.py")


# Then the other modules longest first, so the two workers end together (seconds of each module in one run on 2
# cores, 2026-12-05, --durations=0: the campaigns 656 in all, the rest 724). xdist hands each worker two units at
# the start: the campaigns and the third unit go to one, so the third is a short one; the rest follow in turn.
LONGEST_FIRST = ("test_sandbox.py",  # 107
                 "test_report.py",  # 4: after the campaigns, on their worker
                 "test_checks_corpus.py", "test_checks.py", "test_cli.py",  # 92, 77, 65
                 "test_memory_actor.py", "test_schedulers.py", "test_serve_api.py", "test_agents_engineer.py",  # 32-38
                 "test_serve_browser.py", "test_storage.py", "test_train.py", "test_memory.py", "test_consistency.py")


def _order(item) -> int:
    name = item.path.name
    if name in CAMPAIGNS:
        return 0
    return 1 + LONGEST_FIRST.index(name) if name in LONGEST_FIRST else 1 + len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_order)  # stable: within a module, and among the modules not named, as collected


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's work units: a module, or all the campaign modules together. (Its ``xdist_group`` marks do
    not group anything under pytest 9: the suffix they add to a test's id no longer reaches the id.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "campaigns" if module.rsplit("/", 1)[-1] in CAMPAIGNS else module

    return ModuleScheduling(config, log)
