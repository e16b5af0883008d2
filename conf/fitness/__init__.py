"""Fitness functions a campaign can use: noise_aware (default) and eq2 (ASI-Arch Eq. 2)."""
