"""``asiarch report``: figures are real PNG files and report.md names the best designs and the seeds."""

from __future__ import annotations

import json

import matplotlib.image
import pytest

from asiarch.memory import Memory
from asiarch.memory.lifecycle import SCORED_AT
from asiarch.report import FIGURES, write_report
from asiarch.serve.data import CampaignData
from asiarch.testing.demo import demo_embedder, make_demo_campaign

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return make_demo_campaign(tmp_path_factory.mktemp("runs"), n=80, seed=7)


def check_figures(out):
    for name in FIGURES:
        path = out / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300, name
        assert pixels.std() > 0.01, f"{name} is blank"


def test_report_writes_the_figures_and_a_summary(campaign, tmp_path):
    report = write_report(campaign, tmp_path / "report")
    assert report == tmp_path / "report" / "report.md"
    check_figures(tmp_path / "report")
    text = report.read_text()
    memory = Memory(campaign / "memory", embedder=demo_embedder(), read_only=True)
    ranked = memory.top_k(10, campaign="demo", kind="candidate")
    table = text.split("## Top", 1)[1].split("## Figures", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[1] for row in rows] == [c.name for c in ranked[:10]]  # in fitness order
    assert f"`{ranked[0].id}`" in rows[0] and f"{ranked[0].fitness:.4f}" in rows[0]
    for c, row in zip(ranked, rows):
        assert f" {c.verify.fitness:.4f} |" in row if c.verify.fitness is not None else " | — | " in row
    for seed in ("deltanet", "gated_deltanet", "mamba2", "attention"):
        assert f"| seed | {seed} |" in table
    for name in FIGURES:
        assert f"]({name})" in text
    tested = [c for c in ranked[:10] if c.verify.fitness_parts.get("tests")]
    if tested:  # each verified candidate against each seed, with intervals and p-values
        section = text.split("### Against each seed", 1)[1].split("##", 1)[0]
        for c in tested:
            for seed, test in c.verify.fitness_parts["tests"].items():
                (row,) = [line for line in section.splitlines() if line.startswith(f"| {c.name} | {seed} | ")]
                n = test["loss"]["n"]  # the runs behind each side, and how many of them independent
                assert f"| {n[0]} ({n[0]}) vs {n[1]} ({n[1]}) | {test['loss']['diff']:+.4f}" in row
    state = json.loads((campaign / "campaign.json").read_text())
    counts = memory.campaign_counts("demo")
    assert counts.verified >= 1 and counts.trained > counts.verified
    assert (f"{counts.proposals} candidates proposed; {counts.trained} trained (count toward the budget); "
            f"{counts.verified} verified; **{counts.breakthroughs} breakthroughs**") in text
    assert f"Status **{state['status']}**" in text
    assert f"| candidates trained | {counts.trained} | {state['budget']['max_candidates']} |" in text


def test_report_without_campaign_json_rebuilds_discovery_from_the_memory(tmp_path):
    root = make_demo_campaign(tmp_path / "runs", n=30, seed=1, name="bare")
    (root / "campaign.json").unlink()
    assert CampaignData(root).discovery()["source"] == "memory"
    report = write_report(tmp_path / "runs", tmp_path / "out")  # a runs folder means its LATEST campaign
    check_figures(tmp_path / "out")
    assert report.read_text().startswith("# Campaign bare")


def test_the_best_fitness_curve_puts_each_explore_fitness_where_it_was_scored(tmp_path):
    """Not at the candidate's last update: a verified candidate's explore fitness stays at explore's hours."""
    root = make_demo_campaign(tmp_path / "runs", n=40, seed=3, name="curve")
    memory = Memory(root / "memory", embedder=demo_embedder())
    scored = [c for c in memory.list_candidates(campaign="curve", kind="candidate") if c.explore.fitness is not None]
    best, expected = None, []
    for c in sorted(scored, key=lambda c: (c.explore.fitness_parts[SCORED_AT], c.id)):
        if best is None or c.explore.fitness > best:
            best = c.explore.fitness
            expected.append((c.explore.fitness_parts[SCORED_AT], c.id, best))
    discovery = CampaignData(root).discovery()
    assert discovery["best_fitness_order"] == "scored"
    assert [(p["device_hours"], p["candidate_id"], p["best_fitness"]) for p in discovery["best_fitness"]] == expected
    verified = [c for c in scored if c.stage == "verify"]
    assert verified and all(c.explore.fitness_parts[SCORED_AT] < discovery["device_hours"] for c in verified)
    # a campaign from before the stamp: one row without it puts the whole curve in update order, and says so
    memory.set_stage(scored[0].id, "explore", fitness_parts={k: v for k, v in scored[0].explore.fitness_parts.items()
                                                             if k != SCORED_AT})
    fallback = CampaignData(root).discovery()
    assert fallback["best_fitness_order"] == "last update"
    assert [p["best_fitness"] for p in fallback["best_fitness"]] == sorted(p["best_fitness"] for p in fallback["best_fitness"])
    write_report(root, tmp_path / "out")
    check_figures(tmp_path / "out")


def test_report_of_a_campaign_that_has_no_candidates_yet(tmp_path):
    root = tmp_path / "runs" / "empty"
    Memory(root / "memory", embedder=demo_embedder())
    report = write_report(root, tmp_path / "out")
    assert "No candidate has a fitness yet." in report.read_text()
    for name in FIGURES:
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_SIGNATURE


def test_a_campaign_that_has_only_just_started(tmp_path):
    """campaign.json written, memory not yet: the view and the report still answer (from the record)."""
    root = tmp_path / "runs" / "fresh"
    root.mkdir(parents=True)
    (root / "campaign.json").write_text(json.dumps({"name": "fresh", "status": "running", "phase": "baselines",
                                                    "budget": {"max_candidates": 20}, "used": {}, "discovery": []}))
    (tmp_path / "runs" / "LATEST").write_text("fresh\n")
    data = CampaignData(tmp_path / "runs")
    summary = data.summary()
    assert (summary["name"], summary["phase"], summary["total"], summary["version"]) == ("fresh", "baselines", 0, -1)
    assert data.candidates_page()["items"] == [] and data.lineage()["nodes"] == []
    report = write_report(root, tmp_path / "out")
    assert "Status **running**, phase baselines" in report.read_text()
