import builtins
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from asiarch.data import (
    EOT_ID,
    CorpusConfig,
    HuggingFaceSource,
    LocalTextSource,
    PythonDocsSource,
    TokenCorpus,
    build_source,
    clean_rst,
    load_or_train_tokenizer,
)
from asiarch.data._cache import split_indices
from asiarch.data.tokenizer import tokenizer_path

ROUND_TRIP = [
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, tabs\tand\nnewlines\n\n",
    "def f(x):\n    return x ** 2  # comment",
    "Unicode: naïve café, 日本語, emoji 🐍, Ωmega",
    "",
]


@pytest.fixture(scope="module")
def docs_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docs_cache")


@pytest.fixture(scope="module")
def docs_corpus(docs_cache: Path) -> TokenCorpus:
    return TokenCorpus.from_config(CorpusConfig(cache_dir=str(docs_cache)))


def _write_docs(root: Path, n: int = 30) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text = f"Document number {i} talks about topic {i % 7}. " * (20 + i)
        (root / f"doc{i:02d}.txt").write_text(text + "\nThe end of this small file.\n")
    return root


def _local_cfg(tmp_path: Path, **kw) -> CorpusConfig:
    root = _write_docs(tmp_path / "texts")
    base = dict(source="local", paths=[str(root)], tokenizer_vocab_size=300, val_fraction=0.2,
                cache_dir=str(tmp_path / "cache"))
    return CorpusConfig(**{**base, **kw})


# ------------------------------------------------------------------- python docs


def test_python_docs_corpus_is_large_clean_prose() -> None:
    src = PythonDocsSource()
    assert src.total_bytes >= 3_000_000
    text = "".join(src.iter_documents())
    raw = "".join(f.read_text(encoding="utf-8", errors="replace") for f in src.files())
    for markup in (":func:`", ":class:`", ".. note::", ".. code-block::", ":synopsis:"):
        assert markup in raw and markup not in text, markup
    for markup in ("``", ">>> ", ".. "):  # a few survive in malformed or nested markup
        assert text.count(markup) < 0.02 * raw.count(markup), markup
    assert "higher-order functions" in text  # functools' intro survives cleaning


def test_clean_rst_strips_markup_and_code() -> None:
    rst = (
        "Title\n=====\n\n"
        ".. module:: spam\n   :synopsis: Eggs.\n\n"
        "Call :func:`len` or :meth:`~dict.get`, see ``x + 1`` and :pep:`8`.\n"
        "Read the `guide <https://example.org>`_ and *this* **now**.\n\n"
        "For example::\n\n   x = compute()\n   print(x)\n\n"
        ".. function:: spam(a, b)\n   :noindex:\n\n   Return the spam of *a* and *b*.\n\n"
        ".. code-block:: python\n\n   secret_code()\n\n"
        ">>> 1 + 1\n2\n\n"
        ".. this is a comment\n   spanning lines\n\n"
        "Last paragraph.\n"
    )
    out = clean_rst(rst)
    assert "Call len or get, see x + 1 and PEP 8." in out
    assert "Read the guide and this now." in out
    assert "For example:" in out
    assert "spam(a, b)" in out and "Return the spam of a and b." in out
    for gone in ("compute()", "secret_code", ">>>", "comment", "=====", "noindex", "synopsis", "::"):
        assert gone not in out, gone
    assert out.rstrip().endswith("Last paragraph.")


def test_missing_python_docs_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install python3-doc"):
        PythonDocsSource(root=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="apt-get install python3-doc"):
        PythonDocsSource(root=tmp_path).files()  # exists but holds no .rst.txt


def test_docs_corpus_tokens_and_round_trip(docs_corpus: TokenCorpus) -> None:
    tok = docs_corpus.tokenizer
    vocab = CorpusConfig().tokenizer_vocab_size  # the default scale's
    assert docs_corpus.vocab_size == vocab
    assert tok.token_to_id("<|endoftext|>") == EOT_ID == 0
    for s in ROUND_TRIP:
        assert tok.decode(tok.encode(s).ids) == s
    assert docs_corpus.num_tokens("train") > 1_000_000
    assert docs_corpus.num_tokens("val") > 10_000
    train = docs_corpus.tokens("train")
    assert train.dtype == np.uint16 and int(train.max()) < vocab
    assert (train == EOT_ID).sum() > 400  # one separator per document


def test_docs_cache_is_reused(docs_corpus: TokenCorpus, docs_cache: Path) -> None:
    files = sorted((docs_cache / "tokenizers").iterdir())
    assert [f.suffix for f in files].count(".npy") == 2
    before = {f: f.stat().st_mtime_ns for f in files}
    again = TokenCorpus.from_config(CorpusConfig(cache_dir=str(docs_cache)))
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert np.array_equal(again.tokens("val"), docs_corpus.tokens("val"))


def test_batches(docs_corpus: TokenCorpus) -> None:
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    x, y = docs_corpus.batch("train", 4, 64, g1)
    assert x.shape == y.shape == (4, 64) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    assert torch.equal(x, docs_corpus.batch("train", 4, 64, g2)[0])
    assert not torch.equal(x, docs_corpus.batch("train", 4, 64, g1)[0])
    # every window is a contiguous slice of the train stream
    stream = torch.from_numpy(docs_corpus.tokens("train").astype(np.int64))
    row = torch.cat([x[0], y[0, -1:]])
    starts = (stream[: len(stream) - 64] == row[0]).nonzero().flatten()
    assert any(torch.equal(stream[s : s + 65], row) for s in starts.tolist())


def test_val_batches_are_fixed(docs_corpus: TokenCorpus) -> None:
    a = docs_corpus.val_batches(4, 128, 3)
    b = docs_corpus.val_batches(4, 128, 3)
    assert len(a) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa[:, 1:], ya[:, :-1])
    assert not torch.equal(a[0][0], a[1][0])


def test_split_too_small_raises(docs_corpus: TokenCorpus) -> None:
    n = docs_corpus.num_tokens("val")
    with pytest.raises(ValueError, match="'val' split has"):
        docs_corpus.batch("val", 1, n, torch.Generator())
    with pytest.raises(ValueError, match="split must be"):
        docs_corpus.batch("test", 1, 8, torch.Generator())  # type: ignore[arg-type]


# ------------------------------------------------------------------- local sources


def test_local_source_reads_files_and_dirs(tmp_path: Path) -> None:
    root = _write_docs(tmp_path / "d", n=3)
    extra = tmp_path / "single.md"
    extra.write_text("single file")
    (root / "ignored.md").write_text("not a txt file")
    src = LocalTextSource([root, extra])
    docs = list(src.iter_documents())
    assert len(docs) == 4 and docs[-1] == "single file"
    assert not any("not a txt" in d for d in docs)


def test_local_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        LocalTextSource([missing])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no files match"):
        LocalTextSource([empty]).files()
    with pytest.raises(ValueError, match="CorpusConfig.paths"):
        build_source(CorpusConfig(source="local"))


def test_local_corpus_splits_by_document(tmp_path: Path) -> None:
    cfg = _local_cfg(tmp_path)
    corpus = TokenCorpus.from_config(cfg)
    docs = list(build_source(cfg).iter_documents())
    flags = split_indices(len(docs), cfg.seed, cfg.val_fraction)
    assert 0 < sum(flags) < len(docs)
    tok = corpus.tokenizer
    for split, want in (("train", False), ("val", True)):
        stream = corpus.tokens(split).tolist()
        pieces, cur = [], []
        for t in stream:
            if t == EOT_ID:
                pieces.append(tok.decode(cur))
                cur = []
            else:
                cur.append(t)
        assert pieces == [d for d, f in zip(docs, flags) if f == want]


def test_fingerprint_changes_when_files_change(tmp_path: Path) -> None:
    cfg = _local_cfg(tmp_path)
    src = build_source(cfg)
    first = tokenizer_path(src, 300, cfg.cache_dir, cfg.val_fraction, cfg.seed)
    TokenCorpus.from_config(cfg)
    assert first.is_file()
    victim = tmp_path / "texts" / "doc03.txt"
    victim.write_text("completely new words, zebra quagga okapi " * 50)
    os.utime(victim, ns=(1, 1))  # a distinct mtime even on coarse-grained filesystems
    second = tokenizer_path(build_source(cfg), 300, cfg.cache_dir, cfg.val_fraction, cfg.seed)
    assert second != first
    corpus = TokenCorpus.from_config(cfg)
    assert second.is_file()
    all_text = "".join(corpus.tokenizer.decode(corpus.tokens(s).tolist()) for s in ("train", "val"))
    assert "zebra quagga okapi" in all_text
    # a different split seed is a different cache entry too
    assert tokenizer_path(build_source(cfg), 300, cfg.cache_dir, cfg.val_fraction, 1) != second


def test_tokenizer_reused_without_retraining(tmp_path: Path) -> None:
    cfg = _local_cfg(tmp_path)
    src = build_source(cfg)
    tok = load_or_train_tokenizer(src, 300, cfg.cache_dir, val_fraction=0.2)
    path = tokenizer_path(src, 300, cfg.cache_dir, 0.2, 0)
    mtime = path.stat().st_mtime_ns
    again = load_or_train_tokenizer(src, 300, cfg.cache_dir, val_fraction=0.2)
    assert path.stat().st_mtime_ns == mtime
    assert again.to_str() == tok.to_str()


def test_corrupt_tokenizer_is_rebuilt(tmp_path: Path) -> None:
    cfg = _local_cfg(tmp_path)
    ref = TokenCorpus.from_config(cfg)
    path = tokenizer_path(build_source(cfg), 300, cfg.cache_dir, cfg.val_fraction, cfg.seed)
    path.write_text(path.read_text()[:100])  # truncated JSON
    rebuilt = TokenCorpus.from_config(cfg)
    assert rebuilt.tokenizer.decode(rebuilt.tokenizer.encode("topic 3").ids) == "topic 3"
    assert rebuilt.num_tokens("train") == ref.num_tokens("train")
    assert path.read_text() == rebuilt.tokenizer.to_str()  # valid file written back


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_token_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    cfg = _local_cfg(tmp_path)
    ref = TokenCorpus.from_config(cfg)
    stem = tokenizer_path(build_source(cfg), 300, cfg.cache_dir, cfg.val_fraction, cfg.seed).with_suffix("")
    npy = stem.with_name(stem.name + ".train.npy")
    raw = npy.read_bytes()
    if damage == "truncate":
        npy.write_bytes(raw[: len(raw) // 2])
    else:  # same size, one token changed: only the checksum can notice
        npy.write_bytes(raw[:-2] + bytes([raw[-2] ^ 1, raw[-1]]))
    rebuilt = TokenCorpus.from_config(cfg)
    assert np.array_equal(rebuilt.tokens("train"), ref.tokens("train"))
    assert npy.read_bytes() == raw  # repaired on disk


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    cfg = _local_cfg(tmp_path)
    TokenCorpus.from_config(cfg)
    names = [p.name for p in (Path(cfg.cache_dir) / "tokenizers").iterdir()]
    assert len(names) == 4 and not any(n.endswith(".tmp") for n in names)


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _local_cfg(tmp_path, cache_dir=None)
    monkeypatch.setenv("ASIARCH_CACHE", str(tmp_path / "envcache"))
    TokenCorpus.from_config(cfg)
    assert len(list((tmp_path / "envcache" / "tokenizers").glob("*.json"))) == 2


# ------------------------------------------------------------------- config & HF


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"source": "web"}, "source"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"tokenizer_vocab_size": 100}, "tokenizer_vocab_size"),
    ],
)
def test_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build_source(CorpusConfig(**kwargs))


def test_huggingface_missing_datasets_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    src = build_source(CorpusConfig(source="huggingface", max_documents=10))
    assert isinstance(src, HuggingFaceSource) and src.max_documents == 10
    with pytest.raises(RuntimeError, match="datasets") as info:
        next(src.iter_documents())
    assert "python_docs" in str(info.value) and "offline" in str(info.value)
