"""The dashboard page in a real headless Chromium, served by a real Ray Serve app.

The page loads a campaign memory made here, the test sorts the table and clicks into a
candidate with the mouse, and checks that the candidate view shows that candidate: its
name, motivation, the diff against its parent, its loss curve, check report, judge and
analysis. A screenshot goes to docs/dashboard.png for people to look at.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

from asiarch.memory import Memory
from asiarch.testing.browser import Chromium, find_chromium
from asiarch.testing.demo import demo_embedder, make_demo_campaign
from serve_harness import running_dashboards

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="headless Chromium not installed: scripts/setup.sh installs Debian's 'chromium' (or set ASIARCH_CHROMIUM)",
)
SCREENSHOT = Path(os.environ.get("ASIARCH_SCREENSHOT_DIR", Path(__file__).resolve().parents[1] / "docs")) / "dashboard.png"


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return make_demo_campaign(tmp_path_factory.mktemp("runs"), n=60, seed=2)


@pytest.fixture(scope="module")
def base(campaign):
    with running_dashboards(campaign, {"/": {"embedder": demo_embedder()}}) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with Chromium(width=1440, height=1000) as chromium:
        yield chromium


def text(browser: Chromium, selector: str) -> str:
    return browser.evaluate(f"document.querySelector({json.dumps(selector)}).textContent")


def texts(browser: Chromium, selector: str) -> list[str]:
    return browser.evaluate(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)")


def first_row_id(browser: Chromium) -> str:
    return browser.evaluate("document.querySelector('#candidate-table tbody tr').dataset.id")


def wait_for_table_change(browser: Chromium, old_first: str) -> None:
    browser.wait_for(f"document.querySelector('#candidate-table tbody tr').dataset.id !== {json.dumps(old_first)}")


def test_clicking_a_candidate_shows_it(base, browser, campaign):
    memory = Memory(campaign / "memory", embedder=demo_embedder(), read_only=True)
    everything = memory.list_candidates(campaign="demo")
    mine = [c for c in everything if c.kind == "candidate"]

    browser.navigate(base + "/")
    rows = browser.wait_for("document.body.dataset.ready === '1' && document.querySelectorAll('#candidate-table tbody tr').length")
    assert rows == min(50, len(everything))
    # overview: counts per status and the best candidate, as the memory has them
    finished = sum(1 for c in mine if c.status == "finished")
    assert text(browser, '#status-counts [data-status="finished"] b') == str(finished)
    best = max((c for c in mine if c.fitness is not None), key=lambda c: c.fitness)
    assert text(browser, "#best-name") == best.name and text(browser, "#best-fitness") == f"{best.fitness:.3f}"
    assert first_row_id(browser) == best.id  # sorted by fitness, best first

    # sort by clicking the headers
    browser.click('#candidate-table th[data-sort="name"]')
    wait_for_table_change(browser, best.id)
    names = texts(browser, "#candidate-table tbody td.name")
    assert names[0].startswith(min(c.name for c in everything))
    assert browser.evaluate("document.querySelector('#candidate-table th[data-sort=\"name\"]').getAttribute('aria-sort')") == "ascending"
    by_name = first_row_id(browser)
    browser.click('#candidate-table th[data-sort="fitness"]')
    wait_for_table_change(browser, by_name)
    assert first_row_id(browser) == best.id

    # click into a candidate that has a parent, a check report, a judge and an analysis
    def diff_against_parent(c):
        parent = memory.get_candidate(c.parent_ids[0])
        return parent, list(difflib.unified_diff(parent.code.splitlines(), c.code.splitlines(), lineterm=""))

    target = next(c for c in sorted(mine, key=lambda c: -(c.fitness or 0))[3:]
                  if c.parent_ids and c.judge and c.analysis and any(line.startswith("-") for line in diff_against_parent(c)[1][2:]))
    parent, diff = diff_against_parent(target)
    browser.click(f'#candidate-table tbody tr[data-id="{target.id}"]')
    browser.wait_for(f"document.querySelector('#candidate-view').dataset.state === 'ready' && "
                     f"document.querySelector('#candidate-view').dataset.id === {json.dumps(target.id)}")
    assert browser.evaluate("location.hash") == f"#/c/{target.id}"
    assert text(browser, "#cv-name") == target.name
    assert text(browser, "#cv-motivation") == target.motivation
    assert text(browser, "#cv-status") == target.status
    assert target.id in text(browser, "#cv-sub")
    assert parent.name in texts(browser, "#cv-relatives a")
    # the code pane opens on the diff against the parent: exactly difflib's added and removed lines
    added = [line for line in diff if line.startswith("+") and not line.startswith("+++")]
    removed = [line for line in diff if line.startswith("-") and not line.startswith("---")]
    assert added and removed, "the demo candidate should add and change lines of its parent"
    assert texts(browser, "#cv-code span.diff-add") == added
    assert texts(browser, "#cv-code span.diff-del") == removed
    assert texts(browser, "#cv-code span.diff-file") == [f"--- {parent.name}", f"+++ {target.name}"]
    # metric curves: the candidate's explore curve beside the seeds'
    curve = f'#cv-curve-explore path[data-series="{target.name}"]'
    assert browser.evaluate(f"document.querySelector({json.dumps(curve)}).getAttribute('d').split(/[LM]/).length - 1") == len(target.explore.loss_curve)
    assert browser.evaluate("document.querySelectorAll('#cv-curve-explore path[data-series]').length") == 5  # + 4 seeds
    # check report, judge, analysis
    results = target.check_report["results"]
    assert texts(browser, "#cv-checks tbody td:first-child") == [r["check"] for r in results]
    assert texts(browser, "#cv-checks tbody td:nth-child(2)") == ["✓ pass" if r["passed"] else "✗ fail" for r in results]
    assert text(browser, "#cv-judge-rationale") == target.judge_rationale
    assert text(browser, '#cv-judge [data-score="performance"] .num') == f"{target.judge['performance']}/10"
    assert text(browser, "#cv-analysis") == target.analysis
    assert text(browser, "#cv-fitness-parts").startswith(f"explore: formula {target.explore.fitness_parts['formula']}")
    tests = target.verify.fitness_parts.get("tests") or {}  # verified: one line per seed with its tests
    assert [line.split(":")[0] for line in texts(browser, "#cv-tests div")] == [f"vs {seed}" for seed in tests]
    # its lineage, with the candidate marked
    assert browser.evaluate(f"document.querySelector('#cv-lineage [data-id={json.dumps(target.id)}].node').classList.contains('selected')")
    assert browser.evaluate("document.querySelector('#candidate-table tbody tr.selected').dataset.id") == target.id
    browser.screenshot(SCREENSHOT)

    # the other code tabs: the candidate's full code and its parent's
    browser.click('#cv-code-tabs button[data-tab="code"]')
    assert texts(browser, "#cv-code span") == [line or " " for line in target.code.split("\n")]
    browser.click('#cv-code-tabs button[data-tab="parent"]')
    assert texts(browser, "#cv-code span") == [line or " " for line in parent.code.split("\n")]

    # the campaign charts: one point per scored candidate, the breakthroughs of campaign.json, the tree
    scored = sum(1 for c in mine if c.fitness is not None)
    browser.wait_for("!!document.querySelector('#fitness-chart svg') && !!document.querySelector('#lineage svg')")
    assert browser.evaluate("document.querySelectorAll('#fitness-chart circle[data-id]').length") == scored
    state = json.loads((campaign / "campaign.json").read_text())
    expected = state["discovery"][-1]["breakthroughs"] if state["discovery"] else 0
    assert browser.evaluate("document.querySelector('#discovery-chart').dataset.breakthroughs") == str(expected)
    assert browser.evaluate("document.querySelectorAll('#lineage .node').length") > 4
    shown = browser.evaluate("document.querySelectorAll('#lineage .node').length")
    seeds = len(everything) - len(mine)
    header = browser.evaluate("document.querySelector('#lineage-info').textContent")
    assert header.startswith(f"{shown - seeds} of ") and header.endswith(f"candidates, plus {seeds} seed(s)")
    assert browser.errors == []


def test_the_page_reports_a_missing_candidate(base, browser):
    browser.navigate(base + "/#/c/no-such-design")
    browser.wait_for("!document.getElementById('error').hidden")
    assert "no candidate with id 'no-such-design'" in text(browser, "#error")
    assert browser.evaluate("document.querySelector('#candidate-view').dataset.state") == "error"


def test_clicking_a_tree_node_opens_that_candidate(base, browser, campaign):
    memory = Memory(campaign / "memory", embedder=demo_embedder(), read_only=True)
    browser.navigate(base + "/")
    browser.wait_for("document.querySelectorAll('#lineage circle.node').length > 0")
    node = browser.evaluate("document.querySelector('#lineage circle.node').dataset.id")
    browser.click(f'#lineage circle.node[data-id="{node}"]')
    browser.wait_for(f"document.querySelector('#candidate-view').dataset.id === {json.dumps(node)} && "
                     "document.querySelector('#candidate-view').dataset.state === 'ready'")
    assert text(browser, "#cv-name") == memory.get_candidate(node).name
