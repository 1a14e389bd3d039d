"""Runs one medcoder linear learner on saved features (the counterpart of _libmultilabel_runner.py).

    python bench/_linear_runner.py --train-x X.npz --train-y Y.npz --test-x T.npz --out-dir DIR --spec JSON

``--spec``: ``{"method": "ovr"|"tree", "loss": "lr"|"svm", "C": .., "prunes": [..], "tol": .., "n_jobs": ..,
"K": .., "beam": ..}``. Trains once unpruned; for each prune level (weights below it dropped, exactly what
``prune`` does at training time, since it only filters the weights read out) writes ``scores_<p>.npy``
(float32) and, in ``result.json``, predict_s, weights_nnz, weights_mb as stored (float32 value + int32
index per weight + int64 pointers); plus train_s and peak_rss_mb of this process.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from medcoder.models.linear import fit_columns, fit_tree, node_probability


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--train-x", "--train-y", "--test-x", "--out-dir", "--spec"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    spec = json.loads(args.spec)
    x = sp.load_npz(args.train_x).tocsr()
    y = sp.load_npz(args.train_y).tocsr().astype(bool)
    test = sp.load_npz(args.test_x).tocsr().astype(np.float32)
    common = {"loss": spec["loss"], "C": spec["C"], "tol": spec.get("tol"), "prune": 0.0}
    start = time.perf_counter()
    if spec["method"] == "tree":
        tree = fit_tree(x, y, K=spec.get("K", 100), beam=spec.get("beam", 10), n_jobs=spec.get("n_jobs", 2), **common)
        weights, bias = tree.weights, tree.bias
    else:
        columns = fit_columns(x, y, n_jobs=spec.get("n_jobs", 2), **common)
        weights, bias = columns.weights.tocsr(), columns.bias
    train_s = time.perf_counter() - start
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    levels = {}
    for prune in spec.get("prunes", [0.0]):
        kept = weights.copy()
        kept.data[np.abs(kept.data) < prune] = 0.0
        kept.eliminate_zeros()
        start = time.perf_counter()
        if spec["method"] == "tree":
            tree.weights = kept
            scores = tree.scores(test, y.shape[1])
        else:
            scores = node_probability((test @ kept).toarray() + bias, spec["loss"]).astype(np.float32)
        predict_s = time.perf_counter() - start
        np.save(out / f"scores_{prune:g}.npy", scores.astype(np.float32), allow_pickle=False)
        levels[f"{prune:g}"] = {
            "predict_s": predict_s,
            "weights_nnz": int(kept.nnz),
            "weights_mb": (kept.nnz * 8 + (kept.shape[0] + 1) * 8) / 1e6,
        }
    result = {
        "train_s": train_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "dense_mb": weights.shape[0] * weights.shape[1] * 4 / 1e6,
        "levels": levels,
        "spec": spec,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
