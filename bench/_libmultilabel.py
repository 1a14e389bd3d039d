"""LibMultiLabel (linear part) as a comparison baseline, installed by the bench in its own venv.

LibMultiLabel (PyPI ``libmultilabel``) trains one-vs-rest LIBLINEAR models (``train_1vsrest``)
and a k-means label tree (``train_tree``). It is not a medcoder dependency: :func:`ensure_env`
creates ``$MEDCODER_BENCH_CACHE/libmultilabel-venv`` (default cache ``~/.cache/medcoder-bench``)
once and pip-installs pinned versions there. Its linear part needs no torch; the pins below are
the full dependency closure of ``libmultilabel==0.10.0`` without its ``nn`` extra (no torch, no
CUDA; ``liblinear-multicore`` is a source tarball compiled by gcc at install time).

:func:`run` writes nothing itself: the caller saves CSR ``.npz`` files (``scipy.sparse.save_npz``)
and gets back the scores that ``bench/_libmultilabel_runner.py`` computed in the venv.

    .venv/bin/python bench/_libmultilabel.py smoke              # random 2,000 x 5,000 x 300 problem
    .venv/bin/python bench/_libmultilabel.py codiesp [--config configs/codiesp_tfidf_unigram.yaml]

Importing this module imports only the standard library (numpy is imported inside :func:`run`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().with_name("_libmultilabel_runner.py")
LIBMULTILABEL_VERSION = "0.10.0"
# pip's resolution of libmultilabel==0.10.0 (Python 3.11, 2026) with the pins medcoder's own
# constraints.txt shares where the two overlap; installed as a constraints file.
PINS = (
    f"libmultilabel=={LIBMULTILABEL_VERSION}",
    "liblinear-multicore==2.50.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "scikit-learn==1.9.1",
    "pandas==3.1.1",
    "numba==0.68.1",
    "llvmlite==0.50.0",
    "sparsekmeans==0.3.1",
    "python-graphblas==2025.2.0",
    "suitesparse-graphblas==9.4.5.0",
    "psutil==7.2.2",
    "PyYAML==6.0.4",
    "tqdm==4.70.1",
    "joblib==1.6.0",
    "threadpoolctl==3.8.0",
    "python-dateutil==4.0.0",
    "tzdata==2026.6",
    "narwhals==2.29.0",
    "cloudpickle==3.1.3",
    "donfig==0.8.1.post1",
    "cffi==2.1.1",
    "pycparser==3.12",
)
DEFAULT_OPTIONS = "-s 2 -B 1 -e 0.0001 -q"
TREE_KWARGS = ("K", "dmax", "beam_width", "prob_A")
_MARKER = ".medcoder-ok.json"
_checked: dict[Path, Path] = {}  # venv -> its python, once verified in this process


def cache_dir() -> Path:
    return Path(os.environ.get("MEDCODER_BENCH_CACHE") or "~/.cache/medcoder-bench").expanduser()


def _pins_digest() -> str:
    return hashlib.sha256("\n".join(PINS).encode()).hexdigest()[:16]


def _clean_env(threads: int | None = None) -> dict[str, str]:
    """The environment for the venv's processes: no medcoder venv or PYTHONPATH leaking in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[name] = str(threads)
    return env


def _works(python: Path) -> bool:
    """The venv imports LibMultiLabel's linear part, at the pinned version, and has no torch."""
    if not python.exists():
        return False
    probe = (
        "import importlib.metadata as m, importlib.util as u, libmultilabel.linear, liblinear.liblinearutil;"
        f"assert m.version('libmultilabel') == {LIBMULTILABEL_VERSION!r};"
        "assert u.find_spec('torch') is None, 'torch is installed'"
    )
    done = subprocess.run(
        [str(python), "-I", "-c", probe], env=_clean_env(1), capture_output=True, text=True, timeout=600
    )
    return done.returncode == 0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file, so two bench scripts do not build the same venv at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_env(*, quiet: bool = False) -> Path:
    """The python of a working LibMultiLabel venv, created under :func:`cache_dir` on first use.

    Reused when its marker names the same pins and it imports ``libmultilabel.linear``; otherwise it
    is removed and built again. Raises ``SystemExit`` with a one-line message when the build fails
    (the pip log stays in the cache folder).
    """
    venv = cache_dir() / "libmultilabel-venv"
    python = venv / "bin" / "python"
    if venv in _checked:
        return _checked[venv]
    with _locked(cache_dir() / "libmultilabel-venv.lock"):
        marker = venv / _MARKER
        try:
            recorded = json.loads(marker.read_text()).get("pins")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded == _pins_digest() and _works(python):
            _checked[venv] = python
            return python
        log_path = cache_dir() / "libmultilabel-install.log"
        if venv.exists():
            shutil.rmtree(venv)
        say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
        say(f"libmultilabel: building {venv} (pip, compiles liblinear-multicore; a few minutes)")
        start = time.perf_counter()
        with open(log_path, "w") as log:

            def step(command: list[str], what: str) -> None:
                log.write(f"$ {' '.join(command)}\n")
                log.flush()
                done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=_clean_env(2))
                if done.returncode != 0:
                    raise SystemExit(f"libmultilabel venv: {what} failed (exit {done.returncode}); see {log_path}")

            step([sys.executable, "-m", "venv", str(venv)], "creating the venv")
            constraints = venv / "constraints.txt"
            constraints.write_text("\n".join(PINS) + "\n")
            pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
            step([*pip, "-c", str(constraints), f"libmultilabel=={LIBMULTILABEL_VERSION}"], "pip install")
        if not _works(python):
            raise SystemExit(f"libmultilabel venv: installed, but `import libmultilabel.linear` fails; see {log_path}")
        marker.write_text(json.dumps({"pins": _pins_digest(), "libmultilabel": LIBMULTILABEL_VERSION}) + "\n")
        say(f"libmultilabel: venv ready in {time.perf_counter() - start:.0f} s")
    _checked[venv] = python
    return python


def run(
    python: Path,
    train_x: Path,
    train_y: Path,
    test_x: Path,
    *,
    method: Literal["1vsrest", "tree"],
    options: str = DEFAULT_OPTIONS,
    out_dir: Path,
    threads: int = 2,
    seed: int = 0,
    **tree_kwargs: Any,
) -> dict[str, Any]:
    """Train LibMultiLabel's ``method`` on (train_x, train_y) and score test_x, in the venv of ``python``.

    Args:
        python: from :func:`ensure_env`.
        train_x, train_y, test_x: ``scipy.sparse.save_npz`` CSR files: float features
            ``[n_train, n_features]``, 0/1 labels ``[n_train, n_labels]``, ``[n_test, n_features]``.
        method: ``"1vsrest"`` (``train_1vsrest``) or ``"tree"`` (``train_tree``).
        options: LIBLINEAR options (``-s 2 -B 1``: L2-regularised L2-loss SVM, dual, bias feature 1).
        out_dir: the runner's outputs (``scores.npy``, ``result.json``, ``runner.log``).
        threads: LibMultiLabel's training threads (see the runner's docstring) and OMP/numba threads.
        seed: numpy's global seed in the runner (the tree's k-means random states come from it).
        tree_kwargs: ``K``, ``dmax`` for ``train_tree``; ``beam_width``, ``prob_A`` for its prediction.

    Returns:
        ``{"scores": float32 [n_test, n_labels], "train_s", "predict_s", "peak_rss_mb", "options", ...}``
        plus the rest of the runner's ``result.json`` (versions, tree shape, load time).
    """
    import numpy as np

    if method not in ("1vsrest", "tree"):
        raise ValueError(f"method must be '1vsrest' or 'tree', got {method!r}")
    unknown = set(tree_kwargs) - set(TREE_KWARGS)
    if unknown or (method != "tree" and tree_kwargs):
        raise TypeError(f"unexpected keyword arguments for {method}: {sorted(tree_kwargs)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("scores.npy", "result.json"):
        (out_dir / stale).unlink(missing_ok=True)
    command = [
        str(python), "-I", str(RUNNER),
        "--train-x", str(train_x), "--train-y", str(train_y), "--test-x", str(test_x),
        "--method", method, "--options", options, "--out-dir", str(out_dir),
        "--threads", str(threads), "--seed", str(seed), "--tree-kwargs", json.dumps(tree_kwargs),
    ]  # fmt: skip
    log_path = out_dir / "runner.log"
    with open(log_path, "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=_clean_env(threads))
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"libmultilabel {method} failed (exit {done.returncode}); {log_path}:\n" + "\n".join(tail))
    result = json.loads((out_dir / "result.json").read_text())
    result["scores"] = np.load(out_dir / result.pop("scores_file"), allow_pickle=False)
    return result


# ---------------------------------------------------------------- checks (python bench/_libmultilabel.py ...)


def _smoke(args) -> int:
    """A random sparse problem: both methods train and predict; prints timings and P@1."""
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n_docs, n_test, n_features, n_labels = args.docs, 500, args.features, args.labels
    x = sp.random(n_docs + n_test, n_features, density=0.01, format="csr", random_state=rng, dtype=np.float64)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
    x = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x)
    w = sp.random(n_features, n_labels, density=0.02, format="csr", random_state=rng).toarray()
    z = x @ w
    top = np.argsort(-z, axis=1)[:, :3]  # 3 gold labels per doc: the 3 largest hidden scores
    y = np.zeros(z.shape, dtype=np.float64)
    np.put_along_axis(y, top, 1.0, axis=1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sp.save_npz(work / "train_x.npz", x[:n_docs])
    sp.save_npz(work / "train_y.npz", sp.csr_matrix(y[:n_docs]))
    sp.save_npz(work / "test_x.npz", x[n_docs:])
    start = time.perf_counter()
    python = ensure_env()
    print(f"env: {python} ({time.perf_counter() - start:.1f} s)")
    print(f"problem: {n_docs} train / {n_test} test docs, {n_features} features, {n_labels} labels")
    for method in ("1vsrest", "tree"):
        out = run(
            python,
            work / "train_x.npz",
            work / "train_y.npz",
            work / "test_x.npz",
            method=method,
            out_dir=work / method,
            threads=args.threads,
        )
        scores = out["scores"]
        p1 = float(y[n_docs:][np.arange(n_test), scores.argmax(axis=1)].mean())
        print(
            f"{method:8s} train {out['train_s']:.2f} s (CPU {out['train_cpu_s']:.2f} s)  predict {out['predict_s']:.3f} s  "
            f"peak RSS {out['peak_rss_mb']:.0f} MB  scores {scores.shape} {scores.dtype}  P@1 {p1:.3f}"
            + (f"  tree {out['tree']}" if out["tree"] else "")
        )
    return 0


def _codiesp(args) -> int:
    """LibMultiLabel 1vsrest and tree on medcoder's TF-IDF features of CodiEsp-D EN (official split)."""
    import numpy as np
    import scipy.sparse as sp

    from medcoder.config import load_config
    from medcoder.data.dataset import fit_label_space, load_dataset, texts_of
    from medcoder.evaluation.scoring import evaluate_multilabel
    from medcoder.evaluation.thresholds import Thresholds
    from medcoder.models.base import build_model

    config = load_config(args.config, "train")
    if config.model.type != "tfidf_lr.v1":
        raise SystemExit(f"{args.config}: expected a tfidf_lr.v1 model, got {config.model.type}")
    splits = load_dataset(config.data)
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    labels = fit_label_space(config.labels, config.task.type, train)
    model = build_model(config.model, n_labels=len(labels), task=config.task.type, seed=config.seed)
    start = time.perf_counter()
    x_train = model._fit_features(texts_of(train)[0], None)
    x_eval = model._features(texts_of(dev)[0] + texts_of(test)[0], None)  # dev rows first, then test
    features_s = time.perf_counter() - start
    y_train = labels.transform([n.labels for n in train])
    y_dev = labels.transform([n.labels for n in dev])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sp.save_npz(work / "train_x.npz", sp.csr_matrix(x_train))
    sp.save_npz(work / "train_y.npz", sp.csr_matrix(np.asarray(y_train, dtype=np.float64)))
    sp.save_npz(work / "eval_x.npz", sp.csr_matrix(x_eval))
    print(
        f"{args.config}: {model.config.ngram_range} grams, min_df {model.config.min_df}, "
        f"sublinear_tf {model.config.sublinear_tf}: {x_train.shape[1]} features ({features_s:.1f} s); "
        f"{len(train)}/{len(dev)}/{len(test)} docs, {len(labels)} train labels"
    )
    python = ensure_env()
    gold = [labels.map_labels(n.labels) for n in test]
    rows = []
    runs = [("1vsrest", {})] + [("tree", {"beam_width": b}) for b in args.beams]
    for method, kwargs in runs:
        out = run(
            python,
            work / "train_x.npz",
            work / "train_y.npz",
            work / "eval_x.npz",
            method=method,
            options=args.options,
            out_dir=work / f"{method}{kwargs.get('beam_width', '')}",
            threads=args.threads,
            **kwargs,
        )
        scores = out["scores"].astype(np.float64)
        dev_scores, test_scores = scores[: len(dev)], scores[len(dev) :]
        own = 0.0 if method == "1vsrest" else 0.5  # LibMultiLabel's decision value 0 = probability 0.5 for the tree
        at_own = evaluate_multilabel(gold, test_scores, labels.codes, Thresholds("global", own), labels.train_freq)
        tuned = Thresholds.tune(y_dev, dev_scores, "global")
        at_dev = evaluate_multilabel(gold, test_scores, labels.codes, tuned, labels.train_freq)
        row = {
            "method": method + (f" beam {kwargs['beam_width']}" if kwargs else ""),
            "map": at_own["all_gold"]["map"],
            "map_train_seen": at_own["train_seen"]["map"],
            "p_at_8": at_own["all_gold"]["p_at_8"],
            "micro_f1_own_threshold": at_own["all_gold"]["micro_f1"],
            "own_threshold": own,
            "micro_f1_dev_tuned": at_dev["all_gold"]["micro_f1"],
            "dev_tuned_threshold": tuned.global_,
            "train_s": out["train_s"],
            "train_cpu_s": out["train_cpu_s"],
            "predict_s_dev_test": out["predict_s"],
            "peak_rss_mb": out["peak_rss_mb"],
            "tree": out["tree"],
        }
        rows.append(row)
        print(json.dumps(row))
    print()
    print(f"LibMultiLabel {LIBMULTILABEL_VERSION}, options {args.options!r}, {args.threads} threads; test = 250 docs")
    print(
        "| method | MAP | P@8 | micro-F1 @ own thr | micro-F1 @ dev thr | train s | predict s (500 docs) | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['map']:.3f} | {r['p_at_8']:.3f} | {r['micro_f1_own_threshold']:.3f} "
            f"(>= {r['own_threshold']}) | {r['micro_f1_dev_tuned']:.3f} | {r['train_s']:.1f} | "
            f"{r['predict_s_dev_test']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"config": str(args.config), "rows": rows}, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="LibMultiLabel baseline checks")
    sub = parser.add_subparsers(dest="check", required=True)
    smoke = sub.add_parser("smoke", help="random sparse problem, both methods")
    smoke.add_argument("--docs", type=int, default=2000)
    smoke.add_argument("--features", type=int, default=5000)
    smoke.add_argument("--labels", type=int, default=300)
    codiesp = sub.add_parser("codiesp", help="medcoder TF-IDF features of CodiEsp-D EN, both methods")
    codiesp.add_argument("--config", type=Path, default=ROOT / "configs" / "codiesp_tfidf_unigram.yaml")
    codiesp.add_argument("--options", default=DEFAULT_OPTIONS)
    codiesp.add_argument("--beams", type=int, nargs="+", default=[10])
    codiesp.add_argument("--json", type=Path, help="also write the rows here")
    for p in (smoke, codiesp):
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--work", default=None, help="folder for the npz files and runner outputs (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medcoder-lml-") as tmp:
        args.work = args.work or tmp
        return _smoke(args) if args.check == "smoke" else _codiesp(args)


if __name__ == "__main__":
    raise SystemExit(main())
