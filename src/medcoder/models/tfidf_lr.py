"""``tfidf_lr.v1``: TF-IDF + logistic regression, the linear baseline of the coding literature.

Features: word n-gram counts -> (sublinear) tf -> idf weighting -> L2 norm,
computed here from the count vocabulary so that training and a reloaded
bundle use the very same arithmetic. Multi-label tasks train binary LIBLINEAR
models (:mod:`medcoder.models.linear`): logistic regression (``loss: lr``) or
the L2-loss SVM (``loss: svm``), both with a bias, one per label (``method:
ovr``) or over a label tree (``method: tree``, for thousands of labels);
weights below ``prune`` are dropped and the rest kept sparse. Single-label
tasks train one multinomial model (scikit-learn). Sentence pairs concatenate the premise block,
the hypothesis block and their element-wise product (shared n-grams).

scikit-learn builds the vocabulary (and fits single-label models); coding notes
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
from medcoder.models.linear import LabelTree, fit_columns, fit_tree, node_probability
from medcoder.registry import MODELS


class TfidfLrConfig(Strict):
    """TF-IDF features + LIBLINEAR binary models (one-vs-rest or a label tree), or multinomial LR (single-label)."""

    type: Literal["tfidf_lr.v1"] = "tfidf_lr.v1"
    ngram_range: tuple[int, int] = (1, 2)
    min_df: int = Field(2, ge=1)
    max_df: float = Field(1.0, gt=0.0, le=1.0)
    max_features: int | None = Field(None, ge=1)
    sublinear_tf: bool = True
    lowercase: bool = True
    C: float = Field(100.0, gt=0.0)
    class_weight: Literal["balanced"] | None = None
    max_iter: int = Field(1000, ge=1)  # single-label (multinomial) fits only; LIBLINEAR stops at tol
    n_jobs: int = Field(2, ge=1)  # threads training binary models (LIBLINEAR releases the GIL)
    loss: Literal["lr", "svm"] = "lr"  # logistic regression (-s 0) or L2-loss SVM (dual, -s 1), both with a bias (-B 1)
    tol: float | None = Field(None, gt=0.0)  # LIBLINEAR's stopping tolerance (-e); None: 1e-4 for lr, 0.01 for svm
    # drop weights with |w| below this (CodiEsp: MAP unchanged at 0.01, bench/linear_compare.py)
    prune: float = Field(0.01, ge=0.0)
    method: Literal["ovr", "tree"] = "ovr"  # one model per label, or a label tree (thousands of labels)
    tree_k: int = Field(100, ge=2)  # children per tree node (LibMultiLabel's K)
    tree_depth: int = Field(10, ge=2)  # the tree's maximum depth
    beam: int = Field(10, ge=1)  # internal nodes kept per level at prediction

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


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@MODELS.register("tfidf_lr.v1", config=TfidfLrConfig)
class TfidfLogisticRegression(CodingModel):
    """TF-IDF + linear models. ``coef_t_`` is ``[n_features, n_columns]``: a column per label, or per tree node."""

    weight_files: ClassVar[tuple[str, ...]] = ("model.safetensors", "vocab.json")
    requires: ClassVar[tuple[str, ...]] = ("numpy", "scipy", "scikit-learn", "liblinear-official", "safetensors")
    tree_: LabelTree | None = None
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
        cfg = self.config
        total = self.n_labels
        # every binary LIBLINEAR model, a tree node's or a label's, is trained with these
        binary = {"loss": cfg.loss, "C": cfg.C, "tol": cfg.tol, "prune": cfg.prune, "n_jobs": cfg.n_jobs}
        if cfg.method == "tree":
            self.tree_ = fit_tree(
                x, y, **binary, K=cfg.tree_k, max_depth=cfg.tree_depth, beam=cfg.beam, seed=self.seed, progress=progress
            )
            self.coef_t_, self.intercept_ = self.tree_.weights, self.tree_.bias
            return self
        done = [0]

        def advance(count: int) -> None:
            done[0] += count
            if progress:
                progress(done[0], total)

        columns = fit_columns(x, y, **binary, class_weight=cfg.class_weight, progress=advance)
        self.coef_t_, self.intercept_ = _compact(columns.weights.tocsr()), columns.bias
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

    # The weights are kept as coef_t_, float32 [features, columns] (a column per label, or per tree node): a CSR
    # matrix, or a C-ordered array where more than half the weights are non-zero (a sparse weight costs 8 bytes,
    # a dense one 4). A sparse [notes, features] matrix (cast to float32) times either reads each weight in
    # place: no copy of the weights on any call.
    @property
    def coef_(self) -> np.ndarray:
        """Dense ``[columns, features]`` weights (for inspection and tests; prediction never builds it)."""
        dense = self.coef_t_.toarray() if sp.issparse(self.coef_t_) else self.coef_t_
        return np.ascontiguousarray(dense.T)

    @coef_.setter
    def coef_(self, value: np.ndarray) -> None:
        self.coef_t_ = _compact(sp.csr_matrix(np.asarray(value, dtype=np.float32).T))

    def _column_of(self, label: int) -> int:
        """The weight column behind ``label``'s score (its leaf's model in a tree)."""
        if self.tree_ is None:
            return label
        return int(np.flatnonzero(self.tree_.label == label)[0]) - 1

    # ---------------------------------------------------------- prediction
    def predict_scores(self, texts: Sequence[str], *, pairs: Sequence[str] | None = None) -> np.ndarray:
        features = self._features(texts, pairs).astype(np.float32)
        if self.tree_ is not None:
            return self.tree_.scores(features, self.n_labels)
        logits = features @ self.coef_t_
        logits = (logits.toarray() if sp.issparse(logits) else np.asarray(logits)) + self.intercept_
        scores = _softmax(logits) if self.single_label else node_probability(logits, self.config.loss)
        return scores.astype(np.float32)

    def can_explain(self) -> bool:
        return self.task != "pair"

    def explain(
        self, texts: Sequence[str], label_indices: Sequence[Sequence[int]], *, top: int = 3
    ) -> list[dict[int, Spans]]:
        """Per note and label, the n-grams with the largest tf-idf weight x coefficient, as character spans.

        A span's weight is that product (its contribution to the label's logit; in a tree, to the logit of
        the label's own node); only n-grams that raise the score count, and a span inside a stronger one
        is skipped (the unigram "failure" inside "heart failure").
        """
        if self.task == "pair":
            raise MedcoderError("tfidf_lr.v1 cannot explain sentence-pair decisions")
        features = self._features(texts, None)
        results = []
        for row, (text, labels) in enumerate(zip(texts, label_indices, strict=True)):
            start, end = features.indptr[row], features.indptr[row + 1]
            terms, values = features.indices[start:end], features.data[start:end]
            weights = self.coef_t_[terms]  # the note's terms' rows of the weights: [terms, columns]
            weights = weights.tocsc() if sp.issparse(weights) else weights
            where = self.counter_.spans(text)
            evidence: dict[int, Spans] = {}
            for label in labels:
                column = weights[:, self._column_of(label)]
                contribution = values * (column.toarray().ravel() if sp.issparse(column) else column)
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
        coef = self.coef_t_
        arrays = {"intercept": np.asarray(self.intercept_, dtype=np.float32), "idf": self.idf_}
        if sp.issparse(coef):
            arrays |= {
                "coef_data": np.asarray(coef.data, dtype=np.float32),
                "coef_indices": np.asarray(coef.indices, dtype=np.int32),
                "coef_indptr": np.asarray(coef.indptr, dtype=np.int64),
                "coef_shape": np.asarray(coef.shape, dtype=np.int64),
            }
        else:  # mostly non-zero: dense [labels, features] is the smaller file
            arrays["coef"] = self.coef_
        if self.tree_ is not None:
            arrays |= {"tree_parent": self.tree_.parent, "tree_label": self.tree_.label, "tree_depth": self.tree_.depth}
        save_file(arrays, str(directory / "model.safetensors"), metadata={"format": "medcoder.tfidf_lr.v2"})
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
        path = directory / "model.safetensors"
        try:
            arrays = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise BundleError(f"{path}: unreadable weights ({exc})") from None
        n_features = len(terms) * (3 if task == "pair" else 1)
        tree = None
        if config.method == "tree":
            tree = _load_tree(arrays, path, config, n_labels)
        n_columns = n_labels if tree is None else len(tree.parent) - 1
        if "coef" in arrays:  # dense [labels, features]: mostly non-zero weights (and bundles before sparse ones)
            _check_shapes(arrays, path, {"coef": (n_labels, n_features)})
            model.coef_ = arrays["coef"]
        else:
            model.coef_t_ = _load_csr(arrays, path, (n_features, n_columns))
        _check_shapes(arrays, path, {"intercept": (n_columns,), "idf": (len(terms),)})
        model.counter_ = NgramCounter(terms, ngram_range=tuple(config.ngram_range), lowercase=config.lowercase)
        model.intercept_, model.idf_ = arrays["intercept"], arrays["idf"]
        if tree is not None:
            tree.weights, tree.bias = model.coef_t_, model.intercept_
            model.tree_ = tree
        return model

    def describe(self) -> dict[str, int]:
        """Sizes for the model card."""
        sizes = {
            "n_features": int(self.coef_t_.shape[0]),
            "n_labels": self.n_labels,
            "n_weights": int(self.coef_t_.nnz if sp.issparse(self.coef_t_) else np.count_nonzero(self.coef_t_)),
        }
        if self.tree_ is not None:
            sizes["n_tree_nodes"] = len(self.tree_.parent)
        return sizes


def _compact(weights: sp.csr_matrix) -> sp.csr_matrix | np.ndarray:
    """``weights`` as CSR, or as a C-ordered float32 array when that is smaller (over half of them non-zero)."""
    if weights.nnz * 2 > weights.shape[0] * weights.shape[1]:
        return np.ascontiguousarray(weights.toarray(), dtype=np.float32)
    return weights


def _check_shapes(arrays: dict[str, np.ndarray], path: Path, expected: dict[str, tuple[int, ...]]) -> None:
    for name, shape in expected.items():
        if name not in arrays or arrays[name].shape != shape:
            got = arrays[name].shape if name in arrays else "missing"
            raise BundleError(f"{path}: tensor {name!r} is {got}, expected {shape}")


def _load_csr(arrays: dict[str, np.ndarray], path: Path, shape: tuple[int, int]) -> sp.csr_matrix:
    """The weights' CSR arrays, checked so that a damaged file is an error, not a wrong answer."""
    _check_shapes(arrays, path, {"coef_shape": (2,), "coef_indptr": (shape[0] + 1,)})
    if tuple(int(v) for v in arrays["coef_shape"]) != shape:
        got = tuple(int(v) for v in arrays["coef_shape"])
        raise BundleError(f"{path}: tensor 'coef_shape' says the weights are {got}, expected {shape}")
    data, indices, indptr = arrays.get("coef_data"), arrays.get("coef_indices"), arrays["coef_indptr"]
    if data is None or indices is None or data.shape != indices.shape or data.ndim != 1:
        raise BundleError(f"{path}: tensors 'coef_data' and 'coef_indices' must be equally long vectors")
    valid = (
        indptr[0] == 0
        and indptr[-1] == len(data)
        and bool(np.all(np.diff(indptr) >= 0))
        and (len(indices) == 0 or (int(indices.min()) >= 0 and int(indices.max()) < shape[1]))
    )
    if not valid:
        raise BundleError(f"{path}: the sparse weights are damaged (index pointers or column indices out of range)")
    return sp.csr_matrix((data.astype(np.float32, copy=False), indices, indptr), shape=shape)


def _load_tree(arrays: dict[str, np.ndarray], path: Path, config: TfidfLrConfig, n_labels: int) -> LabelTree:
    names = ("tree_parent", "tree_label", "tree_depth")
    if any(name not in arrays for name in names):
        raise BundleError(f"{path}: the config says method 'tree' but the tree's tensors are missing")
    parent, label, depth = (arrays[name].astype(np.int32) for name in names)
    n = len(parent)
    leaves = label[label >= 0]
    valid = (
        parent.shape == label.shape == depth.shape == (n,)
        and n >= 2
        and parent[0] == -1
        and bool(np.all((parent[1:] >= 0) & (parent[1:] < np.arange(1, n))))
        and bool(np.all(depth[1:] == depth[parent[1:]] + 1))
        and sorted(leaves.tolist()) == list(range(n_labels))
    )
    if not valid:
        raise BundleError(f"{path}: the label tree is damaged or does not cover the {n_labels} labels")
    empty = sp.csr_matrix((0, 0), dtype=np.float32)
    return LabelTree(parent, label, depth, empty, np.zeros(0, np.float32), config.loss, config.beam)
