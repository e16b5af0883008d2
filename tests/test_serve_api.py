"""The dashboard's JSON API on a real Ray Serve app over a real (synthetic) campaign memory.

Paging, filters and sorting, a missing candidate (404 with a message), malformed query
parameters (400 with a message), the bearer token, and reads that follow a campaign that
is still writing.
"""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path

import pytest
import requests
from ray import serve

from asiarch.memory import Candidate, Memory, StageMetrics, lifecycle
from asiarch.serve import build_app
from asiarch.serve.data import layered_layout
from asiarch.testing.demo import demo_embedder, make_demo_campaign
from serve_harness import running_dashboards

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return make_demo_campaign(tmp_path_factory.mktemp("runs"), n=60, seed=2)


@pytest.fixture(scope="module")
def base(campaign):
    apps = {"/": {"embedder": demo_embedder()}, "/secured": {"token": TOKEN, "embedder": demo_embedder()}}
    with running_dashboards(campaign, apps) as url:
        yield url


@pytest.fixture(scope="module")
def memory(campaign):
    return Memory(campaign / "memory", embedder=demo_embedder(), read_only=True)


def get(base: str, path: str, **params) -> requests.Response:
    return requests.get(f"{base}{path}", params=params, timeout=30)


def mine(memory: Memory) -> list[Candidate]:
    return memory.list_candidates(campaign="demo", kind="candidate")


def test_summary_matches_the_memory(base, memory, campaign):
    response = get(base, "/api/summary")
    assert response.status_code == 200
    summary = response.json()
    candidates = mine(memory)
    expected = {}
    for c in candidates:
        expected[c.status] = expected.get(c.status, 0) + 1
    assert {k: v for k, v in summary["counts"].items() if v} == expected
    assert summary["total"] == len(candidates)
    best = max((c for c in candidates if c.fitness is not None), key=lambda c: c.fitness)
    assert summary["best"] == {"id": best.id, "name": best.name, "fitness": best.fitness}
    assert sorted(b["name"] for b in summary["baselines"]) == ["attention", "deltanet", "gated_deltanet", "mamba2"]
    state = json.loads((campaign / "campaign.json").read_text())
    assert summary["budget"] == state["budget"] and summary["status"] == state["status"]
    assert summary["used"]["device_hours"] == pytest.approx(sum(c.device_seconds for c in memory.list_candidates()) / 3600)
    assert summary["breakthroughs"] == sum(1 for c in candidates if lifecycle.is_breakthrough(c))
    assert summary["verified"] == sum(1 for c in candidates if lifecycle.is_verified(c)) >= 1
    assert summary["trained"] == summary["used"]["candidates"] == sum(1 for c in candidates if lifecycle.counts_toward_budget(c))
    counts = memory.campaign_counts("demo")
    assert (summary["counts"], summary["total"], summary["trained"], summary["verified"], summary["breakthroughs"],
            summary["seeds"], summary["best_fitness"]) == (counts.by_status, counts.proposals, counts.trained,
                                                          counts.verified, counts.breakthroughs, counts.seeds,
                                                          counts.best_fitness)


def test_paging_visits_every_candidate_once_in_fitness_order(base, memory):
    seen, offset = [], 0
    while True:
        page = get(base, "/api/candidates", limit=7, offset=offset, sort="fitness", order="desc").json()
        assert page["limit"] == 7 and page["offset"] == offset and len(page["items"]) <= 7
        if not page["items"]:
            break
        seen += page["items"]
        offset += 7
    everything = memory.list_candidates(campaign="demo")
    assert page["total"] == len(everything) == len(seen)
    assert sorted(r["id"] for r in seen) == sorted(c.id for c in everything)
    scored = [r["fitness"] for r in seen if r["fitness"] is not None]
    assert scored == sorted(scored, reverse=True)
    assert all(r["fitness"] is None for r in seen[len(scored):])  # unscored ones last
    past_the_end = get(base, "/api/candidates", offset=10_000).json()
    assert past_the_end["items"] == [] and past_the_end["total"] == len(everything)


def test_filters_and_sorting(base, memory):
    candidates = mine(memory)
    everything = memory.list_candidates(campaign="demo")  # the seed baselines are rows too (status finished)
    finished = get(base, "/api/candidates", status="finished", limit=1000).json()
    assert finished["total"] == sum(1 for c in everything if c.status == "finished")
    assert {r["status"] for r in finished["items"]} == {"finished"}
    without_seeds = get(base, "/api/candidates", status="finished", baselines="false", limit=1000).json()
    assert without_seeds["total"] == sum(1 for c in candidates if c.status == "finished") == finished["total"] - 4
    two = get(base, "/api/candidates", status="finished,stopped", limit=1000).json()
    assert two["total"] == sum(1 for c in everything if c.status in ("finished", "stopped"))
    verify = get(base, "/api/candidates", stage="verify", baselines="false", limit=1000).json()
    assert {r["id"] for r in verify["items"]} == {c.id for c in candidates if c.stage == "verify"}
    assert all(r["verified"] == (r["status"] == "finished") for r in verify["items"])
    by_verify = get(base, "/api/candidates", sort="verify_fitness", order="desc", limit=1000).json()["items"]
    verified = [c for c in candidates if c.verify.fitness is not None]
    assert [r["id"] for r in by_verify[:len(verified)]] == [c.id for c in sorted(verified, key=lambda c: (-c.verify.fitness, c.id))]
    assert all(r["verify_fitness"] is None for r in by_verify[len(verified):])
    by_name = get(base, "/api/candidates", sort="name", order="asc", limit=1000).json()["items"]
    assert [r["name"] for r in by_name] == sorted(r["name"] for r in by_name)
    by_loss = [r["explore_eval_loss"] for r in get(base, "/api/candidates", sort="explore_eval_loss", order="asc",
                                                  limit=1000).json()["items"] if r["explore_eval_loss"] is not None]
    assert by_loss == sorted(by_loss)
    target = candidates[5]
    found = get(base, "/api/candidates", q=target.name.upper()).json()["items"]
    assert target.id in [r["id"] for r in found]


def test_a_missing_candidate_is_a_404_with_a_message(base):
    for path in ("/api/candidates/no-such-design", "/api/candidates/no-such-design/lineage"):
        response = get(base, path)
        assert response.status_code == 404
        assert "no-such-design" in response.json()["detail"] and "demo" in response.json()["detail"]


@pytest.mark.parametrize(("params", "mentions"), [
    ({"limit": "-1"}, "limit"),
    ({"limit": "abc"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"limit": "100000"}, "limit"),
    ({"offset": "-3"}, "offset"),
    ({"offset": "1.5"}, "offset"),
    ({"sort": "password"}, "sort column 'password'"),
    ({"order": "sideways"}, "order"),
    ({"status": "zombie"}, "status 'zombie'"),
    ({"status": "finished,zombie"}, "status 'zombie'"),
    ({"stage": "middle"}, "stage 'middle'"),
    ({"baselines": "maybe"}, "baselines"),
])
def test_malformed_query_parameters_are_a_400_with_a_message(base, params, mentions):
    response = get(base, "/api/candidates", **params)
    assert response.status_code == 400, response.text
    assert mentions in response.json()["detail"]


@pytest.mark.parametrize(("path", "params"), [
    ("/api/insights", {"k": "0"}), ("/api/insights", {"mode": "telepathy"}), ("/api/insights", {"kind": "rumour"}),
    ("/api/lineage", {"top": "-1"}), ("/api/lineage", {"top": "many"}),
])
def test_other_endpoints_reject_malformed_parameters(base, path, params):
    response = get(base, path, **params)
    assert response.status_code == 400 and response.json()["detail"]


def test_one_candidate_with_its_parent_code_and_diff(base, memory):
    child = next(c for c in mine(memory) if c.parent_ids and c.judge)
    parent = memory.get_candidate(child.parent_ids[0])
    body = get(base, f"/api/candidates/{child.id}").json()
    assert (body["id"], body["name"], body["code"], body["motivation"]) == (child.id, child.name, child.code, child.motivation)
    assert body["parent"]["id"] == parent.id and body["parent"]["code"] == parent.code
    expected = "\n".join(difflib.unified_diff(parent.code.splitlines(), child.code.splitlines(), fromfile=parent.name,
                                              tofile=child.name, lineterm=""))
    assert body["diff"] == expected and "\n+" in body["diff"]
    assert body["check_report"] == child.check_report and body["judge"] == child.judge
    assert body["explore"]["loss_curve"] == child.explore.loss_curve
    assert "motivation_embedding" not in body
    assert {c["id"] for c in body["children"]} == {c.id for c in memory.children(child.id)}
    assert len(body["baseline_curves"]) == 4
    assert body["fitness"] == child.explore.fitness and body["fitness_parts"] == child.explore.fitness_parts
    assert not body["baseline"] and body["kind"] == "candidate"
    seed = get(base, "/api/candidates/demo-seed-deltanet").json()
    assert seed["baseline"] and seed["kind"] == "seed" and seed["diff"] is None and seed["parent"] is None
    assert not seed["verified"] and not seed["breakthrough"]  # seeds are never counted as verified designs
    winner = next(c for c in mine(memory) if lifecycle.is_verified(c))
    shown = get(base, f"/api/candidates/{winner.id}").json()
    assert shown["verified"] and shown["breakthrough"] == winner.breakthrough
    assert shown["verify"]["fitness"] == winner.verify.fitness and "beats" in shown["verify"]["fitness_parts"]


def test_lineage_of_a_candidate_and_of_the_campaign(base, memory):
    child = max((c for c in mine(memory) if c.generation >= 3), key=lambda c: c.generation)
    tree = get(base, f"/api/candidates/{child.id}/lineage").json()
    ids = {n["id"] for n in tree["nodes"]}
    assert ids == {child.id} | {a.id for a in memory.ancestors(child.id)} | {d.id for d in memory.descendants(child.id)}
    depth = {n["id"]: n["depth"] for n in tree["nodes"]}
    for edge in tree["edges"]:
        assert edge["source"] in ids and edge["target"] in ids and depth[edge["source"]] < depth[edge["target"]]
    whole = get(base, "/api/lineage").json()
    assert len(whole["nodes"]) == memory.count_candidates("demo")
    # the header's counts: candidates shown of the campaign's candidates, seeds apart
    seeds = len(memory.list_candidates(campaign="demo", kind="seed"))
    assert (whole["shown_candidates"], whole["shown_seeds"]) == (len(whole["nodes"]) - seeds, seeds) and seeds > 0
    assert whole["shown_candidates"] == whole["total"]
    assert len(whole["edges"]) == sum(len(c.parent_ids) for c in memory.list_candidates(campaign="demo"))
    top = get(base, "/api/lineage", top=5).json()
    fittest = [c.id for c in sorted((c for c in mine(memory) if c.fitness is not None), key=lambda c: -c.fitness)[:5]]
    assert set(fittest) <= {n["id"] for n in top["nodes"]} and len(top["nodes"]) < len(whole["nodes"])
    assert 5 <= top["shown_candidates"] < top["total"]
    seed = max(memory.list_candidates(campaign="demo", kind="seed"), key=lambda c: len(memory.descendants(c.id)))
    assert len(memory.descendants(seed.id)) > 3
    capped = get(base, f"/api/candidates/{seed.id}/lineage", max_descendants=3).json()
    assert capped["truncated"] and len(capped["nodes"]) == 4  # the seed and its 3 nearest descendants
    nearest = {c.id for c in memory.children(seed.id)}
    assert {n["id"] for n in capped["nodes"]} - {seed.id} <= nearest or nearest < {n["id"] for n in capped["nodes"]}


def test_fitness_over_time_and_discovery(base, memory, campaign):
    fitness = get(base, "/api/fitness").json()
    scored = [c for c in mine(memory) if c.fitness is not None]
    assert len(fitness["points"]) == len(scored)
    numbers = [p["number"] for p in fitness["points"]]
    assert numbers == sorted(numbers)
    best = [p["best"] for p in fitness["points"]]
    assert best == sorted(best) and best[-1] == max(c.fitness for c in scored)
    discovery = get(base, "/api/discovery").json()
    state = json.loads((campaign / "campaign.json").read_text())
    assert discovery["source"] == "campaign.json"
    assert [p["breakthroughs"] for p in discovery["points"]] == [p["breakthroughs"] for p in state["discovery"]]


def test_insights_search_and_listing(base):
    found = get(base, "/api/insights", q="recall with a forget gate", k=3).json()
    assert found["mode"] == "hybrid" and 1 <= len(found["items"]) <= 3
    assert all(i["kind"] == "experiment" and i["design_insight"] for i in found["items"])
    newest = get(base, "/api/insights", k=5).json()
    assert newest["mode"] == "latest" and len(newest["items"]) == 5


def test_the_token_is_required_when_set(base):
    for path in ("/secured/api/summary", "/secured/api/candidates"):
        missing = get(base, path)
        assert missing.status_code == 401 and "missing token" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = requests.get(base + path, headers={"Authorization": "Bearer guess"}, timeout=30)
        assert wrong.status_code == 401 and "wrong token" in wrong.json()["detail"]
        right = requests.get(base + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert right.status_code == 200
    assert requests.get(base + "/secured/api/summary", params={"token": TOKEN}, timeout=30).status_code == 401  # API: header only
    page = get(base, "/secured/")
    assert page.status_code == 401 and 'id="auth-message"' in page.text
    assert get(base, "/secured/", token=TOKEN).status_code == 200
    assert get(base, "/api/summary").status_code == 200  # the open app is unaffected


def test_the_page_is_self_contained(base):
    page = get(base, "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="candidate-table"' in page.text and "/*SCRIPT*/" not in page.text and "/*STYLE*/" not in page.text
    for remote in ("http://", "https://", "//cdn"):
        assert f'src="{remote}' not in page.text and f'href="{remote}' not in page.text  # nothing from the network


def test_a_non_loopback_address_needs_a_token(campaign):
    from asiarch.serve import serve_campaign

    with pytest.raises(ValueError, match="without a token"):
        serve_campaign(campaign, host="0.0.0.0", port=1, blocking=False)


def test_layout_puts_parents_left_of_children():
    ids = ["a", "b", "c", "d", "e"]
    edges = [("a", "c"), ("b", "c"), ("c", "d"), ("a", "d"), ("e", "e")]  # a self-loop: damaged data must not hang
    pos = layered_layout(ids, edges)
    assert pos["a"][0] == pos["b"][0] == pos["e"][0] == 0 and pos["c"][0] == 1 and pos["d"][0] == 2
    assert len({pos[i][1] for i in ids if pos[i][0] == 0}) == 3  # no two nodes of a column on one row


def test_a_memory_that_needs_migrating_is_a_500_that_says_so(base, tmp_path):
    """A campaign whose memory is schema v1: the read-only dashboard says why it cannot show it."""
    old = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "fixtures" / "memory_v1", old / "memory")
    serve.run(build_app(old), name="dash-v1", route_prefix="/v1")
    try:
        response = get(base, "/v1/api/summary")
        assert response.status_code == 500
        assert "memory schema v1, older than v2, and it cannot be migrated read-only" in response.json()["detail"]
    finally:
        serve.delete("dash-v1")


def test_reads_follow_a_campaign_that_is_writing(base, campaign):
    """Last: it adds a candidate to the memory while the app serves it."""
    before = get(base, "/api/summary").json()
    writer = Memory(campaign / "memory", embedder=demo_embedder())
    writer.upsert_candidates(Candidate(id="demo-live-1", campaign="demo", name="late-arrival", code="x = 1\n",
                                       motivation="written while the dashboard serves", status="finished",
                                       parent_ids=["demo-seed-deltanet"], generation=1, reached_training=True,
                                       explore=StageMetrics(loss_curve=[6.0, 5.0], eval_loss=4.5, fitness=0.99)))
    after = get(base, "/api/summary").json()
    assert after["total"] == before["total"] + 1 and after["version"] != before["version"]
    assert after["trained"] == before["trained"] + 1 and after["counts"]["finished"] == before["counts"]["finished"] + 1
    assert after["best"]["id"] == "demo-live-1"
    first = get(base, "/api/candidates", limit=1).json()["items"][0]
    assert first["id"] == "demo-live-1"
    assert get(base, "/api/candidates/demo-live-1").json()["parent"]["name"] == "deltanet"
