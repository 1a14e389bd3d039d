"""Train and predict with LibMultiLabel's linear methods; runs INSIDE the LibMultiLabel venv, not medcoder's.

Started by ``bench/_libmultilabel.py:run`` as ``VENV/bin/python -I _libmultilabel_runner.py ...``;
it imports nothing from medcoder (that environment does not have it). Inputs are scipy CSR
``.npz`` files (``scipy.sparse.save_npz``: no pickle): features (float) and 0/1 labels. Outputs in
``--out-dir``: ``scores.npy`` (float32 ``[n_test, n_labels]``, written with ``allow_pickle=False``)
and ``result.json`` (timings, ``ru_maxrss``, versions); the JSON is also the last line on stdout.

Scores: ``1vsrest`` gives LIBLINEAR decision values ``w . [x, bias]`` (LibMultiLabel predicts a
label when its value is > 0); ``tree`` gives ``TreeModel.predict_values`` probability estimates
(the product of ``sigmoid(prob_A * decision value)`` along the root-to-label path for labels in
the final beam, exactly 0 for every other label).

Threads: LibMultiLabel 0.10.0 has no thread argument. ``train_1vsrest`` starts
``psutil.cpu_count(logical=False)`` Python threads, each training whole labels with LIBLINEAR
through ctypes (which releases the GIL), and strips LIBLINEAR's own ``-m`` (multicore) option so
the two do not nest (``libmultilabel/linear/linear.py``: ``train_1vsrest`` and
``ParallelOVRTrainer.init_trainer``). This runner sets that thread count to ``--threads`` by giving
``libmultilabel.linear.linear`` a ``psutil`` whose ``cpu_count`` returns it. ``train_tree`` trains
its nodes one after another, each through ``train_1vsrest``, so the same count applies there.
The tree's k-means (sparsekmeans, GraphBLAS) gets ``n_threads=--threads`` the same way (LibMultiLabel
leaves it at sparsekmeans' default ``os.cpu_count() // 2``); the caller also sets ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

TRAIN_KWARGS = ("K", "dmax")
PREDICT_KWARGS = ("beam_width", "prob_A")


class _ThreadCountPsutil:
    """``psutil`` as libmultilabel.linear.linear sees it, with ``cpu_count`` pinned to the thread count we want."""

    def __init__(self, real, threads: int) -> None:
        self._real = real
        self._threads = threads

    def cpu_count(self, logical: bool = True) -> int:
        return self._threads

    def __getattr__(self, name: str):
        return getattr(self._real, name)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-x", type=Path, required=True)
    parser.add_argument("--train-y", type=Path, required=True)
    parser.add_argument("--test-x", type=Path, required=True)
    parser.add_argument("--method", choices=("1vsrest", "tree"), required=True)
    parser.add_argument("--options", default="-s 2 -B 1 -e 0.0001 -q", help="LIBLINEAR options")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="numpy's global seed (the tree's k-means seeds from it)")
    parser.add_argument("--tree-kwargs", default="{}", help="JSON: K, dmax (train_tree), beam_width, prob_A (predict)")
    args = parser.parse_args(argv)
    tree_kwargs = json.loads(args.tree_kwargs)
    unknown = set(tree_kwargs) - set(TRAIN_KWARGS) - set(PREDICT_KWARGS)
    if unknown:
        parser.error(f"unknown tree kwargs {sorted(unknown)}")
    if args.method != "tree" and tree_kwargs:
        parser.error("tree kwargs are only for --method tree")
    if args.threads < 1:
        parser.error("--threads must be >= 1")

    import libmultilabel
    import libmultilabel.linear as linear
    import libmultilabel.linear.linear as linear_module
    import libmultilabel.linear.tree as tree_module
    import numpy as np
    import psutil
    import scipy.sparse as sp

    linear_module.psutil = _ThreadCountPsutil(psutil, args.threads)
    # train_tree builds sparsekmeans' LloydKmeans / ElkanKmeans without n_threads (default cpu_count // 2)
    tree_module.LloydKmeans = functools.partial(tree_module.LloydKmeans, n_threads=args.threads)
    tree_module.ElkanKmeans = functools.partial(tree_module.ElkanKmeans, n_threads=args.threads)

    start = time.perf_counter()
    x = sp.load_npz(args.train_x).tocsr().astype(np.float64)
    y = sp.csr_matrix(sp.load_npz(args.train_y) != 0, dtype=np.float64)  # 0/1, whatever dtype it was saved in
    x_test = sp.load_npz(args.test_x).tocsr().astype(np.float64)
    load_s = time.perf_counter() - start
    if x.shape[0] != y.shape[0]:
        raise SystemExit(f"train x has {x.shape[0]} rows, train y {y.shape[0]}")
    if x_test.shape[1] != x.shape[1]:
        raise SystemExit(f"test x has {x_test.shape[1]} features, train x {x.shape[1]}")
    rss_after_load = _rss_mb()

    np.random.seed(args.seed)
    train_kwargs = {k: v for k, v in tree_kwargs.items() if k in TRAIN_KWARGS}
    predict_kwargs = {k: v for k, v in tree_kwargs.items() if k in PREDICT_KWARGS}
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.method == "1vsrest":
        model = linear.train_1vsrest(y, x, options=args.options, verbose=False)
    else:
        model = linear.train_tree(y, x, options=args.options, verbose=False, **train_kwargs)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start

    start, cpu_start = time.perf_counter(), time.process_time()
    if args.method == "1vsrest":
        scores = linear.predict_values(model, x_test)
    else:
        scores = model.predict_values(x_test, **predict_kwargs)
    predict_s, predict_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    scores = np.asarray(scores, dtype=np.float32)

    tree_info = None
    if args.method == "tree":
        depth = {"internal": 0, "leaves": 0, "max_depth": 0, "root_children": len(model.root.children)}

        def walk(node, d: int) -> None:
            depth["max_depth"] = max(depth["max_depth"], d)
            depth["leaves" if node.isLeaf() else "internal"] += 1
            for child in node.children:
                walk(child, d + 1)

        walk(model.root, 0)
        tree_info = depth

    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.save(args.out_dir / "scores.npy", scores, allow_pickle=False)
    from importlib.metadata import version

    result = {
        "method": args.method,
        "options": args.options,
        "tree_kwargs": tree_kwargs,
        "threads": args.threads,
        "thread_mechanism": "train_1vsrest Python threads = psutil.cpu_count pinned (LIBLINEAR -m is stripped by it); "
        "k-means n_threads",
        "seed": args.seed,
        "n_train": int(x.shape[0]),
        "n_features": int(x.shape[1]),
        "n_labels": int(y.shape[1]),
        "n_test": int(x_test.shape[0]),
        "load_s": load_s,
        "train_s": train_s,
        "predict_s": predict_s,
        "train_cpu_s": train_cpu_s,  # CPU time of all the process's threads: > train_s means they ran in parallel
        "predict_cpu_s": predict_cpu_s,
        "rss_after_load_mb": rss_after_load,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # Linux: KiB
        "tree": tree_info,
        "versions": {
            "python": platform.python_version(),
            "libmultilabel": getattr(libmultilabel, "__version__", None) or version("libmultilabel"),
            "liblinear-multicore": version("liblinear-multicore"),
            "numpy": np.__version__,
            "scipy": version("scipy"),
        },
        "scores_file": "scores.npy",
    }
    text = json.dumps(result, indent=1)
    (args.out_dir / "result.json").write_text(text + "\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
