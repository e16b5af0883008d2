"""How large a Researcher request gets as a campaign grows: 10, 100 and 1,000 stored candidates.

Each size is a real LanceDB memory filled with candidates whose code is rendered by the
offline proposer (the size real designs have) and whose motivations, statuses and explore
losses vary; the Researcher then proposes through the real anthropic client against a local
Messages-API server, which records every request body. The baseline is the request at the
smallest size, measured in the same run. Tokens are estimated as bytes / 4 (no Claude
tokenizer runs offline). Embeddings are a hashed bag of words, so the run needs no model.
Goal: the largest request at 1,000 candidates within 1.5x of the largest at 10.

    .venv/bin/python benchmarks/bench_context.py [--sizes 10 100 1000] [--proposals 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from messages_server import MessagesServer, Step  # noqa: E402

from asiarch.agents import Researcher  # noqa: E402
from asiarch.llm import AnthropicBackend, AnthropicConfig  # noqa: E402
from asiarch.memory import Candidate, FunctionEmbedder, Memory, StageMetrics  # noqa: E402
from asiarch.proposer import mutate, name_for, render, seed_genome  # noqa: E402

STATUSES = ("finished", "stopped", "failed", "rejected", "promoted")


def hashed_words(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
    return out


def fill(memory: Memory, n: int, rng: random.Random) -> None:
    genome, rows = seed_genome("deltanet"), []
    for i in range(n):
        genome = mutate(genome, rng)
        status = rng.choice(STATUSES)
        loss = round(rng.uniform(3.3, 4.2), 4) if status != "rejected" else None
        rows.append(Candidate(
            id=f"c{i:05d}", campaign="bench", name=f"{name_for(genome)}-{i}", code=render(genome),
            motivation=(f"Design {i}: from its parent, change the decay and the gate so associative recall improves. "
                        + "It keeps the chunked delta rule and the short convolution. " * rng.randint(1, 4)),
            status=status, explore=StageMetrics(eval_loss=loss, fitness=None if loss is None else 4.5 - loss)))
    for first in range(0, n, 200):
        memory.upsert_candidates(rows[first : first + 200])


def proposal(tool: str, body: dict) -> Step:
    if tool == "submit_researcher":
        code = render(mutate(seed_genome("gated_deltanet"), random.Random(len(json.dumps(body)))))
        return Step(tool_input={"name": "bench-proposal", "motivation": "a new decay schedule", "code": code})
    return Step(tool_input={"duplicate": False, "reason": "new"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--proposals", type=int, default=3, help="proposals per size (the largest request counts)")
    args = parser.parse_args()
    console = Console(width=120)
    work = Path(tempfile.mkdtemp(prefix="asiarch-bench-context-"))
    rows = []
    with MessagesServer(responder=proposal) as server:
        backend = AnthropicBackend(AnthropicConfig(api_key="bench", base_url=server.url, backoff_base_s=0.01))
        for n in args.sizes:
            memory = Memory(str(work / f"m{n}"), embedder=FunctionEmbedder(hashed_words, dim=64))
            with console.status(f"{n} stored candidates"):
                fill(memory, n, random.Random(n))
                researcher = Researcher(backend, str(work / f"m{n}"), memory, "bench")
                server.requests.clear()
                for _ in range(args.proposals):
                    researcher.propose()
                sizes = [len(json.dumps(r).encode()) for r in server.requests if r["tools"][0]["name"] == "submit_researcher"]
            rows.append((n, max(sizes), sum(sizes) / len(sizes)))
    base = rows[0][1]
    table = Table(title="Researcher request size against stored candidates (real client, local server)", width=110)
    for header in ("stored candidates", "largest request (bytes)", "est. tokens", "mean (bytes)", f"x at {rows[0][0]}"):
        table.add_column(header, justify="right")
    for n, largest, mean in rows:
        table.add_row(f"{n:,}", f"{largest:,}", f"{largest // 4:,}", f"{mean:,.0f}", f"{largest / base:.2f}")
    console.print(table)
    console.print(f"goal: the largest at {rows[-1][0]:,} within 1.5x of the largest at {rows[0][0]}: "
                  f"{'met' if rows[-1][1] <= 1.5 * base else 'missed'} ({rows[-1][1] / base:.2f}x)")


if __name__ == "__main__":
    main()
