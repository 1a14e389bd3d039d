"""The ICD-knowledge task: short labelled texts made from the catalog itself, one source of supervision per code.

Every code of a label space gets texts saying what it is, with no note needed:

- its catalog description ("Nontraumatic compartment syndrome of lower extremity");
- its inclusion terms and "includes" notes (``simple-icd-10-cm``), one per text;
- synthetic note sentences: a clinical template holding its description and
  the description of another code of the same chapter, labelled with both, so
  the texts look a little like notes (several findings, filler words around them).

Mixed into a model's training notes (``knowledge`` of ``transformer.v1``), they
give codes no training note carries (``labels.catalog_codes``) positive examples,
so the trained classifier ranks them instead of scoring them all alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medcoder.data.icd import inclusion_terms

TEMPLATES = (
    "Patient admitted with {a}.",
    "History of {a}. She now presents with {b}.",
    "He was diagnosed with {a} and {b}.",
    "Findings consistent with {a}.",
    "The patient was treated for {a}; {b} was also noted.",
    "Discharge diagnosis: {a}. Comorbidity: {b}.",
)


def knowledge_texts(
    codes: Sequence[str],
    descriptions: Sequence[str | None],
    *,
    system: str,
    terms_per_code: int = 1,
    synthetic_per_code: int = 1,
    seed: int = 0,
) -> tuple[list[str], list[list[int]]]:
    """Texts about the codes and, for each, the indices (into ``codes``) of the codes it is about.

    Per code with a description: the description, up to ``terms_per_code``
    inclusion terms (ICD-10-CM only) and ``synthetic_per_code`` template sentences
    pairing it with another code of its chapter (ICD-10: the same first letter).
    Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    described = [i for i, d in enumerate(descriptions) if d]
    by_chapter: dict[str, list[int]] = {}
    for i in described:
        by_chapter.setdefault(codes[i][:1], []).append(i)
    texts: list[str] = []
    labels: list[list[int]] = []
    for i in described:
        description = str(descriptions[i])
        texts.append(description)
        labels.append([i])
        if terms_per_code:
            for term in inclusion_terms(codes[i], system)[:terms_per_code]:
                texts.append(term)
                labels.append([i])
        peers = by_chapter[codes[i][:1]]
        for _ in range(synthetic_per_code):
            other = int(peers[rng.integers(len(peers))])
            template = TEMPLATES[rng.integers(len(TEMPLATES))]
            if "{b}" in template and other != i:
                texts.append(template.format(a=description.lower(), b=str(descriptions[other]).lower()))
                labels.append(sorted({i, other}))
            else:  # a one-finding template
                texts.append(
                    TEMPLATES[0 if "{b}" in template else TEMPLATES.index(template)].format(a=description.lower())
                )
                labels.append([i])
    return texts, labels
