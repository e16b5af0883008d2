"""Data for asiarch: MQAR, language-modelling corpora and downstream multiple-choice tasks."""

from asiarch.data._cache import source_fingerprint
from asiarch.data.corpus import (
    CorpusConfig,
    HuggingFaceSource,
    LocalTextSource,
    PythonDocsSource,
    TextSource,
    TokenCorpus,
    build_source,
    clean_rst,
)
from asiarch.data.downstream import (
    TASKS,
    MCDoc,
    evaluate_downstream,
    load_task,
    score_multiple_choice,
)
from asiarch.data.mqar import MQAR, MQARConfig
from asiarch.data.tokenizer import EOT_ID, EOT_TOKEN, load_or_train_tokenizer, train_tokenizer

__all__ = [
    "EOT_ID",
    "EOT_TOKEN",
    "MQAR",
    "TASKS",
    "MCDoc",
    "CorpusConfig",
    "HuggingFaceSource",
    "LocalTextSource",
    "MQARConfig",
    "PythonDocsSource",
    "TextSource",
    "TokenCorpus",
    "build_source",
    "clean_rst",
    "evaluate_downstream",
    "load_task",
    "load_or_train_tokenizer",
    "score_multiple_choice",
    "source_fingerprint",
    "train_tokenizer",
]
