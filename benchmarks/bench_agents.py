"""Agent throughput and cost: validated candidates per minute, LLM usage per validated candidate.

Offline: the symbolic proposer's Researcher + Engineer (checks and repairs) for N candidates.
Claude path: the same roles through the real anthropic client against a local Messages-API
server whose replies carry token counts of realistic size (researcher ~7k in / 2k out,
engineer ~5k in / 2k out, a quarter of proposals needing one repair, prompt cache hits on
the system prompt), so calls, tokens and USD per validated candidate are the real
accounting of the backend. The baseline is the offline proposer measured in the same run.

    .venv/bin/python benchmarks/bench_agents.py [--candidates 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from messages_server import MessagesServer, Step  # noqa: E402

from asiarch.console import output_console  # noqa: E402
from asiarch.agents import Engineer, Researcher  # noqa: E402
from asiarch.llm import AnthropicBackend, AnthropicConfig, Usage  # noqa: E402
from asiarch.proposer import OfflineBackend  # noqa: E402
from asiarch.memory import Memory  # noqa: E402

CHECKS = {"check_timeout": 60}


def run(backend, uri: str, n: int, novelty_threshold: float = 0.9) -> dict:
    memory = Memory(uri)
    researcher, engineer = Researcher(backend, uri, memory, "bench"), Engineer(backend, uri, memory, "bench")
    start, validated, repaired, needed_repair, usage = time.perf_counter(), 0, 0, 0, Usage()
    for _ in range(n):
        c = engineer.validate(researcher.propose(novelty_threshold=novelty_threshold).id, **CHECKS)
        validated += c.status == "validated"
        needed_repair += bool(c.repairs)
        repaired += bool(c.repairs) and c.status == "validated"
    minutes = (time.perf_counter() - start) / 60
    rows = memory.list_candidates(campaign="bench")
    usage = Usage(input_tokens=sum(c.llm_input_tokens for c in rows), output_tokens=sum(c.llm_output_tokens for c in rows),
                  usd=sum(c.llm_usd for c in rows))
    return {"validated": validated, "per_minute": validated / minutes, "repair_rate": repaired / max(1, needed_repair),
            "needed_repair": needed_repair, "usage": usage}


def scripted_claude_steps(n: int) -> list[Step]:
    """Replies of the size Claude sends; every fourth proposal breaks causality and needs one repair."""
    from asiarch.proposer import mutate, render, seed_genome
    import random

    rng, steps, genome = random.Random(0), [], seed_genome("deltanet")
    for i in range(n):
        genome = mutate(genome, rng)
        code = render(genome)
        broken = i % 4 == 3
        proposal = code.replace("return self.o_proj(", "o = o + o.mean(1, keepdim=True)\n        return self.o_proj(", 1) if broken else code
        steps.append(Step(tool_input={"name": f"design-{i}", "motivation": f"variation {i} of the delta rule", "code": proposal},
                          input_tokens=7000, output_tokens=2000, cache_read_tokens=1500))
        if broken:
            steps.append(Step(tool_input={"code": code, "explanation": "removed the global mean"},
                              input_tokens=5000, output_tokens=2000, cache_read_tokens=1500))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=12)
    args = parser.parse_args()
    console = output_console()
    work = Path(tempfile.mkdtemp(prefix="asiarch-bench-agents-"))
    with console.status("offline proposer"):
        offline = run(OfflineBackend(seed=0), str(work / "offline"), args.candidates)
    with MessagesServer() as server, console.status("Claude path against the local server"):
        server.script(*scripted_claude_steps(args.candidates))
        claude = run(AnthropicBackend(AnthropicConfig(api_key="bench", base_url=server.url, backoff_base_s=0.01)),
                     str(work / "claude"), args.candidates, novelty_threshold=1.01)  # the script holds no novelty verdicts
        calls = len(server.requests)

    table = Table(title=f"agents: {args.candidates} proposals each (Researcher + Engineer with checks)")
    for header in ("backend", "validated", "validated / min", "vs offline", "repair success",
                   "LLM calls / validated", "tokens in+out / validated", "USD / validated"):
        table.add_column(header, justify="left" if header == "backend" else "right")
    for name, result, n_calls in (("offline symbolic", offline, 0), ("Claude (local server)", claude, calls)):
        v = max(1, result["validated"])
        u = result["usage"]
        table.add_row(name, f"{result['validated']}/{args.candidates}", f"{result['per_minute']:.1f}",
                      f"{result['per_minute'] / offline['per_minute']:.2f}x",
                      f"{result['repair_rate']:.0%} of {result['needed_repair']}", f"{n_calls / v:.2f}",
                      f"{(u.input_tokens + u.output_tokens) / v:,.0f}", f"${u.usd / v:.4f}")
    console.print(table)


if __name__ == "__main__":
    main()
