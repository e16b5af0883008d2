"""Language-modelling text: pluggable sources, a cached tokenised corpus, random LM batches.

A *source* yields documents (strings). ``TokenCorpus`` holds out a fraction of documents for
validation, trains a byte-level BPE tokenizer on the rest (see ``tokenizer.py``), tokenises
both splits into flat token streams (documents joined by ``<|endoftext|>``) and caches them
as ``.npy`` files keyed by a fingerprint of the source, so a changed corpus is rebuilt and an
unchanged one loads in milliseconds.

Sources:

* ``PythonDocsSource`` -- the offline default: the Python documentation's reStructuredText
  sources from Debian's ``python3-doc`` package, lightly cleaned to prose.
* ``LocalTextSource`` -- text files or directories of them.
* ``HuggingFaceSource`` -- a streamed Hugging Face dataset (FineWeb-Edu by default); needs
  the ``datasets`` package and network access.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import tokenizers
import torch

from asiarch.data._cache import (
    atomic_write,
    default_cache_dir,
    split_indices,
    stable_hash,
)
from asiarch.data.tokenizer import EOT_TOKEN, load_or_train_tokenizer, tokenizer_path

Split = Literal["train", "val"]


# --------------------------------------------------------------------------- sources


@runtime_checkable
class TextSource(Protocol):
    """Anything with a ``name`` that yields documents.

    A source may also define ``fingerprint() -> str`` that changes whenever its documents
    change (file sizes and mtimes, say); without one the cache key hashes every document.
    """

    name: str

    def iter_documents(self) -> Iterator[str]: ...


def _files_fingerprint(files: Sequence[Path]) -> list[tuple[str, int, int]]:
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return out


class LocalTextSource:
    """Text files, one document per file; directories are searched with ``glob``."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        glob: str = "**/*.txt",
        max_documents: int | None = None,
        name: str = "local",
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if not paths:
            raise ValueError("LocalTextSource needs at least one path (got an empty list)")
        self.name = name
        self.glob = glob
        self.max_documents = max_documents
        self.paths = [Path(p).expanduser() for p in paths]
        for p in self.paths:
            if not p.exists():
                raise FileNotFoundError(f"LocalTextSource: path does not exist: {p}")

    def files(self) -> list[Path]:
        """The document files, in a stable order (directories expanded, sorted)."""
        files: list[Path] = []
        for p in self.paths:
            if not p.exists():
                raise FileNotFoundError(f"LocalTextSource: path does not exist: {p}")
            if p.is_dir():
                found = sorted(f for f in p.glob(self.glob) if f.is_file())
                if not found:
                    raise FileNotFoundError(f"LocalTextSource: no files match {self.glob!r} under {p}")
                files.extend(found)
            else:
                files.append(p)
        return files[: self.max_documents] if self.max_documents is not None else files

    def fingerprint(self) -> str:
        return stable_hash(self.glob, _files_fingerprint(self.files()))

    def iter_documents(self) -> Iterator[str]:
        for f in self.files():
            yield f.read_text(encoding="utf-8", errors="replace")


class HuggingFaceSource:
    """A streamed Hugging Face dataset; ``datasets`` is imported only when iterating.

    The ``name`` argument is the dataset *configuration* (as in ``load_dataset``); it is kept
    as ``config_name``, while the ``name`` attribute identifies the source in cache keys.
    """

    def __init__(
        self,
        dataset: str = "HuggingFaceFW/fineweb-edu",
        name: str | None = "sample-10BT",
        split: str = "train",
        text_field: str = "text",
        max_documents: int | None = 200_000,
    ) -> None:
        self.dataset, self.config_name, self.split = dataset, name, split
        self.text_field, self.max_documents = text_field, max_documents
        self.name = f"hf:{dataset}/{name or ''}/{split}"

    def fingerprint(self) -> str:
        # Remote datasets are treated as immutable for a given (dataset, config, split).
        return stable_hash(self.dataset, self.config_name, self.split, self.text_field, self.max_documents)

    def iter_documents(self) -> Iterator[str]:
        hint = (
            "set CorpusConfig.source='python_docs' (offline; needs `apt-get install python3-doc`) "
            "or source='local' with paths to text files"
        )
        try:
            import datasets  # noqa: PLC0415 - optional dependency, imported on use
        except ImportError as e:
            raise RuntimeError(
                f"HuggingFaceSource({self.dataset!r}) needs the `datasets` package, which is not "
                f"installed (pip install datasets) and network access; for offline runs {hint}"
            ) from e
        try:
            ds = datasets.load_dataset(self.dataset, self.config_name, split=self.split, streaming=True)
            for i, row in enumerate(ds):
                if self.max_documents is not None and i >= self.max_documents:
                    return
                if self.text_field not in row:
                    raise KeyError(
                        f"HuggingFaceSource: rows of {self.dataset!r} have no field "
                        f"{self.text_field!r} (fields: {sorted(row)})"
                    )
                yield row[self.text_field]
        except KeyError:
            raise
        except Exception as e:  # noqa: BLE001 - network errors come in many types
            raise RuntimeError(
                f"HuggingFaceSource could not stream {self.dataset!r} ({type(e).__name__}: {e}); "
                f"is the network reachable? For offline runs {hint}"
            ) from e


PYTHON_DOCS_GLOB = "/usr/share/doc/python3*/html/_sources"


class PythonDocsSource:
    """The Python documentation (Debian ``python3-doc``), cleaned from reST to plain prose.

    One document per ``.rst.txt`` file. Cleaning keeps paragraphs, lists, notes and the
    bodies of API descriptions; it drops code (literal ``::`` blocks, ``code-block``/doctest
    bodies, ``>>>`` sessions), directive and option lines, comments, section underlines and
    table borders, and reduces inline markup to its text (``:func:`len``` -> ``len``).
    Code is dropped because the corpus stands in for English web text.

    ``root`` is the ``_sources`` directory; by default the first of
    ``/usr/share/doc/python3*/html/_sources`` (after resolving Debian's symlinks) that holds
    the most files, so one Python version's docs are used even if several are installed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        pattern: str = "**/*.rst.txt",
        max_documents: int | None = None,
    ) -> None:
        self.name = "python_docs"
        self.pattern = pattern
        self.max_documents = max_documents
        self.root = Path(root).expanduser() if root is not None else _find_python_docs()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"PythonDocsSource: {self.root} is not a directory; install the docs with "
                "`apt-get install python3-doc`"
            )
        self._docs: list[str] | None = None

    def files(self) -> list[Path]:
        files = sorted(f for f in self.root.glob(self.pattern) if f.is_file())
        if not files:
            raise FileNotFoundError(
                f"PythonDocsSource: no files match {self.pattern!r} under {self.root}; install "
                "the docs with `apt-get install python3-doc`"
            )
        return files[: self.max_documents] if self.max_documents is not None else files

    def fingerprint(self) -> str:
        return stable_hash(self.pattern, CLEANER_VERSION, _files_fingerprint(self.files()))

    def iter_documents(self) -> Iterator[str]:
        if self._docs is None:  # cleaning ~11 MB of reST takes a second; do it once
            docs = (clean_rst(f.read_text(encoding="utf-8", errors="replace")) for f in self.files())
            self._docs = [d for d in docs if d.strip()]
        yield from self._docs

    @property
    def total_bytes(self) -> int:
        """UTF-8 size of the cleaned corpus."""
        return sum(len(d.encode("utf-8")) for d in self.iter_documents())


def _find_python_docs() -> Path:
    candidates = {Path(p).resolve() for p in globlib.glob(PYTHON_DOCS_GLOB)}
    candidates = {p for p in candidates if p.is_dir()}
    if not candidates:
        raise FileNotFoundError(
            f"PythonDocsSource: no Python documentation sources found at {PYTHON_DOCS_GLOB}; "
            "install them with `apt-get install python3-doc` (or use CorpusConfig.source='local')"
        )
    return max(sorted(candidates), key=lambda p: sum(1 for _ in p.glob("**/*.rst.txt")))


# ----------------------------------------------------------------- reST cleaning

CLEANER_VERSION = 1  # bump when clean_rst changes, so cached corpora are rebuilt

# Directives whose body is code, markup or navigation rather than prose.
_DROP_BODY = {
    "code-block", "code", "sourcecode", "highlight", "literalinclude", "include", "raw",
    "testsetup", "testcleanup", "testcode", "testoutput", "doctest", "productionlist",
    "toctree", "index", "csv-table", "autosummary", "image", "figure", "math",
    "moduleauthor", "sectionauthor", "module", "currentmodule", "tabularcolumns",
}
# Directives whose argument is an API signature worth keeping as a line of text.
_SIGNATURES = {
    "function", "method", "classmethod", "staticmethod", "decorator", "decoratormethod",
    "class", "exception", "attribute", "data", "describe", "opcode", "cmdoption", "option",
    "envvar", "macro", "type", "member", "var", "abstractmethod", "coroutinefunction",
    "coroutinemethod", "pdbcommand",
}
# Directives whose argument, if any, is the first line of their prose body.
_ADMONITIONS = {"note", "warning", "seealso", "important", "tip", "hint", "caution", "attention", "impl-detail"}
_VERSION_NOTES = {
    "versionadded": "New in version {}.",
    "versionchanged": "Changed in version {}.",
    "deprecated": "Deprecated since version {}.",
    "deprecated-removed": "Deprecated since version {}.",
}
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([A-Za-z][\w:-]*)::(.*)$")
_EXPLICIT = re.compile(r"^(\s*)\.\.(\s|$)")  # comments, targets, substitution definitions
_OPTION = re.compile(r"^\s+:[\w-]+:")
_UNDERLINE = re.compile(r"^\s*([=\-~^*+#\"'`:.]){3,}\s*$")
_TABLE_BORDER = re.compile(r"^\s*\+[-=+]+\+\s*$|^\s*=+(\s+=+)+\s*$")
_ROLE = re.compile(r":[\w:.-]+:`([^`]*)`")
_TITLE_TARGET = re.compile(r"^(.*?)\s*<[^<>]*>$", re.S)
_LINK = re.compile(r"`([^`]+?)`__?")
_LITERAL = re.compile(r"``(.+?)``", re.S)
_EMPH = re.compile(r"(?<![\w*])(?:\*\*([^*]+?)\*\*|\*([^*\s](?:[^*]*?[^*\s])?)\*)(?![\w*])")
_FOOTNOTE = re.compile(r"\s*\[(#\w*|\*|\d+)\]_")
_SUBST = re.compile(r"\|([\w -]+)\|_?")


def clean_rst(text: str) -> str:
    """Turn a reStructuredText document into plain prose (see ``PythonDocsSource``)."""
    lines = text.splitlines()
    out: list[str] = []
    skip_indent: int | None = None  # while set, skip blank lines and lines indented deeper
    in_options = False
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not stripped or indent > skip_indent:
                continue
            skip_indent = None
            out.append("")  # the skipped block separated paragraphs; keep them separated
        if in_options and stripped and _OPTION.match(line):
            continue
        in_options = False

        m = _DIRECTIVE.match(line)
        if m:
            name = m.group(2).split(":")[-1].lower()
            if name in _DROP_BODY:
                skip_indent = indent
                continue
            in_options = True  # body is prose; drop the directive line and its options
            arg = m.group(3).strip()
            if arg and name in _VERSION_NOTES:
                out.append(_VERSION_NOTES[name].format(arg.split()[0]))
            elif arg and name in _SIGNATURES | _ADMONITIONS:
                out.append(arg)
            continue
        if _EXPLICIT.match(line):
            skip_indent = indent  # comment/target/substitution, with any indented body
            continue
        if _UNDERLINE.match(line) or _TABLE_BORDER.match(line):
            continue
        if stripped.startswith(">>>"):
            # A doctest block runs to the next blank line.
            while i < len(lines) and lines[i].strip():
                i += 1
            continue
        if stripped.endswith("::"):
            # "Paragraph::" introduces a literal (code) block: keep "Paragraph:", drop the block.
            head = stripped[:-2].rstrip()
            skip_indent = indent
            if not head:
                continue
            stripped = head if head.endswith(":") or stripped[-3:-2].isspace() else head + ":"
        if stripped.startswith("|") and stripped.endswith("|"):
            stripped = " ".join(cell.strip() for cell in stripped.strip("|").split("|") if cell.strip())
        out.append(stripped)

    text = _inline("\n".join(out))  # on the whole text: roles and literals can span lines
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n" if text.strip() else ""


def _inline(s: str) -> str:
    def role(m: re.Match[str]) -> str:
        inner = m.group(1)
        kind = m.group(0).split(":")[1]
        if kind in ("pep", "rfc"):
            return f"{kind.upper()} {inner}"
        t = _TITLE_TARGET.match(inner)
        if t and t.group(1):
            inner = t.group(1)
        inner = inner.lstrip("!")
        return inner[1:].rsplit(".", 1)[-1] if inner.startswith("~") else inner  # ~a.b -> b

    s = _ROLE.sub(role, s)
    s = _LITERAL.sub(r"\1", s)
    s = _FOOTNOTE.sub("", s)
    s = _LINK.sub(lambda m: (_TITLE_TARGET.match(m.group(1)) or m).group(1), s)
    s = _EMPH.sub(lambda m: m.group(1) or m.group(2), s)
    s = _SUBST.sub(r"\1", s)
    return s.replace("\\ ", "")  # "\ " is reST's zero-width separator


# --------------------------------------------------------------------------- config


@dataclass
class CorpusConfig:
    """Which text to train on and how it is split and tokenised.

    ``source`` is ``"python_docs"`` (offline default), ``"local"`` (``paths``: files or
    directories of ``*.txt``) or ``"huggingface"`` (``hf_*`` fields). ``val_fraction`` of the
    documents, chosen by a hash of (document index, ``seed``), form the validation split.
    ``cache_dir`` defaults to ``$ASIARCH_CACHE`` or ``~/.cache/asiarch``. The defaults equal
    ``scale.corpus`` of ``conf/scale/cpu_tiny.yaml``.
    """

    source: str = "python_docs"
    paths: Sequence[str] = ()
    val_fraction: float = 0.05
    tokenizer_vocab_size: int = 1024
    cache_dir: str | None = None
    seed: int = 0
    max_documents: int | None = None
    local_glob: str = "**/*.txt"
    python_docs_root: str | None = None
    hf_dataset: str = "HuggingFaceFW/fineweb-edu"
    hf_name: str | None = "sample-10BT"
    hf_split: str = "train"
    hf_text_field: str = "text"
    hf_max_documents: int | None = 200_000

    def validate(self) -> None:
        if self.source not in ("python_docs", "local", "huggingface"):
            raise ValueError(
                f"CorpusConfig.source must be 'python_docs', 'local' or 'huggingface', got {self.source!r}"
            )
        if self.source == "local" and not self.paths:
            raise ValueError("CorpusConfig.paths must list files or directories when source='local'")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"CorpusConfig.val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 260 <= self.tokenizer_vocab_size <= 2**31 - 1:
            raise ValueError(
                "CorpusConfig.tokenizer_vocab_size must be >= 260 (256 byte tokens, the "
                f"end-of-text token and some merges), got {self.tokenizer_vocab_size}"
            )
        if self.max_documents is not None and self.max_documents < 2:
            raise ValueError(f"CorpusConfig.max_documents must be >= 2 or None, got {self.max_documents}")


def build_source(cfg: CorpusConfig) -> TextSource:
    """The ``TextSource`` that ``cfg`` names."""
    cfg.validate()
    if cfg.source == "python_docs":
        return PythonDocsSource(cfg.python_docs_root, max_documents=cfg.max_documents)
    if cfg.source == "local":
        return LocalTextSource(list(cfg.paths), glob=cfg.local_glob, max_documents=cfg.max_documents)
    limit = cfg.max_documents if cfg.max_documents is not None else cfg.hf_max_documents
    return HuggingFaceSource(cfg.hf_dataset, cfg.hf_name, cfg.hf_split, cfg.hf_text_field, limit)


def source_dirs(cfg: CorpusConfig) -> list[str]:
    """The directories ``cfg``'s corpus is read from and cached in (every installed Python's
    rendered docs too, for ``python_docs``; a ``local`` path that is a file is not one): what a
    sandboxed candidate's training process must not read, or it could rebuild the validation
    split with the tokenizer it trains with. A streamed Hugging Face source leaves only the cache."""
    dirs = [default_cache_dir(cfg.cache_dir)]
    if cfg.source == "python_docs":
        roots = [Path(cfg.python_docs_root).expanduser()] if cfg.python_docs_root else []
        dirs += [Path(p).resolve().parent for p in [*globlib.glob(PYTHON_DOCS_GLOB), *roots]]
    elif cfg.source == "local":
        dirs += [Path(p).expanduser() for p in cfg.paths]
    return sorted({str(d) for d in dirs if d.is_dir()})


# --------------------------------------------------------------------------- corpus


class TokenCorpus:
    """Train and validation token streams plus the tokenizer that produced them."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, train: np.ndarray, val: np.ndarray) -> None:
        self.tokenizer = tokenizer
        self._tokens: dict[str, np.ndarray] = {"train": train, "val": val}

    @classmethod
    def from_config(cls, cfg: CorpusConfig, source: TextSource | None = None) -> TokenCorpus:
        """Load the cached corpus for ``cfg`` or build it (tokenizer first, then tokens).

        ``source`` overrides ``build_source(cfg)``, for sources defined outside this module.
        """
        cfg.validate()
        source = source if source is not None else build_source(cfg)
        cache_dir = default_cache_dir(cfg.cache_dir)
        tok = load_or_train_tokenizer(
            source, cfg.tokenizer_vocab_size, cache_dir, val_fraction=cfg.val_fraction, seed=cfg.seed
        )
        stem = tokenizer_path(source, cfg.tokenizer_vocab_size, cache_dir, cfg.val_fraction, cfg.seed)
        stem = stem.with_suffix("")
        tok_digest = stable_hash(tok.to_str())
        cached = _load_tokens(stem, tok_digest)
        if cached is None:
            cached = _build_tokens(source, tok, cfg.val_fraction, cfg.seed)
            _save_tokens(stem, tok_digest, *cached)
        return cls(tok, *cached)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def eot_id(self) -> int:
        return self.tokenizer.token_to_id(EOT_TOKEN)

    def tokens(self, split: Split) -> np.ndarray:
        """The flat token stream of ``split`` (read-only view)."""
        arr = self._get(split)
        view = arr.view()
        view.flags.writeable = False
        return view

    def num_tokens(self, split: Split) -> int:
        return len(self._get(split))

    def batch(
        self, split: Split, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows of ``seq_len`` tokens; targets are the inputs shifted left by one."""
        data = self._check(split, batch_size, seq_len)
        starts = torch.randint(len(data) - seq_len, (batch_size,), generator=generator).numpy()
        return self._windows(data, starts, seq_len)

    def val_batches(
        self, batch_size: int, seq_len: int, num_batches: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed list of validation batches, identical on every call.

        Windows start at evenly spaced offsets across the whole validation stream, so the
        eval loss covers all of it and is comparable between runs and architectures.
        """
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        data = self._check("val", batch_size, seq_len)
        count = batch_size * num_batches
        starts = np.linspace(0, len(data) - seq_len - 1, count).round().astype(np.int64)
        return [
            self._windows(data, starts[b * batch_size : (b + 1) * batch_size], seq_len)
            for b in range(num_batches)
        ]

    def training_only(self) -> TokenCorpus:
        """A copy that holds the train stream only: what a process that must not see the
        validation text (a sandboxed candidate's training) is given."""
        return TokenCorpus(self.tokenizer, self._tokens["train"], np.zeros(0, dtype=self._tokens["val"].dtype))

    def _get(self, split: str) -> np.ndarray:
        if split not in self._tokens:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self._tokens[split]

    def _check(self, split: str, batch_size: int, seq_len: int) -> np.ndarray:
        data = self._get(split)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if len(data) < seq_len + 1:
            raise ValueError(
                f"the {split!r} split has {len(data)} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
                "use a shorter seq_len, a larger corpus or a larger val_fraction"
            )
        return data

    @staticmethod
    def _windows(data: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
        rows = torch.from_numpy(data[idx].astype(np.int64))
        return rows[:, :-1], rows[:, 1:]


def _build_tokens(
    source: TextSource, tok: tokenizers.Tokenizer, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    docs = list(source.iter_documents())
    flags = split_indices(len(docs), seed, val_fraction)
    dtype = np.uint16 if tok.get_vocab_size() <= 2**16 else np.uint32
    eot = tok.token_to_id(EOT_TOKEN)
    return (
        _encode_stream(tok, (d for d, v in zip(docs, flags) if not v), eot, dtype),
        _encode_stream(tok, (d for d, v in zip(docs, flags) if v), eot, dtype),
    )


def _encode_stream(tok: tokenizers.Tokenizer, docs: Iterable[str], eot: int, dtype: type) -> np.ndarray:
    """Concatenate the encodings of ``docs``, each followed by the end-of-text token."""
    parts: list[np.ndarray] = []
    batch: list[str] = []

    def flush() -> None:
        for enc in tok.encode_batch(batch, add_special_tokens=False):
            parts.append(np.asarray(enc.ids + [eot], dtype=dtype))
        batch.clear()

    for doc in docs:
        batch.append(doc)
        if len(batch) >= 256:
            flush()
    flush()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _load_tokens(stem: Path, tok_digest: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (train, val) arrays, or ``None`` if any file is missing, stale or corrupt."""
    meta_path = stem.with_name(stem.name + ".tokens.json")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("tokenizer") != tok_digest:
            return None
        arrays = []
        for split in ("train", "val"):
            with open(stem.with_name(f"{stem.name}.{split}.npy"), "rb") as f:
                arr = np.load(f, allow_pickle=False)
            if arr.ndim != 1 or len(arr) != meta[split]["n"] or _digest(arr) != meta[split]["digest"]:
                return None
            arrays.append(arr)
        return arrays[0], arrays[1]
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def _save_tokens(stem: Path, tok_digest: str, train: np.ndarray, val: np.ndarray) -> None:
    meta: dict[str, object] = {"tokenizer": tok_digest}
    for split, arr in (("train", train), ("val", val)):
        atomic_write(stem.with_name(f"{stem.name}.{split}.npy"), lambda p, a=arr: _save_npy(p, a))
        meta[split] = {"n": len(arr), "digest": _digest(arr)}
    # The metadata is written last: its presence marks a complete set of arrays.
    atomic_write(stem.with_name(stem.name + ".tokens.json"), lambda p: p.write_text(json.dumps(meta)))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npy" to the name
        np.save(f, arr, allow_pickle=False)


def _digest(arr: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=16).hexdigest()
