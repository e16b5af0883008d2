"""Secrets never reach the memory: text that candidate code can influence is scrubbed first.

A candidate's exception message, a check's failure reason or an agent's analysis of them
lands in the memory, and from there in the dashboard and the next LLM prompt. A hostile
candidate can put anything in that text, including the environment's API keys. So every
string the memory stores from such a source goes through ``Redactor``: the values of the
process's secret-looking environment variables and strings shaped like known key formats
are replaced by ``[redacted]``, and the text is cut to a bounded length.

This is one layer, not the wall: the sandbox keeps secrets out of the candidate's
environment in the first place (see the README's threat model).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REDACTED = "[redacted]"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|SESSION|COOKIE", re.IGNORECASE)
MIN_SECRET_LENGTH = 8  # shorter values ("1", "true") would blank ordinary text
KEY_SHAPES = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]{8,}"  # Anthropic
    r"|sk-[A-Za-z0-9]{20,}"  # OpenAI-style
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub
    r"|hf_[A-Za-z0-9]{20,}"  # Hugging Face
)


@dataclass(frozen=True)
class Redactor:
    """Replaces ``secrets`` (and key-shaped strings) in text; cuts text to ``max_chars``."""

    secrets: tuple[str, ...] = ()
    max_chars: int = 8000

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, max_chars: int = 8000) -> Redactor:
        """The values of every environment variable whose name looks secret (``*KEY*``, ``*TOKEN*``, ...)."""
        environ = os.environ if environ is None else environ
        values = {v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH}
        return cls(tuple(sorted(values, key=len, reverse=True)), max_chars)  # longest first: no partial leftovers

    def with_secrets(self, *extra: str | None) -> Redactor:
        """This redactor, also replacing ``extra`` (e.g. an API key passed in code, not by environment)."""
        added = {e for e in extra if e and len(e) >= MIN_SECRET_LENGTH} | set(self.secrets)
        return Redactor(tuple(sorted(added, key=len, reverse=True)), self.max_chars)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        value = KEY_SHAPES.sub(REDACTED, value)
        if len(value) > self.max_chars:
            cut = len(value) - self.max_chars
            value = f"{value[: self.max_chars]} ... [{cut} more characters cut]"
        return value

    def value(self, obj: Any) -> Any:
        """``obj`` with every string inside it (dict keys and values, list items) redacted."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {self.value(k): self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.value(v) for v in obj)
        return obj
