"""The shipped cognition base (paper insights) and its loader's validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asiarch.memory.cognition import (
    MOTIF_DESCRIPTIONS,
    MOTIFS,
    CognitionBaseError,
    PaperInsight,
    count_papers,
    load_cognition_base,
    parse_insight,
)


@pytest.fixture(scope="module")
def base() -> list[PaperInsight]:
    return load_cognition_base()


def _good(i: int = 0) -> dict:
    return {
        "id": f"test-paper-2412.06464-insight-{i}",
        "source": "paper",
        "title": "A test paper",
        "authors": ["A. Author", "et al."],
        "year": 2024,
        "arxiv_id": "2412.06464",
        "design_insight": f"Insight number {i}.",
        "trigger_patterns": ["poor recall on MQAR", "loss spikes at long context"],
        "background": "Background.",
        "algorithmic_innovation": "Innovation.",
        "implementation_guidance": "Guidance.",
        "motifs": ["delta_rule", "beta_param"],
    }


def _write(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "base.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


# ---------------------------------------------------------------- shipped data


def test_shipped_base_size(base):
    assert len(base) >= 100
    assert count_papers(base) >= 40


def test_every_motif_is_reachable(base):
    used = {m for e in base for m in e.motifs}
    assert used <= MOTIFS
    assert MOTIFS - used == set(), f"motifs no entry uses: {sorted(MOTIFS - used)}"


def test_motif_vocabulary_has_descriptions():
    assert set(MOTIF_DESCRIPTIONS) == MOTIFS
    assert all(isinstance(d, str) and d.strip() for d in MOTIF_DESCRIPTIONS.values())
    assert len(MOTIFS) == 25


def test_entries_well_formed(base):
    ids = [e.id for e in base]
    assert len(ids) == len(set(ids))
    for e in base:
        assert e.source == "paper"
        for name in ("id", "title", "design_insight", "background", "algorithmic_innovation", "implementation_guidance"):
            assert getattr(e, name).strip(), (e.id, name)
        assert e.authors and all(a.strip() for a in e.authors), e.id
        assert 2 <= len(e.trigger_patterns) <= 4, e.id
        assert all(t.strip() for t in e.trigger_patterns), e.id
        assert 1 <= len(e.motifs) <= 4, e.id
        assert isinstance(e.year, int) and 1990 <= e.year <= 2026, e.id
        assert e.arxiv_id in e.id, e.id
        assert isinstance(e.authors, tuple) and isinstance(e.trigger_patterns, tuple) and isinstance(e.motifs, tuple)


def test_papers_have_consistent_metadata(base):
    by_paper: dict[str, set] = {}
    for e in base:
        by_paper.setdefault(e.arxiv_id, set()).add((e.title, e.authors, e.year))
    inconsistent = {k: v for k, v in by_paper.items() if len(v) != 1}
    assert not inconsistent


def test_explicit_path_equals_default(base):
    from asiarch.memory.cognition import default_path

    assert load_cognition_base(default_path()) == base


# ---------------------------------------------------------------- round trip


def test_parse_insight_round_trip(base):
    obj = _good()
    entry = parse_insight(obj, "here")
    assert entry.to_dict() == obj
    assert parse_insight(entry.to_dict(), "again") == entry
    for e in base[:10]:
        assert parse_insight(json.loads(json.dumps(e.to_dict())), "x") == e


def test_good_file_loads(tmp_path):
    p = _write(tmp_path, [json.dumps(_good(0)), "", json.dumps(_good(1))])
    entries = load_cognition_base(p)
    assert [e.id for e in entries] == [_good(0)["id"], _good(1)["id"]]
    assert count_papers(entries) == 1


# ---------------------------------------------------------------- errors


def _assert_error(tmp_path, lines, line_no: int, field: str):
    p = _write(tmp_path, lines)
    with pytest.raises(CognitionBaseError) as info:
        load_cognition_base(p)
    msg = str(info.value)
    assert f"{p}:{line_no}" in msg, msg
    assert field in msg, msg
    assert isinstance(info.value, ValueError)


def test_duplicate_id(tmp_path):
    dup = _good(1)
    dup["id"] = _good(0)["id"]
    _assert_error(tmp_path, [json.dumps(_good(0)), json.dumps(dup)], 2, "'id'")


def test_duplicate_design_insight(tmp_path):
    dup = _good(1)
    dup["design_insight"] = _good(0)["design_insight"]
    _assert_error(tmp_path, [json.dumps(_good(0)), json.dumps(dup)], 2, "'design_insight'")


def test_unknown_motif(tmp_path):
    bad = _good(2)
    bad["motifs"] = ["delta_rule", "quantum_attention"]
    _assert_error(tmp_path, [json.dumps(_good(0)), json.dumps(_good(1)), json.dumps(bad)], 3, "'motifs'")


@pytest.mark.parametrize("arxiv_id", ["2412.064", "arXiv:2412.06464", "2412.06464v2", "24120.6464", "", 2412.06464])
def test_bad_arxiv_id(tmp_path, arxiv_id):
    bad = _good(1)
    bad["arxiv_id"] = arxiv_id
    _assert_error(tmp_path, [json.dumps(_good(0)), json.dumps(bad)], 2, "'arxiv_id'")


@pytest.mark.parametrize("field", ["title", "trigger_patterns", "motifs", "year", "implementation_guidance"])
def test_missing_field(tmp_path, field):
    bad = _good(1)
    del bad[field]
    _assert_error(tmp_path, [json.dumps(_good(0)), json.dumps(bad)], 2, repr(field))


@pytest.mark.parametrize(
    "field,value",
    [("title", ""), ("authors", []), ("authors", "Alice"), ("trigger_patterns", ["ok", ""]), ("year", 1800), ("year", "2024"), ("motifs", [])],
)
def test_empty_or_wrong_type(tmp_path, field, value):
    bad = _good(1)
    bad[field] = value
    _assert_error(tmp_path, [json.dumps(_good(0)), json.dumps(bad)], 2, repr(field))


def test_unknown_field(tmp_path):
    bad = _good(1)
    bad["notes"] = "x"
    _assert_error(tmp_path, [json.dumps(bad)], 1, "'notes'")


def test_non_json_line(tmp_path):
    _assert_error(tmp_path, [json.dumps(_good(0)), '{"id": "broken", ', json.dumps(_good(1))], 2, "<json>")


def test_non_object_line(tmp_path):
    _assert_error(tmp_path, ["[1, 2, 3]"], 1, "JSON object")


def test_missing_file(tmp_path):
    with pytest.raises(CognitionBaseError, match="cannot read"):
        load_cognition_base(tmp_path / "nope.jsonl")
