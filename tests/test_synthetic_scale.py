"""The MIMIC-size synthetic corpus: deterministic per note, long-tailed, streamed to JSONL, learnable."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from medcoder.config import DataConfig
from medcoder.data.sources.synthetic_scale import ScaleSource
from medcoder.data.synthetic_scale import SHAPES, iter_scale_notes, scale_note, write_scale_corpus

SMALL = {"n_train": 400, "n_dev": 50, "n_test": 50, "n_codes": 300, "vocab_size": 3_000, "words_per_note": 200}


def test_each_note_depends_on_seed_and_index_only() -> None:
    config = ScaleSource(**SMALL)
    whole = list(iter_scale_notes(config))
    assert len(whole) == 500 and len({n.id for n in whole}) == 500
    assert list(iter_scale_notes(config, 120, 125)) == whole[120:125]  # a slice alone: same notes
    assert scale_note(config, 7) == whole[7]
    other = scale_note(ScaleSource(**SMALL, seed=1), 7)
    assert other.text != whole[7].text
    assert [n.split for n in whole].count("train") == 400 and whole[-1].split == "test" and whole[420].split == "dev"


def test_sizes_and_long_tail() -> None:
    config = ScaleSource(**SMALL, codes_per_note=8.0)
    notes = list(iter_scale_notes(config))
    words = [len(n.text.split()) for n in notes]
    assert 190 <= np.median(words) <= 215
    per_note = np.mean([len(n.labels) for n in notes])
    assert 7.0 < per_note < 9.0
    freq = Counter(code for n in notes for code in n.labels)
    counts = sorted(freq.values(), reverse=True)
    # Zipf: the commonest code is in a large share of notes, and most codes are rare
    assert counts[0] > 0.3 * len(notes)
    assert sum(c < 5 for c in counts) > 0.4 * len(counts)
    assert all(len(set(n.labels)) == len(n.labels) for n in notes)


def test_shapes_fill_the_benchmark_sizes() -> None:
    mimic3 = ScaleSource(shape="mimic3-full")
    assert (mimic3.n_train, mimic3.n_dev, mimic3.n_test, mimic3.n_codes) == SHAPES["mimic3-full"]
    assert mimic3.n_notes == 52_726
    assert ScaleSource(shape="mimic4-icd10", n_codes=500).n_codes == 500  # a size given wins over the shape's
    config = DataConfig.model_validate({"source": {"kind": "synthetic_scale", **SMALL}})
    assert isinstance(config.source, ScaleSource)


def test_written_corpus_streams_to_jsonl_and_reads_back(tmp_path) -> None:
    config = ScaleSource(**SMALL)
    path = tmp_path / "corpus.jsonl"
    seen = []
    assert write_scale_corpus(config, path, progress=lambda done, total: seen.append((done, total))) == 500
    assert seen[-1] == (500, 500) and not list(tmp_path.glob(".*.tmp"))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    first = scale_note(config, 0)
    assert records[0] == {"id": first.id, "text": first.text, "labels": list(first.labels), "split": "train"}


def test_codes_are_learnable_from_their_titles() -> None:
    """A coded condition is mentioned by its title: a note's codes' title words are in its text, negations aside."""
    config = ScaleSource(**SMALL)
    from medcoder.data.icd import describe

    hits = []
    for note in iter_scale_notes(config, 0, 50):
        text = note.text.lower()
        for code in note.labels:
            title = describe(code, "icd10cm").lower().replace(",", "").split()
            hits.append(np.mean([word in text for word in title]))
    assert np.mean(hits) > 0.8


def test_codes_of_a_comorbidity_topic_occur_together() -> None:
    from medcoder.data.synthetic_scale import _vocabulary

    config = ScaleSource(**SMALL)
    vocab = _vocabulary(config.n_codes, config.vocab_size, config.zipf_exponent, config.seed)
    topic = {vocab.codes[c]: t for t, members in enumerate(vocab.topic_codes) for c in members}
    same = pairs = 0
    notes = list(iter_scale_notes(config, 0, 200))
    share = np.bincount([topic[code] for n in notes for code in n.labels], minlength=6).astype(float)
    chance = float(np.sum((share / share.sum()) ** 2))  # two independent codes share a topic this often
    for note in notes:
        labels = note.labels
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                pairs += 1
                same += topic[labels[i]] == topic[labels[j]]
    assert len(vocab.topic_codes) == 6
    assert same / pairs > 1.5 * chance


def test_synthesize_command_writes_a_scaled_benchmark_shape(cli, tmp_path) -> None:
    out = tmp_path / "corpus.jsonl"
    result = cli("synthesize", out, "--fraction", "0.001", "--n-codes", "400", "--seed", "3")
    assert result.code == 0, result.err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    splits = Counter(r["split"] for r in records)
    assert splits == {"train": 48, "dev": 2, "test": 3}  # 0.1% of 47,723 / 1,631 / 3,372
    config = ScaleSource(shape="mimic3-full", n_train=48, n_dev=2, n_test=3, n_codes=400, seed=3)
    assert records[10]["text"] == scale_note(config, 10).text
    bad = cli("synthesize", out, "--shape", "mimic5")
    assert bad.code == 2 and "--shape must be one of mimic3-full, mimic4-icd10" in bad.err
