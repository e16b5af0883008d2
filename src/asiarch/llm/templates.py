"""Prompt templates live in ``asiarch/llm/prompts/*.md`` (package data); this renders them with ``$name`` fields."""

from __future__ import annotations

from importlib import resources
from string import Template


def render(name: str, **values: object) -> str:
    """The template ``name`` with every ``$field`` filled; a missing field is an error, not a blank."""
    try:
        text = resources.files("asiarch.llm.prompts").joinpath(f"{name}.md").read_text()
    except FileNotFoundError as err:
        raise KeyError(f"no prompt template named {name!r} in asiarch/llm/prompts") from err
    try:
        return Template(text).substitute(**{k: str(v) for k, v in values.items()})
    except KeyError as err:
        raise KeyError(f"prompt template {name!r} needs a value for {err.args[0]!r}") from err
