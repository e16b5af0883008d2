"""Byte-level BPE tokenizer, trained on a corpus's train split and cached on disk.

Byte-level BPE (the GPT-2 scheme) never produces unknown tokens and round-trips any string
exactly, so no normaliser or ``<unk>`` is needed. The only special token is
``<|endoftext|>`` and it is given id 0: it separates documents in the token streams, and
having it at a fixed id lets padding and evaluation code find it without a lookup.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from asiarch.data._cache import (
    atomic_write,
    default_cache_dir,
    source_fingerprint,
    split_indices,
    stable_hash,
)

if TYPE_CHECKING:
    from asiarch.data.corpus import TextSource

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 0


def corpus_key(source: TextSource, vocab_size: int, val_fraction: float, seed: int) -> str:
    """``<fingerprint>-<vocab>``: names every cache file derived from this source and split."""
    return f"{stable_hash(source_fingerprint(source), val_fraction, seed)}-{vocab_size}"


def tokenizer_path(
    source: TextSource,
    vocab_size: int,
    cache_dir: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.02,
    seed: int = 0,
) -> Path:
    """Where ``load_or_train_tokenizer`` caches the tokenizer for these arguments."""
    key = corpus_key(source, vocab_size, val_fraction, seed)
    return default_cache_dir(cache_dir) / "tokenizers" / f"{key}.json"


def load_or_train_tokenizer(
    source: TextSource,
    vocab_size: int,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    val_fraction: float = 0.02,
    seed: int = 0,
) -> tokenizers.Tokenizer:
    """The cached tokenizer for ``source``, training (and caching) one if needed.

    Only train-split documents (as chosen by ``val_fraction`` and ``seed``) are used, so
    validation text never shapes the vocabulary. A cache file that cannot be read or does not
    look like our tokenizer is replaced rather than trusted.
    """
    path = tokenizer_path(source, vocab_size, cache_dir, val_fraction, seed)
    tok = _load(path, vocab_size)
    if tok is not None:
        return tok
    tok = train_tokenizer(_train_documents(source, val_fraction, seed), vocab_size)
    atomic_write(path, lambda p: p.write_text(tok.to_str(), encoding="utf-8"))
    return tok


def train_tokenizer(documents: Iterator[str], vocab_size: int) -> tokenizers.Tokenizer:
    """Train a byte-level BPE with ``<|endoftext|>`` at id 0 on ``documents``."""
    if vocab_size < 257:
        raise ValueError(f"vocab_size must be >= 257 (256 bytes + <|endoftext|>), got {vocab_size}")
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TOKEN],  # first special token -> id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(documents, trainer=trainer)
    if tok.token_to_id(EOT_TOKEN) != EOT_ID:
        got = tok.token_to_id(EOT_TOKEN)
        raise RuntimeError(f"tokenizer training put {EOT_TOKEN} at id {got}, not {EOT_ID}")
    return tok


def _train_documents(source: TextSource, val_fraction: float, seed: int) -> Iterator[str]:
    docs = list(source.iter_documents())
    flags = split_indices(len(docs), seed, val_fraction)
    return (d for d, is_val in zip(docs, flags) if not is_val)


def _load(path: Path, vocab_size: int) -> tokenizers.Tokenizer | None:
    if not path.is_file():
        return None
    try:
        tok = tokenizers.Tokenizer.from_file(str(path))
    except Exception:  # noqa: BLE001 - tokenizers raises plain Exception on bad JSON
        return None
    ok = (
        tok.token_to_id(EOT_TOKEN) == EOT_ID
        and 257 <= tok.get_vocab_size() <= vocab_size
        and isinstance(tok.pre_tokenizer, pre_tokenizers.ByteLevel)
    )
    return tok if ok else None
