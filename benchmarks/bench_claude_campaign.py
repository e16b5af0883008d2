"""A Claude-path campaign at real size: 50 candidates through the real anthropic client and a local server.

The campaign runs as a user would run it with ``llm=anthropic``: five agent actors, the
shared USD account, the checks and the sandboxed trials at a smoke scale (20 explore
steps; verify off, it adds nothing to the agents' load). Only the network boundary is
replaced: a local Messages-API server answers each request with what the offline rules
would answer for the same context (so proposals, repairs, drift and novelty verdicts are
real designs and real decisions), and reports usage as the API would: input tokens of the
request (bytes / 4, no Claude tokenizer runs offline), the stable system prefix as cache
reads after its first use, output tokens of the answer.

It prints, per role, the number of requests and the largest request, the bound (1.5x the
largest request among the first 10 proposals, the goal of ``bench_context``), the spend
against ``campaign.max_usd``, and whether every candidate's status and reason are
consistent. The baseline of the size ratio is the same run's first 10 proposals.

    .venv/bin/python benchmarks/bench_claude_campaign.py [--candidates 50] [--max-usd 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from messages_server import MessagesServer, Step  # noqa: E402

from asiarch import Campaign  # noqa: E402
from asiarch.llm.schemas import context_of  # noqa: E402
from asiarch.memory import Memory  # noqa: E402
from asiarch.proposer import OfflineBackend  # noqa: E402

TERMINAL = {"finished", "stopped", "failed", "rejected", "promoted", "verified"}
# what a reason must say for each status (the pipeline's and the agents' wording)
REASONS = {"stopped": ("ASHA stopped it", "training QA"), "finished": ("trained",), "promoted": ("",),
           "failed": ("training failed", "crashed"), "rejected": ("", )}


class OfflineAnswers:
    """The server's side: the offline rules' answer to each request's context, with API-like usage."""

    def __init__(self) -> None:
        self.rules = OfflineBackend(seed=0)
        self.cached_prefix = False

    def __call__(self, tool: str, body: dict) -> Step:
        role = tool.removeprefix("submit_")
        answer = getattr(self.rules, f"_{role}")(context_of(body["messages"]))
        request_tokens = len(json.dumps(body).encode()) // 4
        system_tokens = sum(len(block.get("text", "").encode()) for block in body.get("system", [])) // 4
        cached = system_tokens if self.cached_prefix else 0
        self.cached_prefix = True
        return Step(tool_input=answer, input_tokens=request_tokens - cached, cache_read_tokens=cached,
                    output_tokens=max(1, len(json.dumps(answer).encode()) // 4))


def consistency(rows) -> list[str]:
    problems = []
    for c in rows:
        status = str(c.status)
        if status not in TERMINAL:
            problems.append(f"{c.name}: left in status {status}")
        elif not (c.status_reason or "").strip():
            problems.append(f"{c.name}: {status} without a reason")
        elif not any(word in c.status_reason for word in REASONS.get(status, ("",))):
            problems.append(f"{c.name}: {status} with reason {c.status_reason[:80]!r}")
        if status in ("finished", "stopped", "promoted") and c.explore.eval_loss is None:
            problems.append(f"{c.name}: {status} without an explore loss")
        if status == "rejected" and c.reached_training:
            problems.append(f"{c.name}: rejected after it reached training")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--max-usd", type=float, default=20.0)
    args = parser.parse_args()
    console = Console(width=130)
    root = Path(tempfile.mkdtemp(prefix="asiarch-bench-claude-"))
    os.environ.setdefault("ASIARCH_CACHE", str(root / "cache"))
    os.environ["ANTHROPIC_API_KEY"] = "bench-key"  # the local server takes any key
    started = time.monotonic()
    with MessagesServer(responder=OfflineAnswers()) as server:
        campaign = Campaign(overrides=[
            "llm=anthropic", f"llm.base_url={server.url}", "llm.backoff_base_s=0.01",
            f"campaign.max_candidates={args.candidates}", f"campaign.max_usd={args.max_usd}", "seeds=[deltanet]",
            "explore.anchor_seeds=[0, 1]", "verify.top_fraction=0", "verify.min_promoted=0",
            "scale.train.eval_batches=1", "scale.corpus.max_documents=80", "scale.corpus.tokenizer_vocab_size=512",
            "scale.mqar.num_train=500", "scale.mqar.num_test=100", "scale.train.eval_mqar_examples=64",
            "scale.stages.explore_steps=20", "scale.stages.verify_steps=8", "scale.train.warmup_steps=2",
            "scale.stages.reports_per_trial=4", "checks.complexity_repeats=2", "checks.complexity_base_length=256",
            f"run.output_dir={root / 'runs'}"])
        summary = campaign.run()
        requests = list(server.requests)
    (root / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))  # kept for a second look
    minutes = (time.monotonic() - started) / 60
    rows = Memory(campaign.memory_uri, read_only=True).list_candidates(campaign=campaign.name, kind="candidate")

    sizes: dict[str, list[int]] = defaultdict(list)
    for r in requests:
        sizes[r["tools"][0]["name"].removeprefix("submit_")].append(len(json.dumps(r).encode()))
    first = sizes["researcher"][:10]
    bound = 1.5 * max(first)
    table = Table(title=f"{len(rows)} proposals, {summary['trained']} trained, {len(requests)} requests "
                        f"(real client, local server; {minutes:.1f} min on this machine)", width=120)
    for header in ("role", "requests", "largest (bytes)", "est. tokens", "mean (bytes)", "largest / bound"):
        table.add_column(header, justify="right")
    for role, values in sorted(sizes.items()):
        table.add_row(role, str(len(values)), f"{max(values):,}", f"{max(values) // 4:,}",
                      f"{sum(values) / len(values):,.0f}", f"{max(values) / bound:.2f}")
    console.print(table)
    over = [(role, v) for role, values in sizes.items() for v in values if v > bound]
    console.print(f"bound: 1.5x the largest of the first 10 Researcher requests = {bound:,.0f} bytes; "
                  f"requests above it: {len(over)}" + (f" ({Counter(r for r, _ in over)})" if over else ""))
    spent = sum(c.llm_usd for c in rows)
    console.print(f"spend: ${spent:.4f} of campaign.max_usd ${args.max_usd:.2f} "
                  f"({'within' if spent <= args.max_usd else 'OVER'} the budget); the campaign's own count ${summary['usd']:.4f}")
    by_status = Counter(str(c.status) for c in rows)
    console.print("statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())))
    reasons = Counter(c.status_reason.split(":")[0][:60] for c in rows if str(c.status) == "rejected")
    console.print("rejections: " + "; ".join(f"{k} ({v})" for k, v in reasons.most_common()))
    problems = consistency(rows)
    console.print(f"status and reason consistent for every candidate: {'yes' if not problems else 'NO'}")
    for p in problems[:20]:
        console.print(f"  {p}", markup=False)


if __name__ == "__main__":
    main()
