"""The research loop's roles. Each is a plain class (easy to test) and a Ray actor (``*Actor``).

Every role talks to an ``LLMBackend`` through the one protocol and writes to the memory
through a ``MemoryActor`` handle or a writable ``Memory`` (anything with the same methods).
Candidate code is only ever executed by ``asiarch.checks`` (its sandbox worker) and by
training tasks in separate worker processes, never by an agent.
"""

from __future__ import annotations

import ray

from asiarch.agents.roles import AgentsConfig, Analyst, Engineer, Judge, Researcher

ResearcherActor = ray.remote(num_cpus=0)(Researcher)
EngineerActor = ray.remote(num_cpus=0)(Engineer)  # its checks run in their own worker processes
JudgeActor = ray.remote(num_cpus=0)(Judge)
AnalystActor = ray.remote(num_cpus=0)(Analyst)

__all__ = ["AgentsConfig", "Analyst", "AnalystActor", "Engineer", "EngineerActor", "Judge", "JudgeActor", "Researcher", "ResearcherActor"]
