"""A whole campaign from Python: offline agents, ASHA explore, verify on 3 training seeds, a results table.

    .venv/bin/python examples/quickstart.py [hydra overrides ...]
    .venv/bin/python examples/quickstart.py campaign.max_candidates=4 seeds=[deltanet,mamba2]

Results land in ./runs/<campaign>/ (memory, Tune experiments, campaign.json, results/);
`asiarch status`, `asiarch top` and `asiarch report` in the same directory find it.
"""

from __future__ import annotations

import sys

from asiarch import Campaign


def main() -> None:
    campaign = Campaign(overrides=["llm=offline", *sys.argv[1:]])
    summary = campaign.run()
    print(f"{campaign.name}: {summary['trained']} candidates trained, {summary['verified']} verified, "
          f"{summary['breakthroughs']} breakthrough(s), best fitness {summary['best_fitness']}")
    for c in campaign.top(3):
        print(f"  {c.id}  {c.name:<32} fitness {c.fitness:.3f}  explore loss {c.explore.eval_loss:.3f}")


if __name__ == "__main__":
    main()
