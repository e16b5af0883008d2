import time

import pytest
import torch

from asiarch.data import MQAR, MQARConfig

SMALL = MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4, num_train=2000, num_test=200, seed=3)


@pytest.fixture(scope="module")
def small() -> MQAR:
    return MQAR(SMALL)


def _check_rows(cfg: MQARConfig, inputs: torch.Tensor, labels: torch.Tensor) -> None:
    k, half = cfg.num_kv_pairs, cfg.vocab_size // 2
    assert inputs.shape == labels.shape == (len(inputs), cfg.seq_len)
    assert inputs.dtype == labels.dtype == torch.long
    for x, y in zip(inputs.tolist(), labels.tolist()):
        keys, values = x[0 : 2 * k : 2], x[1 : 2 * k : 2]
        assert all(1 <= key < half for key in keys)
        assert all(half <= v < cfg.vocab_size for v in values)
        assert len(set(keys)) == k and len(set(values)) == k
        pairs = dict(zip(keys, values))
        assert all(lab == -100 for lab in y[: 2 * k])  # no loss inside the context
        answered = []
        for t in range(2 * k, cfg.seq_len):
            if y[t] != -100:
                # the label sits on the repeated key and is that key's value ...
                assert x[t] in pairs and y[t] == pairs[x[t]]
                # ... which also follows the key in the inputs (Zoology-style layout)
                assert x[t + 1] == y[t]
                answered.append(x[t])
            elif x[t] != 0:
                assert x[t] in pairs.values() and x[t - 1] in pairs  # value after a query key
        assert sorted(answered) == sorted(keys)  # every key is queried exactly once


def test_rows_have_valid_keys_values_and_labels(small: MQAR) -> None:
    _check_rows(SMALL, *small.test_set())
    _check_rows(SMALL, *small.train_batch(64, torch.Generator().manual_seed(0)))


def test_default_config_rows_and_generation_speed() -> None:
    cfg = MQARConfig()
    start = time.perf_counter()
    data = MQAR(cfg)
    assert time.perf_counter() - start < 2.0
    inputs, labels = data.test_set()
    assert len(inputs) == cfg.num_test
    _check_rows(cfg, inputs[:200], labels[:200])


def test_large_key_range_uses_distinct_keys() -> None:
    cfg = MQARConfig(vocab_size=8192, seq_len=128, num_kv_pairs=16, num_train=500, num_test=50)
    _check_rows(cfg, *MQAR(cfg).test_set())


def test_train_and_test_are_disjoint() -> None:
    # A tiny space of sequences makes collisions certain unless they are removed.
    # 42 key orders x 56 value orders x 2 slot orders = 4704 sequences; 3000 train rows.
    cfg = MQARConfig(vocab_size=16, seq_len=8, num_kv_pairs=2, num_train=3000, num_test=200, seed=1)
    data = MQAR(cfg)
    train = {tuple(r) for r in data.train_set()[0].tolist()}
    test = [tuple(r) for r in data.test_set()[0].tolist()]
    assert len(test) == 200
    assert not train.intersection(test)


def test_impossible_disjointness_raises() -> None:
    # vocab 6 / seq 4 / 1 pair admits only 2 keys x 3 values x 1 slot = 6 sequences.
    cfg = MQARConfig(vocab_size=6, seq_len=4, num_kv_pairs=1, num_train=500, num_test=10)
    with pytest.raises(ValueError, match="distinct"):
        MQAR(cfg)


def test_determinism_under_seed() -> None:
    a, b, c = MQAR(SMALL), MQAR(SMALL), MQAR(MQARConfig(**{**SMALL.__dict__, "seed": 4}))
    assert torch.equal(a.test_set()[0], b.test_set()[0])
    assert torch.equal(a.train_set()[1], b.train_set()[1])
    assert not torch.equal(a.test_set()[0], c.test_set()[0])
    ba = a.train_batch(8, torch.Generator().manual_seed(7))
    bb = b.train_batch(8, torch.Generator().manual_seed(7))
    assert torch.equal(ba[0], bb[0]) and torch.equal(ba[1], bb[1])


def test_a_secret_draws_another_test_set_and_keeps_the_train_set() -> None:
    """A process that holds the configuration and the generator but not the secret cannot regenerate the test set
    (a candidate's training process: it would memorise the answers); train rows, and disjointness, stay."""
    public, secret, again = MQAR(SMALL), MQAR(SMALL, test_secret=12345), MQAR(SMALL, test_secret=12345)
    assert torch.equal(public.train_set()[0], secret.train_set()[0])
    assert not torch.equal(public.test_set()[0], secret.test_set()[0])
    assert torch.equal(secret.test_set()[0], again.test_set()[0]) and torch.equal(secret.test_set()[1], again.test_set()[1])
    assert not torch.equal(secret.test_set()[0], MQAR(SMALL, test_secret=12346).test_set()[0])
    _check_rows(SMALL, *secret.test_set())
    cfg = MQARConfig(vocab_size=16, seq_len=8, num_kv_pairs=2, num_train=3000, num_test=200, seed=1)
    drawn = MQAR(cfg, test_secret=7)
    assert not {tuple(r) for r in drawn.train_set()[0].tolist()}.intersection(
        tuple(r) for r in drawn.test_set()[0].tolist())
    with pytest.raises(ValueError, match="holds no test set"):
        drawn.training_only().test_set()


def test_test_set_independent_of_train_size() -> None:
    a = MQAR(SMALL)
    b = MQAR(MQARConfig(**{**SMALL.__dict__, "num_train": 1000}))
    assert torch.equal(a.test_set()[0], b.test_set()[0])


def test_query_gaps_favour_short_gaps() -> None:
    # With power_a small, p(gap) ~ gap^(a-1) puts most mass on the first slots.
    cfg = MQARConfig(vocab_size=256, seq_len=128, num_kv_pairs=2, num_train=10, num_test=3000, power_a=0.01)
    inputs, labels = MQAR(cfg).test_set()
    pos = (labels != -100).nonzero()[:, 1].float() - 2 * cfg.num_kv_pairs
    space = (cfg.seq_len - 2 * cfg.num_kv_pairs) // 2
    early = (pos < space).float().mean().item()  # first half of the slots
    assert early > 0.6


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("seq_len", {"seq_len": 15, "num_kv_pairs": 4}),
        ("vocab_size", {"vocab_size": 8, "num_kv_pairs": 4}),
        ("num_kv_pairs", {"num_kv_pairs": 0}),
        ("power_a", {"power_a": 0.0}),
        ("num_train", {"num_train": 0}),
        ("num_test", {"num_test": 0}),
    ],
)
def test_config_validation_names_the_field(field: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=field):
        MQAR(MQARConfig(**kwargs))


def test_accuracy_counts_only_answer_positions(small: MQAR) -> None:
    inputs, labels = small.test_set()
    v = SMALL.vocab_size
    perfect = torch.full((*labels.shape, v), -1.0)
    # right answers at labelled positions, garbage (token 0) elsewhere
    target = torch.where(labels == -100, torch.zeros_like(labels), labels)
    perfect.scatter_(-1, target[..., None], 1.0)
    assert MQAR.accuracy(perfect, labels) == 1.0
    # shift answers for half the rows -> accuracy exactly 0.5
    wrong = perfect.clone()
    half = len(labels) // 2
    wrong[:half] = perfect[:half].roll(1, dims=-1)
    assert MQAR.accuracy(wrong, labels) == pytest.approx(half / len(labels))
    with pytest.raises(ValueError, match="no answer"):
        MQAR.accuracy(perfect[:, :2], labels[:, :2])
