"""Sparse linear multi-label learners on LIBLINEAR: one-vs-rest and a label tree.

Both fit binary LIBLINEAR models (the official ``liblinear`` Python binding;
models are read out of its C structures, nothing is pickled):

- ``loss="lr"``: L2-regularised logistic regression (``-s 0``, what
  scikit-learn's ``solver="liblinear"`` runs); ``loss="svm"``: the L2-loss
  (squared hinge) SVM, which the text-classification literature and
  LibMultiLabel find best for sparse TF-IDF, solved in the dual by coordinate
  descent (``-s 1``, LibMultiLabel's default: the same optimum as the primal
  ``-s 2``, 3-4x faster on MIMIC-shaped notes). Both with a regularised bias
  feature (``-B 1``), as scikit-learn's ``intercept_scaling=1``.
- A training matrix is converted to LIBLINEAR's format once per problem and
  shared by all labels trained on it (scikit-learn converts it again for every
  label); LIBLINEAR releases the GIL, so worker threads share the one copy.
- Weights whose magnitude is below ``prune`` are dropped as each label is
  read out, so the full dense ``[features, labels]`` matrix never exists:
  the weights are a CSR matrix ``[features, labels]``, float32.

The label tree follows LibMultiLabel's ``train_tree`` (after Bonsai, Khandagale
et al. 2020): each label is represented by the normalised sum of the TF-IDF
vectors of its training documents; labels are clustered recursively into ``K``
groups by spherical k-means until a group holds at most ``K`` labels (or the
depth reaches ``max_depth``); every node of the tree gets a binary model, trained
only on the documents that carry a label of its parent's subtree (the root's
children on all documents). Prediction walks the tree level by level and keeps,
per note, the ``beam`` best internal nodes of each level; a label's score is the
product of the node probabilities on its path (0 when its parent fell out of the
beam). Training cost falls from ``labels x documents`` to about
``K x documents + labels x (documents of a cluster)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from medcoder.errors import MedcoderError

Loss = Literal["lr", "svm"]
# A label positive (or negative) in every training document has no decision boundary: its logit is pinned.
CONSTANT_LOGIT = 12.0
_SOLVER = {"lr": 0, "svm": 1}
# LIBLINEAR's stopping tolerance when none is given: scikit-learn's for LR (so a model matches its fit);
# for the dual SVM a tenth of LIBLINEAR's default 0.1 (weights within 1e-3 of the primal -s 2 optimum here).
DEFAULT_TOL = {"lr": 1e-4, "svm": 0.01}


def _liblinear():
    try:
        from liblinear import liblinear, liblinearutil
    except ImportError:  # pragma: no cover - a dependency of medcoder
        raise MedcoderError("the linear models need LIBLINEAR: pip install liblinear-official") from None
    return liblinear, liblinearutil


# Features kept per label representation for clustering (its largest; see _strongest).
_REP_FEATURES = 1000
# LibMultiLabel's tree scores a node sigmoid(3 x decision value) (its prob_A): an SVM's margins are about +-1.
_SLOPE = {"lr": 1.0, "svm": 3.0}


def node_probability(decision: np.ndarray, loss: Loss) -> np.ndarray:
    """Decision values -> probabilities: the logistic of the LR logit, of 3 x the SVM margin (as LibMultiLabel)."""
    return 0.5 * (1.0 + np.tanh(0.5 * _SLOPE[loss] * decision))


class _Problem:
    """One LIBLINEAR problem (a converted matrix) whose labels are swapped in place for each binary fit."""

    def __init__(self, x: sp.csr_matrix) -> None:
        liblinear, _ = _liblinear()
        x = sp.csr_matrix(x, dtype=np.float64)
        x.sort_indices()
        self.n_rows, self.n_features = x.shape
        self.problem = liblinear.problem(np.zeros(self.n_rows), x)
        self.problem.set_bias(1.0)
        self.y = np.ctypeslib.as_array(self.problem.y, (self.n_rows,))

    def fit(
        self, y: np.ndarray, *, loss: Loss, C: float, tol: float | None, class_weight: str | None = None
    ) -> tuple[np.ndarray, float] | float:
        """Weights ``[n_features]`` and bias of one binary model; a label constant over the rows gives its pinned logit.

        ``class_weight="balanced"`` weighs each class by ``rows / (2 x its rows)``, as scikit-learn does.
        """
        positives = int(y.sum())
        if positives in (0, self.n_rows):
            return CONSTANT_LOGIT if positives else -CONSTANT_LOGIT
        liblinear, util = _liblinear()
        self.y[:] = np.where(y, 1.0, -1.0)
        options = f"-s {_SOLVER[loss]} -c {C} -e {DEFAULT_TOL[loss] if tol is None else tol} -B 1 -q"
        if class_weight == "balanced":
            n = self.n_rows
            options += f" -w1 {n / (2 * positives)!r} -w-1 {n / (2 * (n - positives))!r}"
        param = liblinear.parameter(options)
        model = util.train(self.problem, param)
        n = model.nr_feature + 1  # + the bias feature
        w = np.ctypeslib.as_array(model.w, (n,)).astype(np.float32)
        if model.get_labels()[0] != 1:  # LIBLINEAR's weights are for its first label
            w = -w
        return w[:-1], float(w[-1])


@dataclass
class LinearColumns:
    """Many binary models as one sparse matrix: ``weights`` CSC ``[n_features, k]``, ``bias`` ``[k]``."""

    weights: sp.csc_matrix
    bias: np.ndarray


def fit_columns(
    x: sp.csr_matrix,
    y: sp.csc_matrix | np.ndarray,
    *,
    loss: Loss,
    C: float,
    tol: float | None,
    prune: float,
    class_weight: str | None = None,
    n_jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> LinearColumns:
    """One binary model per column of ``y`` (bool ``[n_rows, k]``) on features ``x``, weights below ``prune`` dropped.

    ``n_jobs`` threads each train every ``n_jobs``-th column on their own converted copy of ``x``.
    """
    y = sp.csc_matrix(y, dtype=bool) if not sp.issparse(y) else y.tocsc().astype(bool)
    x = sp.csr_matrix(x, dtype=np.float64)
    x.sort_indices()  # once, here: the threads' conversions then only read x
    k = y.shape[1]
    n_jobs = max(1, min(n_jobs, k))
    columns: list[tuple[np.ndarray, np.ndarray] | None] = [None] * k
    bias = np.zeros(k, dtype=np.float32)
    lock = threading.Lock()

    def work(worker: int) -> None:
        problem = _Problem(x)
        target = np.zeros(x.shape[0], dtype=bool)
        for j in range(worker, k, n_jobs):
            target[:] = False
            target[y.indices[y.indptr[j] : y.indptr[j + 1]]] = True
            fitted = problem.fit(target, loss=loss, C=C, tol=tol, class_weight=class_weight)
            if isinstance(fitted, float):
                bias[j] = fitted
                columns[j] = (np.zeros(0, np.int32), np.zeros(0, np.float32))
            else:
                w, bias[j] = fitted
                keep = np.flatnonzero(np.abs(w) >= prune) if prune > 0 else np.flatnonzero(w)
                columns[j] = (keep.astype(np.int32), w[keep])
            if progress is not None:
                with lock:
                    progress(1)

    if n_jobs == 1:
        work(0)
    else:
        with ThreadPoolExecutor(n_jobs) as pool:
            list(pool.map(work, range(n_jobs)))
    lengths = np.array([len(c[0]) for c in columns], dtype=np.int64)  # type: ignore[index]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([c[0] for c in columns]) if k else np.zeros(0, np.int32)  # type: ignore[index]
    data = np.concatenate([c[1] for c in columns]) if k else np.zeros(0, np.float32)  # type: ignore[index]
    weights = sp.csc_matrix((data, indices, indptr), shape=(x.shape[1], k))
    return LinearColumns(weights, bias)


# ---------------------------------------------------------------- label tree
@dataclass
class LabelTree:
    """A fitted tree: nodes in breadth-first order, node 0 the root (no model).

    ``parent[i]`` is node i's parent (-1 for the root); ``label[i]`` the label a
    leaf stands for (-1 for an internal node); ``depth[i]`` its depth; node
    ``i >= 1`` has the model in column ``i - 1`` of ``weights`` (CSR
    ``[n_features, n_nodes - 1]``) and ``bias``.
    """

    parent: np.ndarray
    label: np.ndarray
    depth: np.ndarray
    weights: sp.csr_matrix
    bias: np.ndarray
    loss: Loss
    beam: int

    def scores(self, x: sp.csr_matrix, n_labels: int) -> np.ndarray:
        """Label scores ``[n_notes, n_labels]`` (float32) by beam search; labels off the beam score 0."""
        decision = np.asarray((x.astype(np.float32) @ self.weights).todense()) + self.bias
        prob = node_probability(decision, self.loss).astype(np.float32)
        n_notes = x.shape[0]
        path = np.zeros((n_notes, len(self.parent)), dtype=np.float32)
        path[:, 0] = 1.0
        internal = self.label < 0
        for level in range(1, int(self.depth.max()) + 1):
            nodes = np.flatnonzero(self.depth == level)
            path[:, nodes] = path[:, self.parent[nodes]] * prob[:, nodes - 1]
            inner = nodes[internal[nodes]]
            if len(inner) > self.beam:  # keep each note's `beam` best internal nodes of this level
                level_scores = path[:, inner]
                cut = np.argpartition(-level_scores, self.beam - 1, axis=1)[:, self.beam :]
                rows = np.arange(n_notes)[:, None]
                level_scores[rows, cut] = 0.0
                path[:, inner] = level_scores
        scores = np.zeros((n_notes, n_labels), dtype=np.float32)
        leaves = np.flatnonzero(self.label >= 0)
        scores[:, self.label[leaves]] = path[:, leaves]
        return scores


def _spherical_kmeans(reps: sp.csr_matrix, k: int, seed: int, iterations: int = 15) -> np.ndarray:
    """Cluster the unit rows of ``reps`` into ``k`` groups by cosine similarity; returns each row's group.

    Stops when fewer than 0.1% of the rows change group (or after ``iterations``); every group is
    kept non-empty (an emptied group takes the row least similar to its centre).
    """
    rng = np.random.default_rng(seed)
    n = reps.shape[0]
    reps = reps.astype(np.float32)
    centres = reps[rng.choice(n, size=k, replace=False)].toarray()
    assign = np.full(n, -1)
    for _ in range(iterations):
        similarity = np.asarray(reps @ centres.T)
        new = similarity.argmax(axis=1)
        counts = np.bincount(new, minlength=k)
        for empty in np.flatnonzero(counts == 0):
            far = int(np.argmin(similarity[np.arange(n), new] + (counts[new] <= 1) * 10.0))
            counts[new[far]] -= 1
            new[far] = empty
            counts[empty] = 1
        moved = int(np.sum(new != assign))
        assign = new
        if moved <= n // 1000:
            break
        member = sp.csr_matrix((np.ones(n, dtype=np.float32), (assign, np.arange(n))), shape=(k, n))
        centres = np.asarray((member @ reps).todense())
        centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    return assign


def _strongest(reps: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Each row cut to its ``keep`` largest entries, renormalised: what a label is about, at a fraction of the cost.

    A frequent code's representation sums thousands of notes and holds most of the vocabulary;
    clustering cost grows with those entries, while similarity is decided by the largest ones.
    """
    reps = reps.tocsr()
    lengths = np.diff(reps.indptr)
    if lengths.max(initial=0) <= keep:
        return reps
    rows, cols, vals = [], [], []
    for i in range(reps.shape[0]):
        start, end = reps.indptr[i], reps.indptr[i + 1]
        data = reps.data[start:end]
        top = np.argpartition(-data, keep - 1)[:keep] if end - start > keep else np.arange(end - start)
        rows.append(np.full(len(top), i))
        cols.append(reps.indices[start:end][top])
        vals.append(data[top])
    cut = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=reps.shape)
    return _row_normalize(cut)


def _row_normalize(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ m)


def fit_tree(
    x: sp.csr_matrix,
    y: sp.csr_matrix | np.ndarray,
    *,
    loss: Loss,
    C: float,
    tol: float | None,
    prune: float,
    K: int = 100,
    max_depth: int = 10,
    beam: int = 10,
    seed: int = 0,
    n_jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> LabelTree:
    """Fit a label tree on features ``x`` ``[n_docs, n_features]`` and bool labels ``y`` ``[n_docs, n_labels]``."""
    y = sp.csr_matrix(y, dtype=bool)
    n_labels = y.shape[1]
    if K < 2:
        raise MedcoderError("a label tree needs K >= 2 children per node")
    reps = _strongest(_row_normalize(sp.csr_matrix(y.T.astype(np.float32) @ x.astype(np.float32))), _REP_FEATURES)
    # Build the tree breadth first: each entry (labels of the node, depth, parent id).
    parent, label, depth, groups = [-1], [-1], [0], [np.arange(n_labels)]
    children: dict[int, list[int]] = {}
    queue = [0]
    rng = np.random.default_rng(seed)
    while queue:
        node = queue.pop(0)
        members = groups[node]
        if len(members) <= K or depth[node] + 1 >= max_depth:
            parts = [np.array([m]) for m in members]
        else:
            assign = _spherical_kmeans(reps[members], K, int(rng.integers(2**31)))
            parts = [members[assign == g] for g in range(K)]
        children[node] = []
        for part in parts:
            child = len(parent)
            parent.append(node)
            depth.append(depth[node] + 1)
            groups.append(part)
            is_leaf = len(part) == 1 and len(parts) == len(members)
            label.append(int(part[0]) if is_leaf else -1)
            children[node].append(child)
            if not is_leaf:
                queue.append(child)
    n_nodes = len(parent)
    # Each internal node trains its children's models on the documents that carry one of its labels.
    y_csc = y.tocsc()
    columns: list[LinearColumns | None] = [None] * n_nodes
    internal = [node for node in range(n_nodes) if node in children]
    total = n_nodes - 1
    done = [0]
    lock = threading.Lock()

    def advance(count: int) -> None:
        with lock:
            done[0] += count
            if progress is not None:
                progress(done[0], total)

    def train_node(node: int) -> None:
        sub_x, sub_y = x, y  # the root: every document (no copy)
        if node:
            docs = np.flatnonzero(np.asarray(y_csc[:, groups[node]].sum(axis=1)).ravel() > 0)
            sub_x, sub_y = x[docs], y[docs]
        target = sp.csc_matrix(
            np.column_stack([np.asarray(sub_y[:, groups[c]].sum(axis=1)).ravel() > 0 for c in children[node]])
        )
        columns[node] = fit_columns(sub_x, target, loss=loss, C=C, tol=tol, prune=prune, progress=advance)

    # The root's children train on every document: they run first, the threads sharing the work by node after.
    order = sorted(internal, key=lambda node: -len(groups[node]))
    if n_jobs <= 1:
        for node in order:
            train_node(node)
    else:
        with ThreadPoolExecutor(n_jobs) as pool:
            list(pool.map(train_node, order))
    # Nodes were numbered breadth first with each node's children contiguous: the internal nodes' columns,
    # in node order, are the models of nodes 1 .. n_nodes - 1 in order.
    fitted = [columns[node] for node in internal]
    bias = np.concatenate([c.bias for c in fitted])  # type: ignore[union-attr]
    blocks = [c.weights for c in fitted]  # type: ignore[union-attr]
    columns.clear()
    fitted.clear()
    # CSC blocks side by side are their arrays end to end (one copy, not scipy's hstack + conversion + cast)
    starts = np.cumsum([0] + [b.nnz for b in blocks[:-1]])
    indptr = np.concatenate([[0]] + [b.indptr[1:] + start for b, start in zip(blocks, starts, strict=True)])
    stacked = sp.csc_matrix(
        (np.concatenate([b.data for b in blocks]), np.concatenate([b.indices for b in blocks]), indptr),
        shape=(x.shape[1], n_nodes - 1),
    )
    blocks.clear()
    weights = stacked.tocsr()
    del stacked
    return LabelTree(
        parent=np.array(parent, dtype=np.int32),
        label=np.array(label, dtype=np.int32),
        depth=np.array(depth, dtype=np.int32),
        weights=weights,
        bias=bias,
        loss=loss,
        beam=beam,
    )
