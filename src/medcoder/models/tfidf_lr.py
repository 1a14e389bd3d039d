"""``tfidf_lr.v1``: TF-IDF + logistic regression, the linear baseline of the coding literature.

Features: word n-gram counts -> (sublinear) tf -> idf weighting -> L2 norm,
computed here from the count vocabulary so that training and a reloaded
bundle use the very same arithmetic. Multi-label tasks train one binary
logistic regression per label (one-vs-rest, liblinear); single-label tasks
train one multinomial model. Sentence pairs concatenate the premise block,
the hypothesis block and their element-wise product (shared n-grams).

scikit-learn builds the vocabulary and fits the regressions; coding notes
with a saved model needs only numpy and scipy (scikit-learn takes about 2 s to
import, so :class:`NgramCounter` counts a fixed vocabulary's n-grams exactly
as scikit-learn's ``CountVectorizer`` does). Evidence for a code: the note's
n-grams whose TF-IDF weight times the code's coefficient is largest.

Weights are stored as safetensors arrays + a JSON vocabulary: no pickle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator
from safetensors.numpy import load_file, save_file

from medcoder.config.base import Strict
from medcoder.errors import BundleError, MedcoderError
from medcoder.io import atomic_write_json, read_json_file
from medcoder.models.base import CodingModel, DevSet, Progress, Spans, TaskType
from medcoder.registry import MODELS

# A label that is positive (or negative) in every training document has no
# decision boundary; its logit is pinned far out instead of fitting a model.
_CONSTANT_LOGIT = 12.0
# Starting worker processes costs ~1.5 s on 2 cores: measured on the demo (60
# labels) serial fitting is faster; on CodiEsp (1,767 labels) 2 processes halve it.
_MIN_LABELS_FOR_PROCESSES = 200
_CHUNKS_PER_WORKER = 8  # work items per process: enough for a smooth progress bar, few enough to ship x rarely


class TfidfLrConfig(Strict):
    """TF-IDF features + one-vs-rest (or multinomial) logistic regression."""

    type: Literal["tfidf_lr.v1"] = "tfidf_lr.v1"
    ngram_range: tuple[int, int] = (1, 2)
    min_df: int = Field(2, ge=1)
    max_df: float = Field(1.0, gt=0.0, le=1.0)
    max_features: int | None = Field(None, ge=1)
    sublinear_tf: bool = True
    lowercase: bool = True
    C: float = Field(100.0, gt=0.0)
    class_weight: Literal["balanced"] | None = None
    max_iter: int = Field(1000, ge=1)
    n_jobs: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _ngram_order(self) -> TfidfLrConfig:
        low, high = self.ngram_range
        if not 1 <= low <= high:
            raise ValueError("ngram_range must be (low, high) with 1 <= low <= high")
        return self


# scikit-learn's default token pattern: runs of two or more word characters.
_TOKEN = re.compile(r"(?u)\b\w\w+\b")


class NgramCounter:
    """Counts of a fixed vocabulary's word n-grams: ``CountVectorizer(vocabulary=...).transform``, without scikit-learn.

    Tokens are scikit-learn's (``(?u)\\b\\w\\w+\\b`` on the lower-cased text),
    n-grams are tokens joined by one space, in the same order; the counts equal
    scikit-learn's (checked by the tests).
    """

    def __init__(self, terms: Sequence[str], *, ngram_range: tuple[int, int], lowercase: bool) -> None:
        self.terms = list(terms)
        self.index = {term: i for i, term in enumerate(self.terms)}
        self.ngram_range = ngram_range
        self.lowercase = lowercase

    def tokens(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower() if self.lowercase else text)

    def ngrams(self, tokens: list[str]) -> list[str]:
        low, high = self.ngram_range
        grams = list(tokens) if low == 1 else []
        for n in range(max(low, 2), min(high, len(tokens)) + 1):
            grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        return grams

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """float64 counts ``[n_texts, n_terms]``, indices sorted within each row."""
        indptr, indices = [0], []
        for text in texts:
            found = [self.index[g] for g in self.ngrams(self.tokens(text)) if g in self.index]
            indices.extend(found)
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float64)
        counts = sp.csr_matrix(
            (data, np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
            shape=(len(texts), len(self.terms)),
        )
        counts.sum_duplicates()  # sums repeated n-grams and sorts the indices
        return counts

    def spans(self, text: str) -> dict[int, list[tuple[int, int]]]:
        """``{term index: [(char start, char end), ...]}`` of every vocabulary n-gram occurring in ``text``."""
        matches = list(_TOKEN.finditer(text))
        words = [m.group().lower() if self.lowercase else m.group() for m in matches]
        low, high = self.ngram_range
        found: dict[int, list[tuple[int, int]]] = {}
        for n in range(low, min(high, len(words)) + 1):
            for i in range(len(words) - n + 1):
                term = self.index.get(" ".join(words[i : i + n]))
                if term is not None:
                    found.setdefault(term, []).append((matches[i].start(), matches[i + n - 1].end()))
        return found


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fit_binary_chunk(x: sp.csr_matrix, y: np.ndarray, options: dict[str, object]) -> tuple[np.ndarray, np.ndarray]:
    """One binary liblinear model per column of bool ``y`` ``[n_docs, k]``: (coef ``[k, n_features]``, intercept ``[k]``)."""
    coef = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    intercept = np.zeros(y.shape[1], dtype=np.float32)
    for j in range(y.shape[1]):
        positives = int(y[:, j].sum())
        if positives in (0, y.shape[0]):
            intercept[j] = _CONSTANT_LOGIT if positives else -_CONSTANT_LOGIT
            continue
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(solver="liblinear", **options)
        clf.fit(x, y[:, j].astype(np.int32))
        coef[j], intercept[j] = clf.coef_[0], clf.intercept_[0]
    return coef, intercept


@MODELS.register("tfidf_lr.v1", config=TfidfLrConfig)
class TfidfLogisticRegression(CodingModel):
    """TF-IDF + logistic regression. ``coef_`` is ``[n_labels, n_features]``."""

    weight_files: ClassVar[tuple[str, ...]] = ("model.safetensors", "vocab.json")
    requires: ClassVar[tuple[str, ...]] = ("numpy", "scipy", "scikit-learn", "safetensors")
    config: TfidfLrConfig

    # ------------------------------------------------------------ features
    def _weigh(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """(sublinear) tf x idf, each row scaled to unit L2 norm; ``counts`` must have sorted indices."""
        weights = counts.copy()
        data = weights.data
        if self.config.sublinear_tf:
            np.log(data, out=data)
            data += 1.0
        data *= self.idf_[weights.indices]
        rows = np.repeat(np.arange(weights.shape[0]), np.diff(weights.indptr))
        # bincount adds each row's squares in index order, as scikit-learn's normalize did before
        norms = np.sqrt(np.bincount(rows, weights=data * data, minlength=weights.shape[0]))
        norms[norms == 0.0] = 1.0
        data /= norms[rows]
        return weights

    def _features(self, texts: Sequence[str], pairs: Sequence[str] | None) -> sp.csr_matrix:
        first = self._weigh(self.counter_.transform(texts))
        if self.task != "pair":
            return first
        if pairs is None or len(pairs) != len(texts):
            raise MedcoderError("a pair task needs one second text (text_pair) per note")
        second = self._weigh(self.counter_.transform(pairs))
        return sp.hstack([first, second, first.multiply(second)], format="csr")

    def _fit_features(self, texts: Sequence[str], pairs: Sequence[str] | None) -> sp.csr_matrix:
        from sklearn.feature_extraction.text import CountVectorizer

        cfg = self.config
        corpus = list(texts) + (list(pairs) if pairs is not None else [])
        vectorizer = CountVectorizer(
            ngram_range=tuple(cfg.ngram_range),
            min_df=cfg.min_df,
            max_df=cfg.max_df,
            max_features=cfg.max_features,
            lowercase=cfg.lowercase,
            dtype=np.float64,
        )
        try:
            counts = vectorizer.fit_transform(corpus)
        except ValueError as exc:  # sklearn: empty vocabulary / min_df too high
            raise MedcoderError(f"cannot build TF-IDF features: {exc}") from None
        terms = [str(term) for term in vectorizer.get_feature_names_out()]  # in column order
        self.counter_ = NgramCounter(terms, ngram_range=tuple(cfg.ngram_range), lowercase=cfg.lowercase)
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        n = counts.shape[0]
        self.idf_ = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float64)
        return self._features(texts, pairs)

    # ------------------------------------------------------------ training
    def _binary_options(self) -> dict[str, object]:
        cfg = self.config
        return {"C": cfg.C, "max_iter": cfg.max_iter, "class_weight": cfg.class_weight, "random_state": self.seed}

    def fit(
        self,
        texts: Sequence[str],
        y: np.ndarray,
        *,
        pairs: Sequence[str] | None = None,
        dev: DevSet | None = None,
        work_dir: Path | None = None,
        progress: Progress | None = None,
        spans: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> TfidfLogisticRegression:
        del dev, work_dir, spans  # a convex fit: no early stopping, nothing worth checkpointing
        y = np.asarray(y, dtype=bool)
        if y.shape != (len(texts), self.n_labels):
            raise ValueError(f"y has shape {y.shape}, expected ({len(texts)}, {self.n_labels})")
        x = self._fit_features(texts, pairs)
        if self.single_label:
            self._fit_multiclass(x, y)
            if progress:
                progress(self.n_labels, self.n_labels)
            return self
        # joblib memory-maps large arrays read-only in the workers; sklearn would
        # sort non-canonical CSR indices in place there and fail.
        x.sum_duplicates()
        x.sort_indices()
        n_jobs = self.config.n_jobs if self.n_labels >= _MIN_LABELS_FOR_PROCESSES else 1
        n_chunks = min(self.n_labels, n_jobs * _CHUNKS_PER_WORKER)
        chunks = np.array_split(np.arange(self.n_labels), n_chunks)
        # liblinear holds the GIL, so threads do not help: worker processes do
        # (measured on 2 cores: 2 processes ~4x faster than 2 threads).
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_fit_binary_chunk)(x, y[:, chunk], self._binary_options()) for chunk in chunks
        )
        coef = np.zeros((self.n_labels, x.shape[1]), dtype=np.float32)
        intercept = np.zeros(self.n_labels, dtype=np.float32)
        done = 0
        for chunk, (chunk_coef, chunk_intercept) in zip(chunks, results, strict=True):
            coef[chunk], intercept[chunk] = chunk_coef, chunk_intercept
            done += len(chunk)
            if progress:
                progress(done, self.n_labels)
        self.coef_, self.intercept_ = coef, intercept
        return self

    def _fit_multiclass(self, x: sp.csr_matrix, y: np.ndarray) -> None:
        if not np.all(y.sum(axis=1) == 1):
            raise MedcoderError("a single-label task needs exactly one label per training note")
        target = y.argmax(axis=1)
        present = np.unique(target)
        if len(present) < 2:
            raise MedcoderError("a single-label task needs at least two classes in the training split")
        from sklearn.linear_model import LogisticRegression

        cfg = self.config
        clf = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, class_weight=cfg.class_weight, random_state=self.seed)
        clf.fit(x, target)
        coef = np.zeros((self.n_labels, x.shape[1]), dtype=np.float32)
        # Classes absent from train keep a very low logit: they can never win.
        intercept = np.full(self.n_labels, -1e4, dtype=np.float32)
        if len(present) == 2:  # sklearn stores one row for the binary case
            coef[present[1]], intercept[present[1]] = clf.coef_[0], clf.intercept_[0]
            intercept[present[0]] = 0.0
        else:
            coef[present], intercept[present] = clf.coef_, clf.intercept_
        self.coef_, self.intercept_ = coef, intercept

    # The weights are kept as coef_t_ [features, labels], C-ordered: a sparse [notes, features] matrix times
    # it is one pass. Times coef_.T (a Fortran-ordered view) scipy first copies the whole matrix into C order
    # on every call (and, given float64 features, into float64): 100 ms a call on CodiEsp's 1,767 labels,
    # whatever the number of notes. The features are cast to the weights' float32 instead.
    @property
    def coef_(self) -> np.ndarray:
        """[labels, features] (a view of ``coef_t_``)."""
        return self.coef_t_.T

    @coef_.setter
    def coef_(self, value: np.ndarray) -> None:
        self.coef_t_ = np.ascontiguousarray(np.asarray(value, dtype=np.float32).T)

    # ---------------------------------------------------------- prediction
    def predict_scores(self, texts: Sequence[str], *, pairs: Sequence[str] | None = None) -> np.ndarray:
        logits = np.asarray(self._features(texts, pairs).astype(np.float32) @ self.coef_t_) + self.intercept_
        scores = _softmax(logits) if self.single_label else _sigmoid(logits)
        return scores.astype(np.float32)

    def can_explain(self) -> bool:
        return self.task != "pair"

    def explain(
        self, texts: Sequence[str], label_indices: Sequence[Sequence[int]], *, top: int = 3
    ) -> list[dict[int, Spans]]:
        """Per note and label, the n-grams with the largest tf-idf weight x coefficient, as character spans.

        A span's weight is that product (its contribution to the label's logit);
        only n-grams that raise the score count, and a span inside a stronger one
        is skipped (the unigram "failure" inside "heart failure").
        """
        if self.task == "pair":
            raise MedcoderError("tfidf_lr.v1 cannot explain sentence-pair decisions")
        features = self._features(texts, None)
        results = []
        for row, (text, labels) in enumerate(zip(texts, label_indices, strict=True)):
            start, end = features.indptr[row], features.indptr[row + 1]
            terms, values = features.indices[start:end], features.data[start:end]
            where = self.counter_.spans(text)
            evidence: dict[int, Spans] = {}
            for label in labels:
                contribution = values * self.coef_[label, terms]
                chosen: Spans = []
                for k in np.argsort(-contribution, kind="stable"):
                    if len(chosen) == top or contribution[k] <= 0:
                        break
                    occurrences = where.get(int(terms[k]))
                    if not occurrences:  # lower-casing the whole note tokenised it differently here
                        continue
                    first, last = occurrences[0]
                    if not any(first < e and s < last for s, e, _ in chosen):
                        chosen.append((first, last, float(contribution[k])))
                evidence[label] = chosen
            results.append(evidence)
        return results

    # --------------------------------------------------------- persistence
    def save(self, directory: Path) -> None:
        terms = self.counter_.terms  # in column order
        save_file(
            {"coef": np.ascontiguousarray(self.coef_), "intercept": self.intercept_, "idf": self.idf_},
            str(directory / "model.safetensors"),
            metadata={"format": "medcoder.tfidf_lr.v1"},
        )
        atomic_write_json(directory / "vocab.json", {"format": "medcoder.vocab.v1", "terms": terms})

    @classmethod
    def load(cls, directory: Path, config: TfidfLrConfig, *, n_labels: int, task: TaskType) -> TfidfLogisticRegression:
        model = cls(config, n_labels=n_labels, task=task)
        vocab = read_json_file(directory / "vocab.json")
        if not isinstance(vocab, dict) or vocab.get("format") != "medcoder.vocab.v1":
            raise BundleError(f"{directory / 'vocab.json'}: not a medcoder vocabulary")
        terms = vocab.get("terms")
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise BundleError(f"{directory / 'vocab.json'}: 'terms' must be a list of strings")
        try:
            arrays = load_file(str(directory / "model.safetensors"))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise BundleError(f"{directory / 'model.safetensors'}: unreadable weights ({exc})") from None
        n_features = len(terms) * (3 if task == "pair" else 1)
        expected = {"coef": (n_labels, n_features), "intercept": (n_labels,), "idf": (len(terms),)}
        for name, shape in expected.items():
            if name not in arrays or arrays[name].shape != shape:
                got = arrays[name].shape if name in arrays else "missing"
                raise BundleError(f"{directory / 'model.safetensors'}: tensor {name!r} is {got}, expected {shape}")
        model.counter_ = NgramCounter(terms, ngram_range=tuple(config.ngram_range), lowercase=config.lowercase)
        model.coef_, model.intercept_, model.idf_ = arrays["coef"], arrays["intercept"], arrays["idf"]
        return model

    def describe(self) -> dict[str, int]:
        """Sizes for the model card."""
        return {"n_features": int(self.coef_.shape[1]), "n_labels": self.n_labels}
