"""The offline research loop on Ray: Researcher -> Engineer -> short training -> Judge -> Analyst."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from asiarch.agents import AnalystActor, EngineerActor, JudgeActor, ResearcherActor
from asiarch.testing.training import explore_metrics, train_candidate
from asiarch.arch import SEEDS
from asiarch.config import load_scale
from asiarch.proposer import OfflineBackend
from asiarch.memory import Memory, MemoryActor
from asiarch.train.protocol import prepare_data, train_mixer

FAST_CHECKS = {"complexity_repeats": 2, "check_timeout": 60}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_candidates_through_the_offline_loop(local_ray, tmp_path):
    uri = str(tmp_path / "memory")
    scale = load_scale(["scale=cpu_tiny", "scale.train.steps=4", "scale.train.report_every=2",
                        "scale.train.eval_batches=1", "scale.corpus.max_documents=80",
                        "scale.corpus.tokenizer_vocab_size=512", f"scale.corpus.cache_dir={tmp_path / 'cache'}",
                        "scale.mqar.num_train=500", "scale.mqar.num_test=100"])
    data = prepare_data(scale)
    seed = train_mixer(SEEDS["deltanet"], scale, data, downstream=False)
    seeds = [{"name": "deltanet", "eval_loss": seed["eval_loss"], "mqar_accuracy": seed["mqar_accuracy"]}]

    writer = MemoryActor.remote(uri)
    ray.get(writer.load_cognition_base.remote())
    backend = OfflineBackend(seed=0)
    researcher = ResearcherActor.remote(backend, uri, writer, campaign="loop")
    engineer = EngineerActor.remote(backend, uri, writer, campaign="loop")
    judge = JudgeActor.remote(backend, uri, writer, campaign="loop")
    analyst = AnalystActor.remote(backend, uri, writer, campaign="loop")
    data_ref = ray.put(data)

    for _ in range(2):  # the campaign tests run this loop at scale; here each step is checked directly
        proposed = ray.get(researcher.propose.remote())
        validated = ray.get(engineer.validate.remote(proposed.id, scale, **FAST_CHECKS))
        if validated.status != "validated":
            continue
        summary = ray.get(train_candidate.remote(validated.code, scale, data_ref))
        ray.get(writer.update_candidate.remote(validated.id, status="training"))
        changes = explore_metrics(summary)
        changes["explore"].fitness = -summary["eval_loss"]
        ray.get(writer.update_candidate.remote(validated.id, **changes))
        ray.get(judge.score.remote(validated.id, seeds))
        ray.get(analyst.analyse.remote(validated.id))

    # the agents embed their queries with the writer's model (one MiniLM per campaign): the vectors it stored
    from asiarch.agents.roles import MemoryAccess
    from asiarch.memory import WriterEmbedder
    from asiarch.memory.schema import insight_from_row

    reader = MemoryAccess(uri, writer).reader
    assert isinstance(reader.embedder, WriterEmbedder) and reader.embedder.dim == 384
    stored = [insight_from_row(row) for row in reader.list_insights()[:3]]
    assert np.allclose(reader.embedder.embed([i.embedding_text for i in stored]), [i.embedding for i in stored], atol=1e-5)

    memory = Memory(uri, read_only=True)
    candidates = memory.list_candidates(campaign="loop")
    assert len(candidates) == 2 and len({c.name for c in candidates}) == 2
    trained = [c for c in candidates if c.status == "finished"]
    assert len(trained) >= 1
    for c in trained:
        assert c.check_report["passed"] and c.explore.eval_loss is not None and len(c.explore.loss_curve) == 2
        assert set(c.judge) >= {"performance", "innovation", "complexity", "overall"} and c.judge_rationale
        assert c.analysis and c.motivation_embedding is not None
    assert sum(1 for c in candidates if c.parent_ids) >= 1  # after the first scored design, proposals have parents
    assert memory.count_insights("paper") >= 100
