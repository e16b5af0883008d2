"""What each agent role must answer: one JSON schema per role, shared by every backend.

Agents put the facts a role needs (parents, failures, metrics, ...) in the last user
message as ``<context>{json}</context>``; an LLM reads it with the prose around it, the
offline proposer reads only the JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TEXT = {"type": "string", "minLength": 1}
_SCORE = {"type": "number", "minimum": 0, "maximum": 10}

ROLE_SCHEMAS: dict[str, dict[str, Any]] = {
    "researcher": {
        "type": "object",
        "required": ["name", "motivation", "code"],
        "properties": {"name": _TEXT, "motivation": _TEXT, "code": _TEXT},
    },
    "novelty": {
        "type": "object",
        "required": ["duplicate", "reason"],
        "properties": {"duplicate": {"type": "boolean"}, "reason": _TEXT},
    },
    "engineer": {
        "type": "object",
        "required": ["code", "explanation"],
        "properties": {"code": _TEXT, "explanation": _TEXT},
    },
    "drift": {
        "type": "object",
        "required": ["drifted", "reason"],
        "properties": {"drifted": {"type": "boolean"}, "reason": _TEXT},
    },
    "judge": {
        "type": "object",
        "required": ["performance", "innovation", "complexity", "rationale"],
        "properties": {"performance": _SCORE, "innovation": _SCORE, "complexity": _SCORE, "rationale": _TEXT},
    },
    "analyst": {
        "type": "object",
        "required": ["analysis", "insights"],
        "properties": {
            "analysis": _TEXT,
            "insights": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "required": ["design_insight", "trigger_patterns", "motifs"],
                    "properties": {
                        "design_insight": _TEXT,
                        "trigger_patterns": {"type": "array", "items": _TEXT, "minItems": 1},
                        "motifs": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
}

_CONTEXT = re.compile(r"<context>(.*?)</context>", re.DOTALL)


def with_context(text: str, context: dict[str, Any]) -> str:
    """A user message: the prose for a reader, the facts as JSON for any reader."""
    return f"{text}\n\n<context>{json.dumps(context, default=str)}</context>"


def context_of(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON context of the last user message that carries one (empty when none does)."""
    for message in reversed(messages):
        content = message.get("content")
        texts = [content] if isinstance(content, str) else [
            block.get("text", "") for block in content or [] if isinstance(block, dict)]
        for text in texts:
            match = _CONTEXT.search(text)
            if match:
                return json.loads(match.group(1))
    return {}
