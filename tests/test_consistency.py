"""One campaign, four readers, one set of numbers.

``asiarch status`` (text and ``--json``), ``asiarch report`` (report.md), the dashboard's
``CampaignData.summary()`` and its HTTP API all count the same campaign memory; they must
agree on the counts per status, the budget used (candidates trained), verified designs,
breakthroughs and the best fitness. The campaign mixes a synthetic demo with the rows the
readers used to disagree on: a candidate repaired after a training failure (waiting to
train again), one promoted to verify without a result yet, one whose verify run failed
after reporting a loss, one flagged as a breakthrough without a verify result, and one
real breakthrough.
"""

from __future__ import annotations

import json
import re

import pytest
import requests
from omegaconf import OmegaConf
from serve_harness import running_dashboards

from asiarch.campaign.state import CampaignPaths
from asiarch.cli import main
from asiarch.config import compose
from asiarch.memory import Candidate, Memory, lifecycle
from asiarch.memory.lifecycle import STATUSES, CampaignCounts
from asiarch.report import write_report
from asiarch.serve.data import CampaignData
from asiarch.testing.demo import demo_embedder, make_demo_campaign


def proposed(memory: Memory, cid: str, *moves: str | tuple[str, str], **fields) -> None:
    """A new candidate, moved through ``moves`` (a status, or (stage, status)) by legal writes."""
    memory.upsert_candidates(Candidate(id=cid, campaign="demo", name=cid.removeprefix("demo-"), code="x = 1\n", **fields))
    for move in moves:
        stage, status = move if isinstance(move, tuple) else ("explore", move)
        memory.update_candidate(cid, stage=stage, status=status)


def add_disputed_rows(memory: Memory) -> None:
    explored = ("validated", "training", "finished")
    proposed(memory, "demo-edge-repaired", "validated", "training", "failed", "validated",
             repairs=[{"attempt": 1, "failures": [{"check": "training", "reason": "NaN loss"}], "fixed": True}])
    proposed(memory, "demo-edge-verifying", *explored, ("verify", "promoted"))
    proposed(memory, "demo-edge-verify-failed", *explored, "promoted", ("verify", "failed"))
    memory.set_stage("demo-edge-verify-failed", "verify", eval_loss=4.6)  # a loss was reported before the run failed
    proposed(memory, "demo-edge-flagged", *explored, ("verify", "promoted"))
    memory.update_candidate("demo-edge-flagged", breakthrough=True)
    proposed(memory, "demo-edge-winner", *explored, ("verify", "promoted"))
    memory.set_stage("demo-edge-winner", "verify", status="finished", eval_loss=3.9, fitness=0.7, breakthrough=True,
                     fitness_parts={"beats": {"deltanet": True, "gated_deltanet": True, "mamba2": True, "attention": True}})
    for cid, fitness in (("demo-edge-verifying", 0.31), ("demo-edge-verify-failed", 0.32), ("demo-edge-flagged", 0.33),
                         ("demo-edge-winner", 0.34)):
        memory.set_stage(cid, "explore", fitness=fitness, eval_loss=5.3)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> CampaignPaths:
    runs = tmp_path_factory.mktemp("runs")
    paths = CampaignPaths(make_demo_campaign(runs, n=40, seed=5))
    add_disputed_rows(Memory(paths.memory, embedder=demo_embedder()))
    cap = json.loads(paths.state.read_text())["budget"]["max_candidates"]  # as a campaign records its config's cap
    OmegaConf.save(compose([f"campaign.max_candidates={cap}"]), paths.root / "config.yaml")
    return paths


def budget_cap(campaign: CampaignPaths) -> int:
    return json.loads(campaign.state.read_text())["budget"]["max_candidates"]


@pytest.fixture(scope="module")
def expected(campaign) -> CampaignCounts:
    return Memory(campaign.memory, embedder=demo_embedder(), read_only=True).campaign_counts("demo")


def numbers(counts: dict[str, int], total: int, trained: int, verified: int, breakthroughs: int) -> dict:
    return {"counts": {s: counts.get(s, 0) for s in STATUSES}, "total": total, "trained": trained,
            "verified": verified, "breakthroughs": breakthroughs}


def expected_numbers(counts: CampaignCounts) -> dict:
    return numbers(counts.by_status, counts.proposals, counts.trained, counts.verified, counts.breakthroughs)


def test_the_disputed_rows_are_counted_by_the_lifecycle(campaign, expected):
    memory = Memory(campaign.memory, embedder=demo_embedder(), read_only=True)
    rows = {c.id: c for c in memory.list_candidates(campaign="demo", where="id LIKE 'demo-edge-%'")}
    verdicts = {cid: (lifecycle.counts_toward_budget(c), lifecycle.is_verified(c), lifecycle.is_breakthrough(c))
                for cid, c in rows.items()}
    assert verdicts == {
        "demo-edge-repaired": (True, False, False),  # it trained once: the budget counts it, whatever came next
        "demo-edge-verifying": (True, False, False),  # at stage verify, but no verify result yet
        "demo-edge-verify-failed": (True, False, False),  # a verify loss, but the run failed
        "demo-edge-flagged": (True, False, False),  # a breakthrough flag is not a breakthrough without a result
        "demo-edge-winner": (True, True, True),
    }
    assert expected.verified > expected.breakthroughs == 1 and expected.trained > expected.verified
    assert expected.by_status["promoted"] == 2


def test_asiarch_status_json_and_text(campaign, expected, capsys):
    runs = str(campaign.root.parent)
    assert main(["status", "--dir", runs, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert numbers(status["counts"], status["total"], status["trained"], status["verified"],
                   status["breakthroughs"]) == expected_numbers(expected)
    assert status["best_fitness"] == expected.best_fitness and status["seeds"] == expected.seeds
    assert status["max_candidates"] == budget_cap(campaign)

    assert main(["status", "--dir", runs]) == 0
    line = " ".join(capsys.readouterr().out.split())
    shown = {s: int(re.search(rf"\b{s} (\d+)", line).group(1)) for s in STATUSES}
    best = float(re.search(r"best fitness ([\d.]+)", line).group(1))
    trained, cap = map(int, re.search(r"budget: (\d+)/(\d+) candidates", line).groups())
    assert numbers(shown, sum(shown.values()), trained, int(re.search(r"verified (\d+)", line).group(1)),
                   int(re.search(r"breakthroughs (\d+)", line).group(1))) == expected_numbers(expected)
    assert best == pytest.approx(expected.best_fitness, abs=5e-4) and cap == budget_cap(campaign)  # shown to 3 places


def test_the_report(campaign, expected, tmp_path):
    text = write_report(campaign.root, tmp_path / "report").read_text()
    headline = re.search(r"(\d+) candidates proposed; (\d+) trained \(count toward the budget\); (\d+) verified; "
                         r"\*\*(\d+) breakthroughs\*\*.*Best fitness \*\*([\d.]+)\*\*", text)
    total, trained, verified, breakthroughs = map(int, headline.groups()[:4])
    table = text.split("| status | ", 1)[1].splitlines()
    assert table[0].rstrip(" |").split(" | ") == list(STATUSES)
    counts = dict(zip(STATUSES, map(int, table[2].removeprefix("| candidates | ").rstrip(" |").split(" | "))))
    assert numbers(counts, total, trained, verified, breakthroughs) == expected_numbers(expected)
    assert float(headline.group(5)) == pytest.approx(expected.best_fitness, abs=5e-5)  # shown to 4 places
    assert f"| candidates trained | {expected.trained} | {budget_cap(campaign)} |" in text


def dashboard_numbers(summary: dict) -> dict:
    assert summary["trained"] == summary["used"]["candidates"]
    return numbers(summary["counts"], summary["total"], summary["trained"], summary["verified"], summary["breakthroughs"])


def test_the_dashboard_view_and_its_http_api(campaign, expected):
    summary = CampaignData(campaign.root).summary()
    assert dashboard_numbers(summary) == expected_numbers(expected)
    assert summary["best"]["fitness"] == summary["best_fitness"] == expected.best_fitness
    assert summary["used"]["device_hours"] == pytest.approx(expected.device_hours)
    assert summary["budget"]["max_candidates"] == budget_cap(campaign)
    with running_dashboards(campaign.root, {"/": {"embedder": demo_embedder()}}) as url:
        served = requests.get(f"{url}/api/summary", timeout=60).json()
        page = requests.get(f"{url}/api/candidates", params={"status": "promoted", "limit": 100}, timeout=60).json()
    assert dashboard_numbers(served) == expected_numbers(expected)
    assert served["best"]["fitness"] == served["best_fitness"] == expected.best_fitness
    assert page["total"] == expected.by_status["promoted"]
    assert not any(r["verified"] or r["breakthrough"] for r in page["items"])  # promoted: not verified yet
