"""medcoder's linear learners against LibMultiLabel, on the same TF-IDF features, in the same run.

    python bench/linear_compare.py codiesp    # CodiEsp-D EN (../shared), the unigram config of our best TF-IDF run
    python bench/linear_compare.py synthetic  # a synthetic corpus with thousands of labels (synthetic_scale)

Both sides get the very same features (medcoder's TF-IDF, saved as .npz) and the same labels; each learner
runs in its own process (ours: bench/_linear_runner.py in this environment; LibMultiLabel 0.10.0 in its own
venv, built by bench/_libmultilabel.py), so peak RSS is that process's own. Scores come back and are
evaluated here the METRICS.md way (evaluation.scoring: MAP over all gold; thresholds tuned on dev, never on
test). Writes bench/results/linear_compare_<corpus>.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).parent))
import _libmultilabel as lml  # noqa: E402

from medcoder.config import LabelConfig, load_config  # noqa: E402
from medcoder.data.dataset import fit_label_space, load_dataset, texts_of  # noqa: E402
from medcoder.evaluation.scoring import evaluate_multilabel  # noqa: E402
from medcoder.evaluation.thresholds import Thresholds  # noqa: E402
from medcoder.models import build_model  # noqa: E402
from medcoder.models.tfidf_lr import TfidfLrConfig  # noqa: E402

BENCH = Path(__file__).parent
ROOT = BENCH.parent
# (name, spec): C = 100 is our tuned LR; C = 1 is LIBLINEAR's (and LibMultiLabel's) default for the SVM
PRUNES = [0.0, 0.01, 0.02, 0.05]
OURS = [
    ("medcoder LR (C=100)", {"method": "ovr", "loss": "lr", "C": 100.0, "prunes": PRUNES}),
    ("medcoder SVM", {"method": "ovr", "loss": "svm", "C": 1.0, "prunes": PRUNES}),
    ("medcoder tree SVM", {"method": "tree", "loss": "svm", "C": 1.0, "prunes": PRUNES}),
]
# the same problem as ours: the L2-loss SVM in the dual (-s 1, LibMultiLabel's default solver), tolerance 0.01;
# and the setting, the primal -s 2 at LibMultiLabel's bench tolerance (CodiEsp only: it is slow)
SAME = "-s 1 -B 1 -e 0.01 -q"
THEIRS = [
    ("LibMultiLabel 1vsrest", "1vsrest", {"options": SAME}),
    ("LibMultiLabel tree", "tree", {"options": SAME}),
    ("LibMultiLabel 1vsrest -s 2", "1vsrest", {"options": "-s 2 -B 1 -e 0.0001 -q"}),
]


def _corpus(name: str, args) -> tuple[dict, object, TfidfLrConfig, str]:
    if name == "codiesp":
        config = load_config(ROOT / "configs/codiesp_tfidf_unigram.yaml", "train")
        splits = load_dataset(config.data)
        labels = fit_label_space(config.labels, "multilabel", splits["train"])
        return splits, labels, config.model, "CodiEsp-D EN, unigram TF-IDF (configs/codiesp_tfidf_unigram.yaml)"
    from medcoder.data.synthetic_scale import ScaleSource, iter_scale_notes

    source = ScaleSource(
        n_train=args.n_train, n_dev=args.n_dev, n_test=args.n_test, n_codes=args.n_codes, words_per_note=args.words
    )
    splits: dict[str, list] = {"train": [], "dev": [], "test": []}
    for note in iter_scale_notes(source):
        splits[note.split].append(note)
    labels = fit_label_space(LabelConfig(system="icd10cm"), "multilabel", splits["train"])
    model = TfidfLrConfig(ngram_range=(1, 1), min_df=2)
    described = (
        f"synthetic_scale: {args.n_train}/{args.n_dev}/{args.n_test} notes of {args.words} words, "
        f"{args.n_codes} codes drawn, unigram TF-IDF (min_df 2)"
    )
    return splits, labels, model, described


def _ours(work: Path, spec: dict, out: Path, threads: int) -> list[tuple[str, dict]]:
    """One training run of ours; a result per prune level (the weights below it dropped)."""
    spec = {**spec, "n_jobs": threads}
    command = [sys.executable, str(BENCH / "_linear_runner.py"), "--out-dir", str(out), "--spec", json.dumps(spec)]
    command += ["--train-x", str(work / "train_x.npz"), "--train-y", str(work / "train_y.npz")]
    command += ["--test-x", str(work / "eval_x.npz")]
    subprocess.run(command, check=True)
    result = json.loads((out / "result.json").read_text())
    results = []
    for level, figures in result["levels"].items():
        scores = np.load(out / f"scores_{level}.npy", allow_pickle=False)
        row = {**result, **figures, "scores": scores}
        results.append((f", prune {level}" if float(level) else "", row))
    return results


def _row(name: str, result: dict, wall: float, y_dev, gold, labels, n_dev: int) -> dict:
    scores = result["scores"].astype(np.float64)
    dev_scores, test_scores = scores[:n_dev], scores[n_dev:]
    tuned = Thresholds.tune(y_dev, dev_scores, "global")
    metrics = evaluate_multilabel(gold, test_scores, labels.codes, tuned, labels.train_freq)["all_gold"]
    return {
        "name": name,
        "map": metrics["map"],
        "micro_f1": metrics["micro_f1"],
        "macro_f1": metrics["macro_f1"],
        "train_s": result["train_s"],
        "predict_s": result["predict_s"],
        "peak_rss_mb": result["peak_rss_mb"],
        "weights_mb": result.get("weights_mb"),
        "dense_mb": result.get("dense_mb"),
        "process_s": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", choices=["codiesp", "synthetic"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/medcoder-linear-compare"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-dev", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--n-codes", type=int, default=3000)
    parser.add_argument("--words", type=int, default=400)
    parser.add_argument("--only", nargs="*", help="names of the learners to run (default: all)")
    args = parser.parse_args()
    splits, labels, model_config, described = _corpus(args.corpus, args)
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    model = build_model(model_config, n_labels=len(labels), task="multilabel")
    x_train = model._fit_features(texts_of(train)[0], None)
    x_eval = model._features(texts_of(dev)[0] + texts_of(test)[0], None)  # dev rows first, then test
    work = args.work / args.corpus
    work.mkdir(parents=True, exist_ok=True)
    sp.save_npz(work / "train_x.npz", sp.csr_matrix(x_train))
    sp.save_npz(work / "train_y.npz", sp.csr_matrix(labels.transform([n.labels for n in train]).astype(np.float64)))
    sp.save_npz(work / "eval_x.npz", sp.csr_matrix(x_eval))
    y_dev = labels.transform([n.labels for n in dev])
    gold = [labels.map_labels(n.labels) for n in test]
    header = (
        f"{described}: {x_train.shape[1]:,} features, {len(labels):,} labels, "
        f"{len(train):,}/{len(dev):,}/{len(test):,} notes; {args.threads} threads each"
    )
    print(header, flush=True)
    python = lml.ensure_env(quiet=True)
    rows = []
    runs = [(name, "ours", spec) for name, spec in OURS] + [(name, method, kw) for name, method, kw in THEIRS]
    for name, method, spec in runs:
        if args.only and name not in args.only:
            continue
        if name.endswith("-s 2") and args.corpus != "codiesp":
            continue
        out = work / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "").replace("=", "")
        start = time.perf_counter()
        if method == "ours":
            results = _ours(work, spec, out, args.threads)
        else:
            results = [("", lml.run(
                python, work / "train_x.npz", work / "train_y.npz", work / "eval_x.npz",
                method=method, out_dir=out, threads=args.threads, **spec,
            ))]  # fmt: skip
        wall = time.perf_counter() - start
        for suffix, result in results:
            rows.append(_row(name + suffix, result, wall, y_dev, gold, labels, len(dev)))
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"# Linear learners, medcoder vs LibMultiLabel {lml.LIBMULTILABEL_VERSION}: {args.corpus}",
        "",
        f"`python bench/linear_compare.py {' '.join(sys.argv[1:])}` — {header}.",
        "Same features for all (medcoder's TF-IDF); each learner in its own process; MAP over all gold codes;",
        "micro/macro-F1 at one global threshold tuned on dev (METRICS.md). Peak RSS: the learner's process",
        "(loading the features included). Weights MB: stored sparse (float32 + int32 index per weight);",
        "dense MB: the same matrix stored dense (a bundle stores the smaller). SVM: L2-loss, bias 1, C = 1,",
        "dual solver (-s 1) at tolerance 0.01 on both sides; `-s 2`: the primal at 1e-4. Trees: K=100, beam 10.",
        "",
        "| learner | MAP | micro-F1 | macro-F1 | train s | predict s | peak RSS MB | weights MB (dense) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = "—" if r["weights_mb"] is None else f"{r['weights_mb']:.1f} ({r['dense_mb']:.1f})"
        lines.append(
            f"| {r['name']} | {r['map']:.3f} | {r['micro_f1']:.3f} | {r['macro_f1']:.3f} | {r['train_s']:.1f} | "
            f"{r['predict_s']:.2f} | {r['peak_rss_mb']:.0f} | {size} |"
        )
    out_file = BENCH / "results" / f"linear_compare_{args.corpus}.md"
    out_file.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
