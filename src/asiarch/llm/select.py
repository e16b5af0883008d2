"""Pick the LLM backend a configuration asks for: ``offline``, ``anthropic`` or ``auto``."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from asiarch.llm.protocol import LLMBackend


def backend_from_config(llm: dict[str, Any] | DictConfig | None) -> LLMBackend:
    """``auto`` is Claude when ``ANTHROPIC_API_KEY`` is set, else the offline proposer."""
    if isinstance(llm, DictConfig):
        llm = OmegaConf.to_container(llm, resolve=True)
    llm = dict(llm or {"name": "offline"})
    name = llm.get("name", "offline")
    offline = dict(llm.pop("offline", None) or {})
    if name == "auto":
        name = "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "offline"
        if name == "offline":
            llm = {"name": "offline", **offline}
    if name == "offline":
        from asiarch.proposer import OfflineBackend

        values = {k: v for k, v in llm.items() if k != "name"}
        unknown = sorted(set(values) - {"seed", "crossover_rate"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in config section 'llm' (offline takes seed, crossover_rate)")
        return OfflineBackend(**values)
    if name == "anthropic":
        from asiarch.llm.anthropic_backend import AnthropicBackend, AnthropicConfig

        config = AnthropicConfig.from_dict(llm)
        if not (config.api_key or os.environ.get("ANTHROPIC_API_KEY")):
            raise ValueError("llm=anthropic needs ANTHROPIC_API_KEY in the environment (or use llm=offline / llm=auto)")
        return AnthropicBackend(config)
    raise ValueError(f"unknown llm backend {name!r}; choose llm=auto, llm=anthropic or llm=offline")
