"""The cognition base: design insights distilled from papers on linear attention,
state-space models and gated recurrences, shipped as package data (``papers.jsonl``).

Each line of the file is one :class:`PaperInsight`. Retrieval embeds an entry's
``trigger_patterns`` (the symptoms in experimental results that should make a
researcher reach for the idea) and queries them with the analysis of a recent
experiment; ``motifs`` tag the entry with moves from the fixed vocabulary in
:mod:`asiarch.memory.cognition.motifs` that the offline proposer can apply.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from .motifs import MOTIF_DESCRIPTIONS, MOTIFS

__all__ = [
    "MOTIFS",
    "MOTIF_DESCRIPTIONS",
    "CognitionBaseError",
    "PaperInsight",
    "parse_insight",
    "load_cognition_base",
    "count_papers",
    "default_path",
]

_DATA_FILE = "papers.jsonl"
ARXIV_ID_RE = re.compile(r"^\d{4}\.\d{4,5}$")
MIN_YEAR = 1950

_STR_FIELDS = (
    "id",
    "source",
    "title",
    "design_insight",
    "background",
    "algorithmic_innovation",
    "implementation_guidance",
)
_LIST_FIELDS = ("authors", "trigger_patterns", "motifs")
_FIELD_ORDER = (
    "id",
    "source",
    "title",
    "authors",
    "year",
    "arxiv_id",
    "design_insight",
    "trigger_patterns",
    "background",
    "algorithmic_innovation",
    "implementation_guidance",
    "motifs",
)
REQUIRED_FIELDS: tuple[str, ...] = _FIELD_ORDER


class CognitionBaseError(ValueError):
    """A cognition-base entry (or file) is malformed; the message names file, line and field."""


@dataclass(frozen=True)
class PaperInsight:
    """One design insight from one paper."""

    id: str
    source: str
    title: str
    authors: tuple[str, ...]
    year: int
    arxiv_id: str
    design_insight: str
    trigger_patterns: tuple[str, ...]
    background: str
    algorithmic_innovation: str
    implementation_guidance: str
    motifs: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the file's field order (tuples become lists)."""
        out: dict[str, Any] = {}
        for name in _FIELD_ORDER:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def retrieval_text(self) -> str:
        """The text retrieval embeds: the trigger patterns, one per line."""
        return "\n".join(self.trigger_patterns)


def _fail(where: str, field: str | None, msg: str) -> CognitionBaseError:
    prefix = f"{where}: field {field!r}: " if field else f"{where}: "
    return CognitionBaseError(prefix + msg)


def parse_insight(obj: dict, where: str) -> PaperInsight:
    """Validate one decoded JSON object and build a :class:`PaperInsight`.

    ``where`` names the origin for error messages (e.g. ``"papers.jsonl:12"``).
    Raises :class:`CognitionBaseError` naming ``where`` and the offending field.
    """
    if not isinstance(obj, dict):
        raise _fail(where, None, f"expected a JSON object, got {type(obj).__name__}")
    for name in _FIELD_ORDER:
        if name not in obj:
            raise _fail(where, name, "missing required field")
    extra = sorted(set(obj) - set(_FIELD_ORDER))
    if extra:
        raise _fail(where, extra[0], f"unknown field (allowed: {', '.join(_FIELD_ORDER)})")

    for name in _STR_FIELDS:
        value = obj[name]
        if not isinstance(value, str) or not value.strip():
            raise _fail(where, name, "must be a non-empty string")

    for name in _LIST_FIELDS:
        value = obj[name]
        if not isinstance(value, list) or not value:
            raise _fail(where, name, "must be a non-empty list of strings")
        for item in value:
            if not isinstance(item, str) or not item.strip():
                raise _fail(where, name, f"must contain only non-empty strings, got {item!r}")

    year = obj["year"]
    max_year = _dt.date.today().year + 1
    if isinstance(year, bool) or not isinstance(year, int) or not (MIN_YEAR <= year <= max_year):
        raise _fail(where, "year", f"must be an int in [{MIN_YEAR}, {max_year}], got {year!r}")

    arxiv_id = obj["arxiv_id"]
    if not isinstance(arxiv_id, str) or not ARXIV_ID_RE.match(arxiv_id):
        raise _fail(where, "arxiv_id", f"must look like '2412.06464', got {arxiv_id!r}")

    motifs = obj["motifs"]
    unknown = [m for m in motifs if m not in MOTIFS]
    if unknown:
        raise _fail(where, "motifs", f"unknown motif(s) {unknown}; allowed: {sorted(MOTIFS)}")
    if len(motifs) > 4:
        raise _fail(where, "motifs", f"at most 4 motifs, got {len(motifs)}")
    if len(set(motifs)) != len(motifs):
        raise _fail(where, "motifs", "duplicate motif")

    return PaperInsight(
        id=obj["id"].strip(),
        source=obj["source"].strip(),
        title=obj["title"].strip(),
        authors=tuple(a.strip() for a in obj["authors"]),
        year=year,
        arxiv_id=arxiv_id,
        design_insight=obj["design_insight"].strip(),
        trigger_patterns=tuple(t.strip() for t in obj["trigger_patterns"]),
        background=obj["background"].strip(),
        algorithmic_innovation=obj["algorithmic_innovation"].strip(),
        implementation_guidance=obj["implementation_guidance"].strip(),
        motifs=tuple(motifs),
    )


def default_path() -> Path:
    """Path of the shipped ``papers.jsonl``."""
    return Path(str(resources.files("asiarch.memory.cognition").joinpath(_DATA_FILE)))


def load_cognition_base(path: str | Path | None = None) -> list[PaperInsight]:
    """Load and validate a cognition-base JSONL file (default: the shipped one).

    Blank lines are skipped. Besides per-entry validation (see :func:`parse_insight`),
    ids must be unique and no two entries may share the same ``design_insight``.
    """
    if path is None:
        text = resources.files("asiarch.memory.cognition").joinpath(_DATA_FILE).read_text(encoding="utf-8")
        name = str(default_path())
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise CognitionBaseError(f"{p}: cannot read cognition base: {e}") from e
        name = str(p)

    entries: list[PaperInsight] = []
    seen_ids: dict[str, int] = {}
    seen_insights: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(where, "<json>", f"not valid JSON ({e.msg} at column {e.colno})") from e
        entry = parse_insight(obj, where)
        if entry.id in seen_ids:
            raise _fail(where, "id", f"duplicate id {entry.id!r} (first on line {seen_ids[entry.id]})")
        seen_ids[entry.id] = lineno
        key = " ".join(entry.design_insight.split()).lower()
        if key in seen_insights:
            raise _fail(where, "design_insight", f"identical to the design_insight on line {seen_insights[key]}")
        seen_insights[key] = lineno
        entries.append(entry)
    return entries


def count_papers(entries: Iterable[PaperInsight]) -> int:
    """Number of distinct papers (distinct arXiv ids) among ``entries``."""
    return len({e.arxiv_id for e in entries})


# keep dataclass field list and the file schema in sync
assert tuple(f.name for f in fields(PaperInsight)) == _FIELD_ORDER
