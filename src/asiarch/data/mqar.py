"""Multi-query associative recall (MQAR), following the Zoology benchmark's layout.

An example is ``k1 v1 k2 v2 ... kK vK`` followed by filler zeros in which every key appears
once more; the model must emit that key's value right after the repeated key. The gap between
the context and a query is drawn from a power law, so most queries come soon after the
context and a few come late, which is what separates fixed-state recurrent mixers from
attention.

Layout of one row (``T = seq_len``, ``K = num_kv_pairs``)::

    inputs: k1 v1 ... kK vK  0 0 k2 v2 0 0 ... k1 v1 0 ...
    labels: -100 ...   -100  . . v2 -100 . ... v1 -100 . ...

``labels[t]`` is the target for the prediction made from ``inputs[:t+1]`` (the usual
next-token layout), so the label sits on the repeated key and equals its value. The value is
also written into ``inputs`` after the repeated key; a causal model cannot see it when making
the labelled prediction. (Zoology's own generator leaves that slot 0; the difference only
matters to a non-causal mixer.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100
_CHUNK_ROWS = 8192  # rows generated at a time, to bound temporary memory for large configs


@dataclass
class MQARConfig:
    """Shape and size of an MQAR dataset; ``seed`` fixes both the train and the test set.

    The defaults equal ``scale.mqar`` of ``conf/scale/cpu_tiny.yaml``.
    """

    vocab_size: int = 128
    seq_len: int = 64
    num_kv_pairs: int = 8
    power_a: float = 0.01
    num_train: int = 20000
    num_test: int = 1000
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the configuration cannot produce data."""
        k = self.num_kv_pairs
        if k < 1:
            raise ValueError(f"MQARConfig.num_kv_pairs must be >= 1, got {k}")
        if self.vocab_size < 4:
            raise ValueError(f"MQARConfig.vocab_size must be >= 4, got {self.vocab_size}")
        half = self.vocab_size // 2
        if half - 1 < k:
            raise ValueError(
                f"MQARConfig.vocab_size={self.vocab_size} is too small for num_kv_pairs={k}: "
                f"keys are drawn without replacement from [1, {half}), which holds only "
                f"{half - 1} tokens; use vocab_size >= {2 * (k + 1)}"
            )
        if self.seq_len < 4 * k:
            raise ValueError(
                f"MQARConfig.seq_len={self.seq_len} is too short for num_kv_pairs={k}: the "
                f"{2 * k} context tokens plus {k} distinct query slots need seq_len >= {4 * k}"
            )
        if not self.power_a > 0:
            raise ValueError(f"MQARConfig.power_a must be > 0, got {self.power_a}")
        if self.num_train < 1:
            raise ValueError(f"MQARConfig.num_train must be >= 1, got {self.num_train}")
        if self.num_test < 1:
            raise ValueError(f"MQARConfig.num_test must be >= 1, got {self.num_test}")


class MQAR:
    """A fixed train set and a disjoint fixed test set, both derived from ``cfg.seed``.

    ``test_secret``: the test set is drawn from ``cfg.seed`` and this number instead, so a process
    that holds the configuration and this generator, but not the secret, cannot regenerate it (a
    candidate's training process: it would memorise the test answers). The train set is the same.
    """

    def __init__(self, cfg: MQARConfig, test_secret: int | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.vocab_range = (0, cfg.vocab_size)  # token ids it uses, for the trainer's per-task softmax
        # Two independent streams from one seed: changing num_train does not change the
        # test set, and the two sets never share random draws.
        train_seq, test_seq = np.random.SeedSequence(cfg.seed).spawn(2)
        if test_secret is not None:
            test_seq = np.random.SeedSequence([cfg.seed, int(test_secret)])
        train_in, train_lab = _generate(cfg, np.random.default_rng(train_seq), cfg.num_train)
        test_in, test_lab = _generate_disjoint(
            cfg, np.random.default_rng(test_seq), cfg.num_test, exclude=train_in
        )
        self._train = (torch.from_numpy(train_in), torch.from_numpy(train_lab))
        self._test = (torch.from_numpy(test_in), torch.from_numpy(test_lab))

    def train_batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` train rows drawn with replacement: ``(inputs, labels)``, both ``[B, T]``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        inputs, labels = self._train
        idx = torch.randint(len(inputs), (batch_size,), generator=generator)
        return inputs[idx], labels[idx]

    def train_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole train set ``(inputs, labels)``; callers must not modify it in place."""
        return self._train

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole test set ``(inputs, labels)``; callers must not modify it in place."""
        if self._test is None:
            raise ValueError("this MQAR copy holds no test set (MQAR.training_only)")
        return self._test

    def training_only(self) -> MQAR:
        """A copy without the test set: what a process that must not see it is given."""
        copy = object.__new__(MQAR)
        copy.cfg, copy.vocab_range, copy._train, copy._test = self.cfg, self.vocab_range, self._train, None
        return copy

    @staticmethod
    def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
        """Argmax accuracy over the answer positions (``labels != -100``)."""
        if logits.shape[:-1] != labels.shape:
            raise ValueError(
                f"logits shape {tuple(logits.shape)} does not match labels {tuple(labels.shape)} + [V]"
            )
        mask = labels != IGNORE_INDEX
        if not bool(mask.any()):
            raise ValueError("labels contain no answer positions (all are -100)")
        preds = logits.argmax(dim=-1)
        return (preds[mask] == labels[mask]).float().mean().item()


def _generate(cfg: MQARConfig, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    chunks = [_generate_chunk(cfg, rng, min(_CHUNK_ROWS, n - s)) for s in range(0, n, _CHUNK_ROWS)]
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def _generate_chunk(cfg: MQARConfig, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    k, t = cfg.num_kv_pairs, cfg.seq_len
    half = cfg.vocab_size // 2
    keys = _sample_distinct(rng, n, k, 1, half)
    values = _sample_distinct(rng, n, k, half, cfg.vocab_size)

    inputs = np.zeros((n, t), dtype=np.int64)
    labels = np.full((n, t), IGNORE_INDEX, dtype=np.int64)
    inputs[:, 0 : 2 * k : 2] = keys
    inputs[:, 1 : 2 * k : 2] = values

    # Query slots: ``space`` two-token slots after the context; slot j has gap j+1 and
    # probability proportional to a * (j+1)^(a-1), as in Zoology. Distinct slots per row via
    # the Gumbel top-k trick (equivalent to sequential sampling without replacement).
    space = (t - 2 * k) // 2
    log_p = np.log(cfg.power_a) + (cfg.power_a - 1.0) * np.log(np.arange(1, space + 1))
    scores = log_p[None, :] + rng.gumbel(size=(n, space))
    slots = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    query_pos = 2 * k + 2 * slots
    np.put_along_axis(inputs, query_pos, keys, axis=1)
    np.put_along_axis(inputs, query_pos + 1, values, axis=1)
    np.put_along_axis(labels, query_pos, values, axis=1)
    return inputs, labels


def _sample_distinct(rng: np.random.Generator, n: int, k: int, low: int, high: int) -> np.ndarray:
    """``n`` rows of ``k`` distinct integers from ``[low, high)``, each row a uniform random
    ordered sample."""
    size = high - low
    if size <= 4 * k or size <= 256:
        # Small range: rank i.i.d. uniforms and keep the k smallest, ordered by their value.
        r = rng.random((n, size))
        idx = np.argpartition(r, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(r, idx, axis=1), axis=1)
        return low + np.take_along_axis(idx, order, axis=1)
    # Large range: draw with replacement and redraw rows that contain a repeat.
    out = rng.integers(low, high, size=(n, k))
    bad = _rows_with_repeats(out)
    while bad.any():
        out[bad] = rng.integers(low, high, size=(int(bad.sum()), k))
        bad = _rows_with_repeats(out)
    return out


def _rows_with_repeats(x: np.ndarray) -> np.ndarray:
    s = np.sort(x, axis=1)
    return (s[:, 1:] == s[:, :-1]).any(axis=1)


def _generate_disjoint(
    cfg: MQARConfig, rng: np.random.Generator, n: int, exclude: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` rows none of which equals a row of ``exclude`` (labels follow from inputs)."""
    seen = {row.tobytes() for row in exclude}
    kept_in: list[np.ndarray] = []
    kept_lab: list[np.ndarray] = []
    have = 0
    for _ in range(1000):
        inputs, labels = _generate(cfg, rng, n - have)
        fresh = np.fromiter((row.tobytes() not in seen for row in inputs), dtype=bool, count=len(inputs))
        kept_in.append(inputs[fresh])
        kept_lab.append(labels[fresh])
        have += int(fresh.sum())
        if have == n:
            return np.concatenate(kept_in), np.concatenate(kept_lab)
    raise ValueError(
        f"could not draw {n} MQAR test examples distinct from the {len(exclude)} train examples; "
        "the configuration admits too few distinct sequences (raise vocab_size or seq_len)"
    )
