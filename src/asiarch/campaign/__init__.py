"""Campaigns: agents proposing ahead of Ray Tune's explore (ASHA) and verify (PBT) stages."""

from asiarch.campaign.campaign import Campaign
from asiarch.campaign.fitness import Fitness, asi_arch_fitness, relative_sigmoid

__all__ = ["Campaign", "Fitness", "asi_arch_fitness", "relative_sigmoid"]
