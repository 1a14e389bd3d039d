"""Word encoding: tokenizer, vocabulary, corpus encoding, length bucketing, collation."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from medcoder.data.encoding import (
    PAD_ID,
    UNK_ID,
    LengthBucketPlan,
    Vocab,
    collate,
    encode_corpus,
    encode_token_lists,
    padding_fraction,
    tokenize,
    tokenize_with_offsets,
)
from medcoder.errors import InputError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Pt w/ T2DM, HbA1c 7.5%; s/p CABG.", ["pt", "w", "t2dm", "hba1c", "7.5", "s", "p", "cabg"]),
        ("Temp 40.2 C. Dx: E11.9 and 250.00", ["temp", "40.2", "c", "dx", "e11.9", "and", "250.00"]),
        ("A 75-year-old man", ["a", "75", "year", "old", "man"]),
        ("2.5mg b.i.d. x5 days.", ["2.5", "mg", "b", "i", "d", "x5", "days"]),
        ("day.5 ... 1..2 .5", ["day", "5", "1", "2", "5"]),
        ("[**Known lastname 123**] pt_id", ["known", "lastname", "123", "pt", "id"]),
        ("Fiebre 38,5°C: niño con ÉPOCA.", ["fiebre", "38", "5", "c", "niño", "con", "época"]),
        ("  --- ;;; ", []),
        ("", []),
    ],
)
def test_tokenize_cases(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_tokenize_can_keep_case() -> None:
    assert tokenize("HbA1c 7.5% in ÉPOCA", lowercase=False) == ["HbA1c", "7.5", "in", "ÉPOCA"]


def _random_text(rng: random.Random, n: int) -> str:
    alphabet = "aZ9 0.5.,;:-_/()[]*%\n\tÉéñ°µ·–\u00a0\u2009İ"
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("lowercase", [True, False])
def test_fast_tokenizer_matches_offsets_on_random_text(lowercase: bool) -> None:
    # Attention positions map to spans through tokenize_with_offsets, so both must agree token for token.
    rng = random.Random(0)
    for n in range(400):
        text = _random_text(rng, n % 60)
        if n % 2:
            text = text.encode("ascii", "ignore").decode()
        spans = tokenize_with_offsets(text, lowercase=lowercase)
        assert tokenize(text, lowercase=lowercase) == [token for token, _, _ in spans], repr(text)


def test_offsets_point_at_the_original_text() -> None:
    text = "Pt w/ T2DM (HbA1c 7.5%), Fiebre 38.5°C; ÉPOCA."
    spans = tokenize_with_offsets(text)
    assert [t for t, _, _ in spans] == tokenize(text)
    assert all(text[start:end].lower() == token for token, start, end in spans)
    assert spans[2] == ("t2dm", 6, 10)
    assert spans[-1] == ("época", 40, 45)


def test_vocab_order_min_count_and_unknowns() -> None:
    docs = [["b", "a", "c"], ["a", "b", "d"], ["a", "e", "c"], ["b"]]
    vocab = Vocab.build(docs, min_count=2)
    # a: 3, b: 3, c: 2 (d and e once): by count, ties by token.
    assert vocab.tokens == ["<pad>", "<unk>", "a", "b", "c"]
    assert len(vocab) == 5
    assert vocab.encode(["c", "a", "zzz", "d"]) == [4, 2, UNK_ID, UNK_ID]
    assert Vocab.build(list(reversed(docs)), min_count=2).tokens == vocab.tokens
    assert Vocab.build(docs, min_count=1, max_size=4).tokens == ["<pad>", "<unk>", "a", "b"]


def test_vocab_json_round_trip(tmp_path) -> None:
    vocab = Vocab.build([["x", "y", "x"], ["y", "z"]], min_count=1, max_size=100)
    vocab.to_json(tmp_path / "vocab.json")
    again = Vocab.from_json(tmp_path / "vocab.json")
    assert again.tokens == vocab.tokens
    assert (again.min_count, again.max_size) == (1, 100)
    assert again.encode(["z", "q"]) == vocab.encode(["z", "q"])
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]


@pytest.mark.parametrize(
    ("content", "field", "words"),
    [
        ({"format": "medcoder.labels.v1", "tokens": []}, "format", "not a medcoder word vocabulary"),
        ({"format": "medcoder.vocab.words.v1", "tokens": ["<pad>", "<unk>"], "min_count": 1}, "max_size", "missing"),
        (
            {"format": "medcoder.vocab.words.v1", "tokens": ["a", "<unk>"], "min_count": 1, "max_size": None},
            "tokens",
            "start with",
        ),
        (
            {
                "format": "medcoder.vocab.words.v1",
                "tokens": ["<pad>", "<unk>", "a", "a"],
                "min_count": 1,
                "max_size": None,
            },
            "tokens",
            "not unique",
        ),
        (
            {
                "format": "medcoder.vocab.words.v1",
                "tokens": ["<pad>", "<unk>"],
                "min_count": 1,
                "max_size": None,
                "x": 1,
            },
            "x",
            "unknown key",
        ),
    ],
)
def test_vocab_rejects_foreign_files(tmp_path, content: dict, field: str, words: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        Vocab.from_json(path)
    assert caught.value.path == str(path) and caught.value.field == field
    assert words in str(caught.value)


def test_vocab_corrupt_json_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "vocab.json"
    path.write_text('{"format": "medcoder.vocab.words.v1",\n "tokens": [', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        Vocab.from_json(path)
    assert caught.value.path == str(path) and caught.value.line == 2


def test_encode_corpus_truncates_and_fills_empty_notes() -> None:
    vocab = Vocab.build([["fever", "cough", "fever", "cough"]], min_count=2)
    corpus = encode_corpus(["Fever, cough and fever.", "...", "cough " * 10], vocab, max_tokens=3)
    fever, cough = vocab.encode(["fever", "cough"])
    assert [row.tolist() for row in corpus.ids] == [[fever, cough, UNK_ID], [UNK_ID], [cough] * 3]
    assert all(row.dtype == np.int32 for row in corpus.ids)
    assert corpus.lengths.tolist() == [3, 1, 3]
    assert corpus.n_truncated == 2
    assert len(corpus) == 3
    same = encode_token_lists([tokenize("Fever, cough and fever."), [], ["cough"] * 10], vocab, max_tokens=3)
    assert [row.tolist() for row in same.ids] == [row.tolist() for row in corpus.ids]


def _plan_lengths(n: int = 1000) -> np.ndarray:
    # Wide, skewed lengths like real notes: 20 to 4,000 tokens.
    return np.clip(np.random.default_rng(7).lognormal(6.0, 1.0, size=n), 20, 4000).astype(np.int64)


@pytest.mark.parametrize(("bucketing", "shuffle"), [(True, True), (False, True), (True, False)])
def test_plan_covers_every_index_once(bucketing: bool, shuffle: bool) -> None:
    lengths = _plan_lengths(1003)
    plan = LengthBucketPlan(lengths, batch_size=16, seed=3, bucketing=bucketing, shuffle=shuffle)
    batches = plan.batches(0)
    assert len(batches) == len(plan) == 63
    assert sorted(i for batch in batches for i in batch) == list(range(1003))
    assert all(1 <= len(batch) <= 16 for batch in batches)


def test_plan_is_deterministic_per_seed_and_epoch() -> None:
    lengths = _plan_lengths()
    plan = LengthBucketPlan(lengths, batch_size=8, seed=3)
    assert plan.batches(2) == LengthBucketPlan(lengths, batch_size=8, seed=3).batches(2)
    assert plan.batches(2) != plan.batches(3)
    assert plan.batches(2) != LengthBucketPlan(lengths, batch_size=8, seed=4).batches(2)
    plain = LengthBucketPlan(lengths, batch_size=8, seed=3, bucketing=False)
    assert plain.batches(1) == plain.batches(1) and plain.batches(1) != plain.batches(2)


def test_plan_without_shuffle_is_sequential() -> None:
    plan = LengthBucketPlan([5, 1, 9, 2, 7], batch_size=2, seed=0, shuffle=False)
    assert plan.batches(0) == plan.batches(5) == [[0, 1], [2, 3], [4]]


def test_bucketing_cuts_padding() -> None:
    lengths = _plan_lengths(4000)
    bucketed = padding_fraction(lengths, LengthBucketPlan(lengths, batch_size=16, seed=0).batches(0))
    plain = padding_fraction(lengths, LengthBucketPlan(lengths, batch_size=16, seed=0, bucketing=False).batches(0))
    assert plain > 0.6
    assert bucketed < 0.1
    assert bucketed < plain / 10


def test_padding_fraction_by_hand() -> None:
    # Batches [3, 1] and [2]: 3*2 + 2*1 = 8 positions, 6 real.
    assert padding_fraction([3, 1, 2], [[0, 1], [2]]) == pytest.approx(0.25)


def _corpus(rows: list[list[int]]):
    vocab = Vocab(["<pad>", "<unk>", *[f"w{i}" for i in range(2, 100)]])
    return encode_corpus([" ".join(f"w{i}" for i in row) for row in rows], vocab, max_tokens=1000)


def test_collate_pads_to_the_longest() -> None:
    corpus = _corpus([[2, 3, 4], [5], [6, 7, 8, 9, 10]])
    labels = np.array([[True, False], [False, False], [True, True]])
    batch = collate(corpus, [2, 0], labels=labels)
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].tolist() == [[6, 7, 8, 9, 10], [2, 3, 4, 0, 0]]
    assert batch["mask"].dtype == torch.bool
    assert batch["mask"].tolist() == [[True] * 5, [True, True, True, False, False]]
    assert batch["lengths"].tolist() == [5, 3]
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [[1.0, 1.0], [1.0, 0.0]]
    assert "labels" not in collate(corpus, [1])
    assert collate(corpus, [1])["input_ids"].shape == (1, 1)


def test_word_dropout_rate_and_determinism() -> None:
    rng = np.random.default_rng(0)
    corpus = _corpus([rng.integers(2, 100, size=200).tolist() for _ in range(50)])
    indices = list(range(50))
    batch = collate(corpus, indices, word_dropout=0.3, seed=1, epoch=2, step=5)
    kept = batch["lengths"].sum().item() / (50 * 200)
    assert kept == pytest.approx(0.7, abs=0.02)
    # Tokens are removed, not masked: every row is a subsequence of its note, padded only at the end.
    for row, length, original in zip(batch["input_ids"], batch["lengths"], corpus.ids, strict=True):
        kept_ids = row[:length].tolist()
        assert (row[length:] == PAD_ID).all() and PAD_ID not in kept_ids
        it = iter(original.tolist())
        assert all(token in it for token in kept_ids)
    again = collate(corpus, indices, word_dropout=0.3, seed=1, epoch=2, step=5)
    assert torch.equal(batch["input_ids"], again["input_ids"])
    for other in ({"step": 6}, {"epoch": 3}, {"seed": 2}):
        changed = collate(corpus, indices, word_dropout=0.3, **({"seed": 1, "epoch": 2, "step": 5} | other))
        assert not torch.equal(batch["input_ids"][:, :50], changed["input_ids"][:, :50])


def test_word_dropout_keeps_at_least_one_token() -> None:
    corpus = _corpus([[2], [3, 4], [5, 6, 7]])
    for step in range(20):
        batch = collate(corpus, [0, 1, 2], word_dropout=0.95, step=step)
        assert batch["lengths"].min().item() >= 1
        assert batch["mask"].sum(dim=1).tolist() == batch["lengths"].tolist()


def test_encoded_corpus_is_one_flat_array_and_tokens_are_streamed() -> None:
    from medcoder.data.encoding import TokenStream, Vocab, encode_token_lists

    texts = [f"note {i} " + "fever cough " * (i % 7) for i in range(300)]
    stream = TokenStream(texts)
    assert len(stream) == 300 and list(stream) == list(stream)  # re-iterable: tokenized afresh on each pass
    vocab = Vocab.build(stream, min_count=1)
    corpus = encode_token_lists(stream, vocab, max_tokens=6)
    flat = corpus.ids.flat
    assert all(np.shares_memory(corpus.ids[i], flat) for i in (0, 150, 299))  # views, not one array per note
    assert flat.dtype == np.int32 and len(flat) == int(corpus.lengths.sum())
    assert corpus.nbytes == flat.nbytes + corpus.lengths.nbytes
    assert corpus.n_truncated == sum(len(t.split()) > 6 for t in texts)
    assert [vocab.tokens[j] for j in corpus.ids[5]] == "note 5 fever cough fever cough".split()
    assert len(corpus.ids[-1]) == corpus.lengths[-1] and len(corpus.ids[2:4]) == 2
