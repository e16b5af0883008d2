"""Where the campaign's control actors run: on the driver's node, never where trials go.

On a cluster the memory writer, the pipeline, the agents and the LLM account are the
campaign's state; trials are disposable. Placing the control actors next to the driver
means losing a worker node loses trials, which continue from their checkpoints, and never
the campaign itself. The affinity is hard: Ray's soft affinity was seen to place a
zero-CPU actor on another node while the driver's had room.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


def on_this_node() -> dict[str, Any]:
    """``.options(**on_this_node())``: schedule an actor on the node of the process creating it."""
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}
