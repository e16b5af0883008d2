"""A campaign whose agents are Claude (needs ANTHROPIC_API_KEY; ANTHROPIC_BASE_URL for a proxy).

    ANTHROPIC_API_KEY=... .venv/bin/python examples/claude_campaign.py [hydra overrides ...]

``llm=anthropic`` forces Claude (``conf/llm/anthropic.yaml``: model, retries, concurrency,
USD budget); ``campaign.max_usd`` caps the campaign's total LLM spend. Several
Researchers work ahead so that trial slots never wait for the API.
"""

from __future__ import annotations

import os
import sys

from asiarch import Campaign


def main() -> int:
    if not os.environ.get("ANTHROPIC_API_KEY"):
        print("claude_campaign.py: set ANTHROPIC_API_KEY (or run examples/quickstart.py for the offline proposer)",
              file=sys.stderr)
        return 2
    campaign = Campaign(overrides=["llm=anthropic", "campaign.researchers=4", "campaign.max_usd=5", *sys.argv[1:]])
    summary = campaign.run()
    print(f"{campaign.name}: best fitness {summary['best_fitness']}, LLM spend ${summary['usd']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
