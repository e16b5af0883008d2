"""Campaigns: agents proposing ahead of Ray Tune's explore (ASHA) and verify (training seeds, or PBT) stages.

``Campaign`` is imported on first use, so that readers of a campaign directory (the
dashboard, the report) can use ``asiarch.campaign.state`` without loading torch and Tune.
"""

from asiarch.campaign.fitness import Fitness, asi_arch_fitness, relative_sigmoid

__all__ = ["Campaign", "Fitness", "asi_arch_fitness", "relative_sigmoid"]


def __getattr__(name: str):
    if name == "Campaign":
        from asiarch.campaign.campaign import Campaign

        return Campaign
    raise AttributeError(f"module 'asiarch.campaign' has no attribute {name!r}")
