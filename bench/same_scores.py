"""Do two versions of medcoder train the same models? Scores of fixed runs on synthetic notes.

Trains a few small models (word-level with attention and a 2-seed ensemble, a
hierarchical MiniLM transformer, TF-IDF + LR) on one synthetic corpus through
the ``medcoder`` command line, a retrieval system (the packaged MiniLM over part
of the ICD-10-CM catalog, fused with that TF-IDF model) and, where
``../shared`` is beside the checkout, the IU X-ray MeSH reranker of
``configs/iu_xray_rerank.yaml``; then codes the test notes with ``medcoder
predict --top-k ALL --explain``. Everything goes through the CLI and a JSONL file, so the
script runs unchanged against an older checkout (``PYTHONPATH=OLD/src``)::

    PYTHONPATH=/path/to/old/src .venv/bin/python bench/same_scores.py --output before.json
    .venv/bin/python bench/same_scores.py --output after.json --compare before.json

``--compare`` reports, per run, whether the test metrics and every predicted
probability and evidence span are identical, and the largest difference if not.
About 6 minutes on 2 cores (``--only NAME ...`` runs some of them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

RUNS: dict[str, dict[str, Any]] = {
    "caml-ensemble": {
        "type": "caml.v1",
        "encoding": {"max_tokens": 300},
        "embedding": {"dim": 32},
        "num_filters": 32,
        "ensemble": 2,
        "train": {"epochs": 4, "batch_size": 16, "num_threads": 1},
    },
    "bigru-pooled": {
        "type": "bigru.v1",
        "output": "pooled",
        "hidden": 32,
        "encoding": {"max_tokens": 200},
        "embedding": {"dim": 32},
        "train": {"epochs": 3, "batch_size": 16, "num_threads": 1},
    },
    "minilm-hier": {
        "type": "transformer.v1",
        "encoder": "minilm",
        "architecture": "hier",
        "head": "label_attention",
        "label_init": "descriptions",
        "max_tokens": 192,
        "segment_length": 64,
        "train": {"epochs": 2, "batch_size": 8, "num_threads": 1},
    },
    "tfidf": {"type": "tfidf_lr.v1", "n_jobs": 1},
}
EXPLAINED = {"caml-ensemble", "minilm-hier", "retrieval", "iu-xray-rerank"}
SYSTEMS = ("retrieval", "iu-xray-rerank")  # saved systems of other kinds, trained after the models
ROOT = Path(__file__).resolve().parent.parent
IU_XRAY = ROOT.parent / "shared" / "data" / "iu_xray_reports" / "iu_xray_reports.jsonl"
RETRIEVAL_PREFIXES = ["E11", "I10", "I50", "J18", "J44", "N18", "R07", "Z79"]


def write_corpus(path: Path) -> None:
    from medcoder.data.synthetic import generate_notes

    try:
        from medcoder.data.sources.synthetic import SyntheticSource as Knobs
    except ImportError:  # medcoder 0.1 named the generator's config SyntheticConfig
        from medcoder.data.synthetic import SyntheticConfig as Knobs  # type: ignore[attr-defined,no-redef]

    notes = generate_notes(Knobs(n_notes=240, n_codes=16, seed=7))
    with path.open("w", encoding="utf-8") as handle:
        for note in notes:
            handle.write(
                json.dumps({"id": note.id, "text": note.text, "labels": list(note.labels), "split": note.split})
            )
            handle.write("\n")


def medcoder(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "medcoder.cli", "-q", *args], capture_output=True, text=True, env=os.environ.copy()
    )
    if done.returncode != 0:
        raise SystemExit(f"medcoder {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def test_split(corpus: Path, out: Path) -> Path:
    out.write_text(
        "".join(line + "\n" for line in corpus.read_text().splitlines() if json.loads(line)["split"] == "test")
    )
    return out


def coded(name: str, bundle: Path, test: Path, seconds: float, metrics: dict[str, Any]) -> dict[str, Any]:
    extra = ["--explain"] if name in EXPLAINED else []
    lines = medcoder("predict", str(bundle), str(test), "--top-k", "100000", *extra).splitlines()
    return {"seconds": seconds, "test": metrics, "predictions": [json.loads(x) for x in lines]}


def evaluated(bundle: Path) -> dict[str, Any]:
    """``medcoder evaluate``'s test figures of a saved system (kinds other than model keep no metrics.json)."""
    out = bundle.parent / f"{bundle.name}.metrics.json"
    medcoder("evaluate", str(bundle), "--output", str(out))
    return json.loads(out.read_text())


def run_systems(work: Path, corpus: Path, test: Path, only: set[str]) -> dict[str, Any]:
    """The retrieval system (over the tfidf run's bundle) and the IU X-ray reranker."""
    results: dict[str, Any] = {}
    if "retrieval" in only and (work / "tfidf").is_dir():
        config = {
            "kind": "retrieval",
            "data": {"source": {"kind": "jsonl", "path": str(corpus)}},
            "encoder": "minilm",
            "classifier": str(work / "tfidf"),
            "train": {"epochs": 0},
            "index": {"system": "icd10cm", "cache_dir": str(work / "index-cache"), "prefixes": RETRIEVAL_PREFIXES},
            "search": {"k": 10},
        }
        config_path = work / "retrieval.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        started = time.perf_counter()
        medcoder("retrieval", str(config_path), "-o", str(work / "retrieval"))
        metrics = evaluated(work / "retrieval")
        results["retrieval"] = coded("retrieval", work / "retrieval", test, time.perf_counter() - started, metrics)
    if "iu-xray-rerank" in only and IU_XRAY.is_file():
        config = yaml.safe_load((ROOT / "configs" / "iu_xray_rerank.yaml").read_text())
        config["data"]["source"]["path"] = str(IU_XRAY)
        config_path = work / "iu.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        started = time.perf_counter()
        medcoder("train", str(config_path), "-o", str(work / "iu"))
        metrics = evaluated(work / "iu")
        iu_test = test_split(IU_XRAY, work / "iu_test.jsonl")
        results["iu-xray-rerank"] = coded(
            "iu-xray-rerank", work / "iu", iu_test, time.perf_counter() - started, metrics
        )
    return results


def run_all(work: Path, only: set[str]) -> dict[str, Any]:
    corpus = work / "notes.jsonl"
    write_corpus(corpus)
    test = test_split(corpus, work / "test.jsonl")
    results: dict[str, Any] = {}
    for name, model in RUNS.items():
        if name not in only:
            continue
        config = {
            "name": name,
            "seed": 3,
            "data": {"source": {"kind": "jsonl", "path": str(corpus)}},
            "labels": {"system": "icd10cm"},
            "model": model,
        }
        config_path = work / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        bundle = work / name
        started = time.perf_counter()
        medcoder("train", str(config_path), "-o", str(bundle))
        seconds = time.perf_counter() - started
        metrics = json.loads((bundle / "metrics.json").read_text())
        results[name] = coded(name, bundle, test, seconds, metrics["test"])
    results.update(run_systems(work, corpus, test, only))
    return results


def _numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number inside ``value``, keyed by its path."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(_numbers(item, f"{prefix}.{key}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.update(_numbers(item, f"{prefix}[{index}]"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out


def _listed(predictions: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every listed code of every note, ranked ones and new-code suggestions, keyed by (note, list, code)."""
    return {
        (p["id"], key, c["code"]): c for p in predictions for key in ("codes", "new_codes") for c in p.get(key) or []
    }


def _map(metrics: dict[str, Any]) -> float:
    """Test MAP over all gold codes, in whichever layout the metrics come (a model's, retrieval's, a reranker's)."""
    for key in ("all_gold", "all"):
        if isinstance(metrics.get(key), dict) and "map" in metrics[key]:
            return float(metrics[key]["map"])
    return float(metrics["map"])


def compare(before: dict[str, Any], after: dict[str, Any]) -> tuple[bool, list[str]]:
    """(whether every run is identical, one line per run)."""
    same_everywhere = True
    lines = []
    for name in [*RUNS, *SYSTEMS]:
        if name not in before and name not in after:
            continue  # not run by either (``--only``, or no ../shared)
        if name not in before or name not in after:
            lines.append(f"{name}: missing in one of the files")
            same_everywhere = False
            continue
        old, new = before[name], after[name]
        old_codes = _listed(old["predictions"])
        new_codes = _listed(new["predictions"])
        probability_gap = max(
            (
                abs(old_codes[k]["probability"] - new_codes[k]["probability"])
                for k in old_codes.keys() & new_codes.keys()
            ),
            default=0.0,
        )
        same_codes = old_codes.keys() == new_codes.keys()
        same_evidence = all(
            old_codes[k].get("evidence") == new_codes[k].get("evidence") for k in old_codes.keys() & new_codes.keys()
        )
        old_metrics, new_metrics = _numbers(old["test"]), _numbers(new["test"])
        metric_gap = max(
            (abs(old_metrics[k] - new_metrics[k]) for k in old_metrics.keys() & new_metrics.keys()), default=0.0
        )
        identical = old["test"] == new["test"] and same_codes and probability_gap == 0.0 and same_evidence
        same_everywhere &= identical
        lines.append(
            f"- {name}: {'identical' if identical else 'DIFFERENT'}; test MAP {_map(old['test']):.6f} -> "
            f"{_map(new['test']):.6f}, largest metric gap {metric_gap:.2e}, largest probability gap "
            f"{probability_gap:.2e}, same codes listed {same_codes}, same evidence {same_evidence}; "
            f"train+predict {old['seconds']:.0f} s -> {new['seconds']:.0f} s"
        )
    return same_everywhere, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="JSON file for this version's results")
    parser.add_argument("--compare", type=Path, help="an earlier --output to compare with")
    parser.add_argument("--report", type=Path, help="with --compare: also write the comparison here (Markdown)")
    parser.add_argument("--only", nargs="+", choices=[*RUNS, *SYSTEMS], help="run only these (retrieval needs tfidf)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        results = run_all(Path(work), set(args.only or [*RUNS, *SYSTEMS]))
    args.output.write_text(json.dumps(results), encoding="utf-8")
    if args.compare is None:
        return 0
    identical, lines = compare(json.loads(args.compare.read_text()), results)
    print("\n".join(lines))
    if args.report is not None:
        from medcoder.io import atomic_write_text

        title = f"# Same scores? {args.compare.name} vs {args.output.name}\n\n"
        atomic_write_text(args.report, title + "\n".join(lines) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
