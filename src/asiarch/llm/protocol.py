"""The one call every agent makes: messages + a JSON schema in, a validated object + usage out.

Backends (Claude through the anthropic SDK, the offline proposer) implement ``LLMBackend``.
A result is either valid against the schema or an exception says why; agents never see a
half-parsed reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import jsonschema


class LLMError(RuntimeError):
    """The backend could not produce an answer (after its retries)."""


class BudgetExceeded(LLMError):
    """The USD budget is spent: no new requests; the campaign should wind down cleanly."""


class MalformedOutput(LLMError):
    """The reply did not match the schema, even after one repair request."""


@dataclass
class Usage:
    """What calls cost. Adds up with ``+``."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    usd: float = 0.0
    latency_s: float = 0.0
    retries: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass
class LLMResult:
    data: dict[str, Any]
    usage: Usage
    model: str = ""
    repaired: bool = False  # the first reply was malformed and the repair request fixed it
    notes: list[str] = field(default_factory=list)


class LLMBackend(Protocol):
    name: str

    def complete(self, role: str, system: str, messages: list[dict[str, Any]], schema: dict[str, Any]) -> LLMResult:
        """Answer as ``role`` with an object valid against ``schema`` (a JSON Schema of type object)."""
        ...


def schema_errors(data: Any, schema: dict[str, Any]) -> list[str]:
    """Readable validation errors of ``data`` against ``schema`` (empty when valid)."""
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    ]
