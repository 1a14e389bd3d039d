"""A tiny learnable multi-label corpus shared by the torch model tests: label j is on iff TRIGGERS[j] occurs."""

from __future__ import annotations

import numpy as np

TRIGGERS = ["fever", "cough", "rash", "edema", "syncope", "jaundice"]
FILLER = "patient seen today vitals stable plan follow up in clinic with labs and imaging reviewed".split()


def corpus(n: int, seed: int, *, min_words: int = 10, max_words: int = 30) -> tuple[list[str], np.ndarray]:
    """``n`` notes of filler words with the trigger of every positive label inserted at a random place."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, len(TRIGGERS))) < 0.3
    y[~y.any(axis=1), rng.integers(len(TRIGGERS))] = True
    texts = []
    for row in y:
        words = list(rng.choice(FILLER, size=rng.integers(min_words, max_words)))
        for j in np.flatnonzero(row):
            words.insert(int(rng.integers(len(words) + 1)), TRIGGERS[j])
        texts.append(" ".join(words))
    return texts, y
