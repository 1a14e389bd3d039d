"""The ICD-knowledge task: catalog texts for every code, mixed into training, teach codes no note carries."""

from __future__ import annotations

import numpy as np
from trigger_corpus import TRIGGERS, corpus

from medcoder.config import RunConfig, validate
from medcoder.data.knowledge import knowledge_texts
from medcoder.models import build_model
from medcoder.models.base import DevSet


def test_knowledge_texts_describe_each_code_and_pair_codes_of_a_chapter() -> None:
    codes = ["M94.0", "I10", "I21.4", "R07.9"]
    descriptions = [
        "Chondrocostal junction syndrome [Tietze]",
        "Essential (primary) hypertension",
        None,
        "Chest pain, unspecified",
    ]
    texts, labels = knowledge_texts(codes, descriptions, system="icd10cm", terms_per_code=2, synthetic_per_code=2)
    assert len(texts) == len(labels)
    assert ("Essential (primary) hypertension", [1]) in zip(texts, labels, strict=True)
    assert all(2 not in row for row in labels)  # no description: no text
    terms = [t for t, row in zip(texts, labels, strict=True) if row == [0] and "ietze" in t.lower()]
    assert terms  # an inclusion term or the description of M94.0
    pairs = [row for row in labels if len(row) == 2]
    assert all(codes[a][0] == codes[b][0] for a, b in pairs)  # a pair stays within its chapter
    assert texts == knowledge_texts(codes, descriptions, system="icd10cm", terms_per_code=2, synthetic_per_code=2)[0]


def test_knowledge_task_lets_a_code_without_training_notes_be_ranked(tiny_bert) -> None:
    """A code no training note carries learns its catalog text's words; a note using them ranks it up."""
    texts, y = corpus(120, seed=0)
    codes = [f"R{i:02d}" for i in range(y.shape[1])] + ["Z99"]
    descriptions = [*TRIGGERS, "zebra"]
    y = np.hstack([y, np.zeros((len(y), 1), dtype=bool)])
    raw = {
        "type": "transformer.v1",
        "encoder": tiny_bert,
        "max_tokens": 48,
        "projection": 32,
        "dropout": 0.0,
        "head_lr": 0.01,
        "knowledge": {"terms_per_code": 0, "synthetic_per_code": 3},
        "train": {"epochs": 12, "batch_size": 16, "lr": 0.002, "warmup_ratio": 0.0, "num_threads": 1},
    }
    scores = {}
    for with_knowledge in (True, False):
        config = validate(
            RunConfig, {"model": {**raw, "knowledge": raw["knowledge"] if with_knowledge else None}}, source="test"
        ).model
        model = build_model(
            config,
            n_labels=y.shape[1],
            task="multilabel",
            seed=0,
            label_codes=codes,
            label_descriptions=descriptions,
            label_system="icd10cm",
        )
        dev_texts, dev_y = corpus(30, seed=1)
        model.fit(texts, y, dev=DevSet(dev_texts, np.hstack([dev_y, np.zeros((30, 1), dtype=bool)])))
        note = ["the patient was seen today zebra plan review"]
        scores[with_knowledge] = model.predict_scores(note)[0]
    unseen = len(codes) - 1

    def rank(s: np.ndarray) -> int:
        return int(np.flatnonzero(np.argsort(-s) == unseen)[0])

    # without the task the code no note carries is last; its catalog text lifts it well up the ranking
    assert rank(scores[False]) == unseen and rank(scores[True]) <= unseen // 2
    assert scores[True][unseen] > 10 * scores[False][unseen]
