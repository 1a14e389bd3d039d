"""The transfer tables of issue 13 from experiment folders: every column the issue asks for, one row per variant.

    python bench/transfer_table.py runs/codiesp-transformer-transfer [--mlm runs/mlm-asbuilt runs/mlm-fixed]
        [--output bench/results/codiesp_transformer_transfer.md]

Per run (``<experiment>/<variant>/seed<k>``): dev and test MAP, micro/macro-F1 and P@8 (test, all-gold
label space), MAP and recall@10 on the test gold codes no train note carries, the epoch of the best dev
MAP and the epochs run, and the training time. A bundle written before the unseen-code metrics existed
is scored again on test (its thresholds and calibration as saved). ``--mlm`` adds the masked-LM table:
held-out MLM loss before training, after the head-alone phase and at the end, how far the word
embeddings and each layer moved, and the wall time, from each encoder folder's ``stage.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from medcoder.models.bundle import saved_run_config


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _unseen(bundle: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    found = metrics["test"]["all_gold"].get("unseen_gold")
    if found is not None:
        return found
    from medcoder.inference.evaluate import evaluate_system

    return evaluate_system(bundle, split="test")[1]["all_gold"]["unseen_gold"]


def run_rows(experiment: Path) -> list[dict[str, Any]]:
    results = json.loads((experiment / "results.json").read_text(encoding="utf-8"))
    rows = []
    for run in results["runs"]:
        bundle = Path(run["bundle_dir"])
        metrics = json.loads((bundle / "metrics.json").read_text(encoding="utf-8"))
        _, header = saved_run_config(bundle)
        members = (header.get("info") or {}).get("training", {}).get("members", [])
        test, dev = metrics["test"]["all_gold"], metrics["dev"]["all_gold"]
        unseen = _unseen(bundle, metrics)
        rows.append(
            {
                "variant": run["variant"],
                "seed": run["seed"],
                "dev MAP": dev["map"],
                "test MAP": test["map"],
                "micro-F1": test["micro_f1"],
                "macro-F1": test["macro_f1"],
                "P@8": test["p_at_8"],
                "unseen MAP": unseen.get("map"),
                "unseen R@10": unseen.get("recall_at_10"),
                "best epoch": statistics.fmean(m["best_epoch"] for m in members)
                if members
                else run["timing"].get("best_epoch"),
                "epochs run": statistics.fmean(m["epochs_run"] for m in members) if members else None,
                "train s": run["timing"].get("train"),
            }
        )
    return rows


def mlm_rows(folders: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for folder in folders:
        stage = json.loads((folder / "stage.json").read_text(encoding="utf-8"))
        config = stage["config"]
        drift = stage.get("weight_drift", {})
        layers = [v for k, v in sorted(drift.items()) if k.startswith("layer")]
        rows.append(
            {
                "encoder": str(folder),
                "recipe": ", ".join(
                    [
                        "tied head" if config.get("tie_new_head", True) else "untied head",
                        f"head alone {config.get('head_first_steps', 0)} steps",
                        "embeddings frozen" if config.get("freeze_embeddings") else "embeddings trained",
                        "whole words" if config.get("whole_word_masking") else "word pieces",
                        f"lr {config['train']['lr']:g}",
                    ]
                ),
                "blocks": stage["train_blocks"],
                "loss before": stage["dev_mlm_loss_before"],
                "after head alone": stage.get("dev_mlm_loss_after_head_first"),
                "loss after": stage["dev_mlm_loss_after"],
                "embedding drift": drift.get("word_embeddings"),
                "layer drift (mean)": statistics.fmean(layers) if layers else None,
                "train s": stage.get("seconds"),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)\n"
    titles = list(rows[0])
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in rows:
        cells = [_fmt(row[t], 1 if t in ("train s", "best epoch", "epochs run") else 3) for t in titles]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", type=Path)
    parser.add_argument("--mlm", nargs="*", type=Path, default=[])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rows = [row for experiment in args.experiments for row in run_rows(experiment)]
    parts = [markdown(rows)]
    if args.mlm:
        parts.append("## masked-LM stage (held-out loss, weight drift)\n\n" + markdown(mlm_rows(args.mlm)))
    text = "\n".join(parts)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
