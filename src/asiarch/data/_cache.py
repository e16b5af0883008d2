"""Small helpers shared by the corpus and tokenizer caches.

Kept apart from ``corpus.py`` and ``tokenizer.py`` so that neither has to import the other
just to agree on where files live, how a corpus is fingerprinted and which documents are
held out.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE_ENV = "ASIARCH_CACHE"


def default_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir`` if given, else ``$ASIARCH_CACHE``, else ``~/.cache/asiarch``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "asiarch"


def stable_hash(*parts: Any) -> str:
    """A short hex digest of ``parts`` that is stable across processes (unlike ``hash``)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(parts, sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()


def source_fingerprint(source: Any) -> str:
    """A cache key for a text source: its ``fingerprint()`` if it has one, else a content hash.

    Hashing every document is always correct but reads the whole corpus; sources backed by
    files define ``fingerprint()`` from file names, sizes and mtimes instead.
    """
    fp = getattr(source, "fingerprint", None)
    if callable(fp):
        return stable_hash(source.name, fp())
    return stable_hash(source.name, [stable_hash(doc) for doc in source.iter_documents()])


def is_validation_doc(index: int, seed: int, val_fraction: float) -> bool:
    """Whether document ``index`` is held out; a pure function of (index, seed, fraction).

    Hashing the index (rather than taking every k-th document) keeps the split spread over
    the whole corpus and independent of how many documents follow.
    """
    return _unit_hash(index, seed) < val_fraction


def split_indices(num_docs: int, seed: int, val_fraction: float) -> list[bool]:
    """Per-document validation flags, guaranteeing both splits are non-empty when possible.

    With only a handful of documents the hash may select none (or all) of them; then the
    document with the smallest (largest) hash is moved so that both splits exist.
    """
    flags = [is_validation_doc(i, seed, val_fraction) for i in range(num_docs)]
    if num_docs >= 2:
        if not any(flags):
            flags[min(range(num_docs), key=lambda i: _unit_hash(i, seed))] = True
        if all(flags):
            flags[max(range(num_docs), key=lambda i: _unit_hash(i, seed))] = False
    return flags


def _unit_hash(index: int, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file in ``path``'s directory, then rename it over ``path``.

    Readers (other Ray workers included) therefore see either the old file or the complete
    new one, never a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
