"""All writes through one MemoryActor: concurrent writers lose nothing and duplicate nothing."""

from __future__ import annotations

from collections import Counter

import pytest
import ray

from asiarch.memory import Candidate, Memory, MemoryActor, StageMetrics

WRITERS, WRITES = 4, 30
SHARED_KEYS = 10
USAGE_ADDS = len(range(0, WRITES, 8))  # one usage increment every 8th write


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
class Writer:
    """A stand-in for an agent: fires its writes at the memory actor without waiting in between."""

    def __init__(self, memory, index: int):
        self.memory, self.index = memory, index

    def run(self) -> int:
        refs = []
        for j in range(WRITES):
            if j % 2 == 0:  # every writer upserts the same new keys, the case that duplicates rows in raw LanceDB
                cid, fitness = f"shared-{(j // 2) % SHARED_KEYS}", float(self.index)
            else:
                cid, fitness = f"writer{self.index}-{j}", float(j)
            candidate = Candidate(id=cid, campaign="c", name=cid, explore=StageMetrics(fitness=fitness))
            refs.append(self.memory.upsert_candidates.remote(candidate))
            if j % 8 == 0:
                refs.append(self.memory.add_usage.remote("counter", tokens_trained=1, device_seconds=0.5))
        ray.get(refs)
        return len(refs)


def test_concurrent_writers_through_the_actor(local_ray, tmp_path):
    uri = str(tmp_path / "mem")
    memory = MemoryActor.remote(uri, optimize_every=100)
    ray.get(memory.upsert_candidates.remote(Candidate(id="counter", campaign="c", name="counter")))
    writers = [Writer.remote(memory, i) for i in range(WRITERS)]
    sent = sum(ray.get([w.run.remote() for w in writers]))
    assert sent == WRITERS * (WRITES + USAGE_ADDS)

    reader = Memory(uri, read_only=True)  # readers open the tables directly
    ids = reader.candidates.to_arrow()["id"].to_pylist()
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert duplicates == []
    expected = {"counter"} | {f"shared-{k}" for k in range(SHARED_KEYS)} | {
        f"writer{i}-{j}" for i in range(WRITERS) for j in range(1, WRITES, 2)
    }
    assert set(ids) == expected and len(ids) == len(expected)
    counter = reader.get_candidate("counter")
    assert counter.tokens_trained == WRITERS * USAGE_ADDS  # read-modify-write increments: none lost
    assert counter.device_seconds == pytest.approx(0.5 * WRITERS * USAGE_ADDS)
    assert ray.get(memory.count_candidates.remote()) == len(expected)



def test_agents_read_through_the_writer_and_never_load_lancedb(local_ray, tmp_path):
    """An agent actor reads through the campaign's writer: its queries are embedded by the writer's model (the
    vectors the writer stores), it sees the writer's latest write at once, and its process never imports
    LanceDB or the embedding model."""
    import sys

    from asiarch.agents import ResearcherActor
    from asiarch.agents.roles import MemoryAccess
    from asiarch.memory import Insight
    from asiarch.proposer import OfflineBackend

    uri = str(tmp_path / "memory")
    writer = MemoryActor.remote(uri)
    texts = ["gate the delta rule with a data-dependent decay", "a wider causal convolution on the keys"]
    ray.get(writer.upsert_insights.remote([Insight(id=f"i{n}", kind="paper", source="test", design_insight=t)
                                           for n, t in enumerate(texts)]))
    agent = ResearcherActor.remote(backend=OfflineBackend(seed=0), uri=uri, writer=writer, campaign="c")

    def search(role, query: str) -> list[str]:
        return [i.id for i, _ in role.memory.reader.search_insights(query, k=2, mode="vector")]

    assert ray.get(agent.__ray_call__.remote(search, "widen the convolution over keys"))[0] == "i1"
    assert ray.get(agent.__ray_call__.remote(search, "a decay that depends on the data"))[0] == "i0"
    ray.get(writer.upsert_candidates.remote(Candidate(id="new", campaign="c", name="new")))
    seen = ray.get(agent.__ray_call__.remote(lambda role: role.memory.reader.get_candidate("new")))
    assert seen is not None and seen.name == "new"
    loaded = ray.get(agent.__ray_call__.remote(
        lambda role: [m for m in ("lancedb", "asiarch.memory.store", "asiarch.memory.minilm") if m in sys.modules]))
    assert loaded == []
    with pytest.raises(ValueError, match="give the embedder to the MemoryActor"):
        MemoryAccess(uri, writer, embedder=object())


@ray.remote(num_cpus=0)
class TrialProcess:
    """A fresh worker process, as Tune's trial actor is one."""

    def already_trained(self, memory, design: str) -> tuple[dict | None, list[str]]:
        import sys

        from asiarch.campaign.trainable import _already_trained

        config = {"kind": "candidate", "stage": "explore", "design": design}
        return _already_trained(config, memory), [m for m in ("lancedb", "asiarch.memory.store") if m in sys.modules]


def test_a_trial_finds_a_candidate_trained_before_a_restart_through_the_writer(local_ray, tmp_path):
    """A restarted driver's explore trial reports a candidate the memory already holds as trained, instead of
    training it again; the lookup goes through the writer, so the trial process never loads LanceDB."""
    writer = MemoryActor.remote(str(tmp_path / "memory"))
    ray.get(writer.upsert_candidates.remote([
        Candidate(id="done", campaign="c", name="done", status="finished", tokens_trained=4096,
                  explore=StageMetrics(eval_loss=4.25, mqar_accuracy=0.5)),
        Candidate(id="queued", campaign="c", name="queued", explore=StageMetrics(eval_loss=None)),
    ]))
    trial = TrialProcess.remote()
    done, loaded = ray.get(trial.already_trained.remote(writer, "done"))
    assert done == {"eval_loss": 4.25, "mqar_accuracy": 0.5, "tokens_seen": 4096, "already_trained": True}
    assert ray.get(trial.already_trained.remote(writer, "queued"))[0] is None  # not trained yet: trains
    assert ray.get(trial.already_trained.remote(writer, "unknown"))[0] is None
    assert loaded == []
