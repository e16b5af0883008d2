"""Memory speed at campaign scale: inserts, top-k by fitness, nearest neighbours, insight retrieval.

Each measurement is printed beside a plain baseline measured in the same run on the same
data (raw LanceDB appends; numpy scans over in-memory arrays), so the ratio says what the
memory's validation, upsert semantics and LanceDB queries cost. Goal: neighbour and top-k
queries <= 10 ms p50 at 100k candidates.

    .venv/bin/python benchmarks/bench_memory.py [--rows 100000] [--queries 50]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
from rich.table import Table

from asiarch.console import output_console  # noqa: E402
from asiarch.memory import Candidate, Memory, MiniLMEmbedder, StageMetrics
from asiarch.memory.schema import candidate_to_row, candidates_schema


def latencies_ms(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    fn(0)  # warm-up: caches, index loading
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def clustered_unit_vectors(n: int, dim: int, rng: np.random.Generator, clusters: int = 500) -> np.ndarray:
    """Unit vectors around ``clusters`` themes (cosine ~0.8 to their centre).

    Motivations in a campaign are variations on a few themes, so their embeddings cluster;
    uniformly random vectors would be an unrealistically hard case for any ANN index.
    """
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)) * (0.75 / np.sqrt(dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, dim: int, seed: int = 0) -> tuple[list[Candidate], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = clustered_unit_vectors(n, dim, rng)
    fitness = rng.random(n)
    statuses = ("finished", "stopped", "failed", "promoted")
    candidates = [
        Candidate(id=f"cand-{i:06d}", campaign=f"c{i % 4}", name=f"design-{i}", code=f"# design {i}\n",
                  motivation="", parent_ids=[f"cand-{rng.integers(0, i):06d}"] if i else [], generation=i // 1000,
                  status=statuses[i % 4], reached_training=True, explore=StageMetrics(fitness=float(fitness[i])),
                  motivation_embedding=vectors[i].tolist())
        for i in range(n)
    ]
    return candidates, vectors, fitness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    console = output_console()
    workdir = Path(tempfile.mkdtemp(prefix="asiarch-bench-memory-"))
    rows: list[tuple[str, str, str, str]] = []
    try:
        with console.status(f"generating {args.rows:,} synthetic candidates"):
            candidates, vectors, fitness = synthetic(args.rows, 384)

        # inserts: Memory.upsert_candidates (validate + merge on id) vs raw LanceDB appends
        memory = Memory(workdir / "memory", optimize_every=0, ann_min_rows=0)  # the index is built below, timed
        start = time.perf_counter()
        for lo in range(0, args.rows, args.batch):
            memory.upsert_candidates(candidates[lo : lo + args.batch])
        memory.optimize()
        ours = args.rows / (time.perf_counter() - start)
        import lancedb

        raw = lancedb.connect(workdir / "raw").create_table("c", schema=candidates_schema(384))
        start = time.perf_counter()
        for lo in range(0, args.rows, args.batch):
            raw.add(pa.Table.from_pylist([candidate_to_row(c) for c in candidates[lo : lo + args.batch]], schema=raw.schema))
        baseline = args.rows / (time.perf_counter() - start)
        rows.append(("insert (rows/s)", f"{ours:,.0f}", f"{baseline:,.0f} (raw LanceDB add)", f"{ours / baseline:.2f}x"))

        # top-k by fitness, filtered by campaign
        order = np.argsort(-fitness)
        campaigns = np.array([i % 4 for i in range(args.rows)])
        p50, p95 = latencies_ms(lambda i: memory.top_k(10, campaign=f"c{i % 4}"), args.queries)
        b50, b95 = latencies_ms(lambda i: order[campaigns[order] == i % 4][:10], args.queries)
        rows.append(("top-10 by fitness (ms p50/p95)", f"{p50:.1f} / {p95:.1f}", f"{b50:.1f} / {b95:.1f} (numpy)", f"{p50 / b50:.1f}x"))

        # nearest neighbours of a motivation vector
        queries = clustered_unit_vectors(args.queries + 1, 384, np.random.default_rng(0))  # same themes, new points
        brute = lambda i: np.argpartition(-(vectors @ queries[i]), 5)[:5]  # noqa: E731
        b50, b95 = latencies_ms(brute, args.queries)
        p50, p95 = latencies_ms(lambda i: memory.neighbours(vector=queries[i], k=5), args.queries)
        rows.append(("neighbours k=5, flat (ms p50/p95)", f"{p50:.1f} / {p95:.1f}", f"{b50:.1f} / {b95:.1f} (numpy)", f"{p50 / b50:.1f}x"))
        with console.status("building the IVF-HNSW-SQ index"):
            start = time.perf_counter()
            memory.build_ann_index()
            build = time.perf_counter() - start
        p50, p95 = latencies_ms(lambda i: memory.neighbours(vector=queries[i], k=5), args.queries)
        hits = np.mean([
            len({c.id for c, _ in memory.neighbours(vector=queries[i], k=5)} & {f"cand-{j:06d}" for j in brute(i)}) / 5
            for i in range(args.queries)
        ])
        rows.append((f"neighbours k=5, IVF-HNSW-SQ (built in {build:.0f} s; recall@5 {hits:.2f})",
                     f"{p50:.1f} / {p95:.1f}", f"{b50:.1f} / {b95:.1f} (numpy)", f"{p50 / b50:.1f}x"))

        # insight retrieval over the cognition base
        embedder = MiniLMEmbedder()
        memory = Memory(workdir / "insights", embedder=embedder)
        memory.load_cognition_base()
        texts = ["recall on MQAR drops as the number of key-value pairs grows",
                 "loss spikes when keys are not normalised", "the model forgets early context at long lengths",
                 "training throughput is low at long sequence lengths"]
        insight_vectors = np.asarray(memory.insights.to_arrow()["embedding"].to_pylist(), dtype=np.float32)
        query_vectors = embedder.embed(texts)
        b50, b95 = latencies_ms(lambda i: np.argsort(-(insight_vectors @ query_vectors[i % 4]))[:5], args.queries)
        embed50, _ = latencies_ms(lambda i: embedder.embed([texts[i % 4]]), args.queries)
        for mode in ("vector", "fts", "hybrid"):
            p50, p95 = latencies_ms(lambda i: memory.search_insights(texts[i % 4], k=5, mode=mode), args.queries)
            rows.append((f"insights k=5, {mode} ({memory.count_insights()} entries; ms p50/p95)",
                         f"{p50:.1f} / {p95:.1f}", f"{b50:.2f} / {b95:.2f} (numpy, query pre-embedded)",
                         f"{p50 / b50:.0f}x"))
        rows.append(("  of which: embedding one query (ms p50)", f"{embed50:.1f}", "-", "-"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    table = Table(title=f"asiarch memory at {args.rows:,} candidates ({args.queries} queries each)")
    for header in ("operation", "memory", "baseline", "ratio"):
        table.add_column(header, justify="left" if header == "operation" else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    random.seed(0)
    main()
