"""Every Markdown report medcoder writes: metrics tables, the model card, experiment, retrieval and rerank results.

Renderers take plain data (metrics dicts as :mod:`medcoder.evaluation.scoring`
returns them, configs, label spaces) and return text; they compute nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from medcoder.config import RunConfig, dump_yaml
from medcoder.data.labels import LabelSpace

_HEADLINE_ROWS: tuple[tuple[str, str], ...] = (
    ("map", "MAP"),
    ("micro_precision", "micro-P"),
    ("micro_recall", "micro-R"),
    ("micro_f1", "micro-F1"),
    ("macro_f1", "macro-F1 (all)"),
    ("macro_f1_with_gold", "macro-F1 (labels with gold)"),
    ("micro_auc", "micro-AUC"),
    ("macro_auc", "macro-AUC"),
)


#: a table as data: (header cells, body rows of cells); Markdown and HTML render the same one
Table = tuple[list[str], list[list[str]]]


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown_table(table: Table) -> str:
    """``table`` as a Markdown pipe table, one line a row, ending in a newline."""
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def metrics_table(metrics: Mapping[str, Any]) -> Table:
    """The headline figures of :func:`~medcoder.evaluation.scoring.evaluate_multilabel` (one column per
    convention) or :func:`~medcoder.evaluation.scoring.evaluate_multiclass`, formatted to 3 decimals."""
    if "all_gold" in metrics:
        sections = [("all gold", metrics["all_gold"]), ("train-seen", metrics["train_seen"])]
        rows = list(_HEADLINE_ROWS)
        rows += [(f"p_at_{k}", f"P@{k}") for k in metrics.get("ks", (5, 8, 15))]
        body = [[label, *(_fmt(section.get(key)) for _, section in sections)] for key, label in rows]
        return ["metric", *(name for name, _ in sections)], body
    if "accuracy" in metrics:
        return ["metric", "value"], [["accuracy", _fmt(metrics["accuracy"])], ["macro-F1", _fmt(metrics["macro_f1"])]]
    raise ValueError("metrics must come from evaluate_multilabel or evaluate_multiclass")


def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    """A Markdown table of the headline figures (:func:`metrics_table`)."""
    return markdown_table(metrics_table(metrics))


def frequency_table(metrics: Mapping[str, Any]) -> Table | None:
    """Macro F1 by train-frequency bin (multi-label metrics only; else None)."""
    bins = metrics.get("f1_by_frequency")
    if not bins:
        return None
    header = ["train docs per code", "codes", "macro-F1"]
    return header, [[str(row["bin"]), str(row["n_labels"]), _fmt(row["macro_f1"])] for row in bins]


def format_frequency_table(metrics: Mapping[str, Any]) -> str:
    """Markdown table of macro F1 by train-frequency bin (multi-label metrics only; else "")."""
    table = frequency_table(metrics)
    return "" if table is None else markdown_table(table)


def _share(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def format_reliability_table(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """Markdown reliability table of two :func:`~medcoder.evaluation.calibration.reliability` dicts side by side
    (same bins): per bin n, mean probability and share of gold codes, before and after calibration."""
    lines = [
        "| probability bin | n before | mean p before | share gold before | n after | mean p after | share gold after |",
        "|---|---|---|---|---|---|---|",
    ]
    for old, new in zip(before["bins"], after["bins"], strict=True):
        closing = "]" if new["high"] >= 1.0 else ")"
        lines.append(
            f"| [{old['low']:.1f}, {old['high']:.1f}{closing} | {old['n']} | {_share(old['mean_probability'])} | "
            f"{_share(old['share_gold'])} | {new['n']} | {_share(new['mean_probability'])} | "
            f"{_share(new['share_gold'])} |"
        )
    lines.append(f"| all | {before['n']} | | | {after['n']} | | |")
    return "\n".join(lines) + "\n"


def format_calibration(record: Mapping[str, Any]) -> list[str]:
    """Model-card lines of a run's calibration record (metrics.json ``calibration``)."""
    k = record.get("k", 20)
    lines = [
        "## Calibration",
        "",
        f"Probabilities are calibrated on dev: method `{record['method']}`"
        + (f" (config `{record['requested']}`)" if record.get("requested") not in (None, record["method"]) else "")
        + f". ECE@{k} over each note's {k} top-ranked codes, 10 equal-width bins (METRICS.md); "
        "the map is strictly increasing, so rankings (MAP, P@k) are unchanged and the thresholds are in "
        "calibrated units.",
        "",
        f"| split | ECE@{k} before | ECE@{k} after |",
        "|---|---|---|",
    ]
    for split in ("dev", "test"):
        if split in record:
            lines.append(
                f"| {split} | {_fmt(record[split]['before']['ece'])} | {_fmt(record[split]['after']['ece'])} |"
            )
    choice = [row for row in record.get("choice") or [] if row.get("cv_ece") is not None]
    if choice:
        lines += ["", "Methods compared by 5-fold cross-validation over dev notes (lowest ECE chosen):", ""]
        lines += [f"| method | CV ECE@{k} | CV log loss |", "|---|---|---|"]
        lines += [f"| {row['method']} | {_fmt(row['cv_ece'])} | {_fmt(row['cv_log_loss'])} |" for row in choice]
    notes = [row["note"] for row in record.get("choice") or [] if row.get("note")]
    if notes:
        lines += ["", "Nothing was fitted: " + "; ".join(notes) + "."]
    if "test" in record:
        lines += ["", f"Test reliability (top {k} codes per note):", ""]
        lines.append(format_reliability_table(record["test"]["before"], record["test"]["after"]))
    return lines


def _source_line(config: RunConfig) -> str:
    source = config.data.source.model_dump()
    kind = source.pop("kind")
    details = ", ".join(f"{k}={v}" for k, v in source.items() if v is not None)
    return f"`{kind}` ({details})" if details else f"`{kind}`"


def render_model_card(
    config: RunConfig, labels: LabelSpace, metrics: dict[str, Any], info: dict[str, Any], *, identity: str = ""
) -> str:
    """Markdown describing data, label space, metrics, timings and versions (``identity``: the bundle's)."""
    calibration = metrics.get("calibration")
    lines = [
        f"# medcoder model: {config.name}",
        "",
        *([f"- identity: `{identity}`"] if identity else []),
        f"- model: `{config.model.type}`",
        f"- task: `{config.task.type}`",
        f"- data: {_source_line(config)}",
        f"- label space: {len(labels)} labels, system `{labels.system}`, level `{labels.level}`, "
        f"truncate={labels.truncate}, min_freq={labels.min_freq}, top_k={labels.top_k}",
        f"- thresholds: `{config.thresholds.strategy}`, tuned on dev only",
        f"- seed: {config.seed}",
    ]
    split_sizes = info.get("split_sizes")
    if split_sizes:
        lines.append("- documents: " + ", ".join(f"{k} {v}" for k, v in split_sizes.items()))
    coverage = info.get("test_coverage")
    if coverage:
        lines.append(
            f"- test gold codes unseen in train: {coverage.get('n_unseen_codes')} codes, "
            f"{coverage.get('n_unseen_assignments')} of {coverage.get('n_assignments')} assignments "
            "(counted as misses in the all-gold figures)"
        )
    if "test" in metrics:
        lines += ["", "## Test metrics", "", format_metrics_table(metrics["test"])]
        by_frequency = format_frequency_table(metrics["test"])
        if by_frequency:
            lines += ["F1 by how often a code occurs in train (all-gold label space):", "", by_frequency]
    if calibration:
        lines += format_calibration(calibration)
    members = (info.get("training") or {}).get("members") or []
    if members:
        metric = info["training"].get("metric")
        lines += [f"## Training (early stopping on dev {metric})", ""]
        lines += [
            f"- seed {m['seed']}: best dev {metric} {m['best_dev']:.4f} at epoch {m['best_epoch']} "
            f"of {m['epochs_run']}{' (stopped early)' if m['stopped_early'] else ''}"
            for m in members
            if m.get("best_dev") is not None
        ] + [""]
    timing = info.get("timing")
    if timing:
        lines += ["## Timing (seconds)", ""] + [f"- {k}: {v:.2f}" for k, v in timing.items()] + [""]
    lines += ["## Versions", ""] + [f"- {k}: {v}" for k, v in sorted(info.get("versions", {}).items())]
    lines += [
        "",
        "## Intended use",
        "",
        "Suggests codes for human review. It knows only codes seen in its training split;"
        + (
            f" probabilities are calibrated on its dev split ({calibration['method']}), not across datasets."
            if calibration and calibration["method"] != "none"
            else " probabilities are not calibrated across datasets."
        ),
        "",
        "## Run config",
        "",
        "```yaml",
        dump_yaml(config).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


EXPERIMENT_CAPTION = (
    "Test split (dev MAP: the dev split), thresholds tuned on dev; all-gold label space (METRICS.md); unseen: the "
    "test gold codes no train note carries, ranked against wrong codes only. mean ± sd over seeds; "
    "an ensemble row is one model averaging the scores of its seeds' models (train s: their sum)."
)


def experiment_table(rows: list[dict[str, Any]]) -> Table:
    """The results table of an experiment's summary rows: ``mean ± sd`` over seeds (sd 0 with one seed)."""
    titles = [k for k in rows[0] if k not in ("variant", "n_seeds", "seeds", "ensemble")]
    body = []
    for row in rows:
        cells = []
        for title in titles:
            cell = row[title]
            if cell["mean"] is None:
                cells.append("—")
            elif cell["sd"] is None:
                cells.append(
                    f"{cell['mean']:.1f}" if title.endswith(" s") or title == "best epoch" else f"{cell['mean']:.3f}"
                )
            elif title.endswith(" s") or title == "best epoch":
                cells.append(f"{cell['mean']:.1f} ± {cell['sd']:.1f}")
            else:
                cells.append(f"{cell['mean']:.3f} ± {cell['sd']:.3f}")
        seeds = f"ens. of {row['n_seeds']}" if row.get("ensemble") else str(row["n_seeds"])
        body.append([str(row["variant"]), seeds, *cells])
    return ["variant", "seeds", *titles], body


def render_experiment_table(name: str, rows: list[dict[str, Any]]) -> str:
    """The results table (:func:`experiment_table`) under the experiment's name and :data:`EXPERIMENT_CAPTION`."""
    if not rows:
        return f"# {name}\n\nNo runs.\n"
    return f"# {name}\n\n{EXPERIMENT_CAPTION}\n\n" + markdown_table(experiment_table(rows))


def render_retrieval_report(result: dict[str, Any]) -> str:
    """The results.md of a retrieval system: the systems compared, the fusion tuned on dev, training, timing."""
    metrics = result["metrics"]
    lines = [
        "# Code retrieval (bi-encoder over the ICD-10-CM catalog) and fusion",
        "",
        f"index: {result['index']['codes']:,} codes; mentions per note: "
        + ", ".join(f"{k} {v:.1f}" for k, v in result["mentions_per_note"].items()),
        "",
        "| system | MAP | micro-F1 | recall@10 | MAP (unseen gold) | recall@10 (unseen gold) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("classifier", "retrieval", "fused"):
        if name not in metrics:
            continue
        every, unseen = metrics[name]["all"], metrics[name]["unseen"]
        f1 = f"{every['micro_f1']:.3f}" if "micro_f1" in every else "—"
        lines.append(
            f"| {name} | {every['map']:.3f} | {f1} | {every['recall@10']:.3f} | {unseen['map']:.3f} | "
            f"{unseen['recall@10']:.3f} |"
        )
    if result.get("fusion"):
        fusion = result["fusion"]
        lines += [
            "",
            f"fusion tuned on dev: weight {fusion['weight']} (classifier codes), "
            f"{fusion['novel_weight']} (codes it never saw), floor {fusion['floor']}, "
            f"threshold {fusion['threshold']:.4f}",
        ]
        lines += [
            "",
            "Weight on codes the classifier never saw (other fusion settings as tuned; the dev MAP picks):",
            "",
            "| novel weight | dev MAP | test MAP | test MAP (unseen gold) | test recall@10 (unseen gold) |",
            "|---|---|---|---|---|",
        ]
        for row in fusion["novel_weight_sweep"]:
            dev, test = row["dev"], row["test"]
            lines.append(
                f"| {row['novel_weight']} | {dev['map']:.3f} | {test['map']:.3f} | {test['unseen_map']:.3f} | "
                f"{test['unseen_recall@10']:.3f} |"
            )
        new = metrics["new_code_suggestions"]
        lines += [
            "",
            f"Codes the classifier never saw, suggested apart (up to {fusion['novel_top']} a note, "
            f"cosine >= {fusion['novel_threshold']:.3f}, tuned on dev): "
            f"{new['suggested_per_note']:.2f} a note, precision {new['precision']:.3f}, "
            f"recall {new['recall']:.3f} of the {new['gold_new_assignments']} such test assignments.",
        ]
    training = result.get("training") or {}
    if training.get("epochs"):
        lines += [
            "",
            f"bi-encoder: {training['pairs']} train pairs, best epoch {training.get('best_epoch')}, "
            "dev triplet accuracy "
            f"{training.get('dev_triplet_accuracy_before', float('nan')):.3f} before -> "
            + ", ".join(f"{e.get('dev_triplet_accuracy', float('nan')):.3f}" for e in training["epochs"]),
        ]
    lines += ["", "timing (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result["timing"].items()), ""]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_systems_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """Systems side by side on the open-set figures of :func:`medcoder.evaluation.open_set.evaluate_open_set`."""
    lines = [
        "| system | MAP | micro-F1 | macro-F1 | P@8 | recall@10 | MAP (unseen gold) | recall@10 (unseen gold) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in rows.items():
        every, unseen = m["all"], m["unseen"]
        lines.append(
            f"| {name} | {_cell(every.get('map'))} | {_cell(every.get('micro_f1'))} | {_cell(every.get('macro_f1'))} "
            f"| {_cell(every.get('p_at_8'))} | {_cell(every.get('recall@10'))} | {_cell(unseen.get('map'))} "
            f"| {_cell(unseen.get('recall@10'))} |"
        )
    return "\n".join(lines) + "\n"


def render_rerank_report(header: Mapping[str, Any]) -> str:
    """The results.md of a rerank run: systems compared on test, leave-one-signal-out, k, calibration, timing."""
    metrics = header["metrics"]
    lines = [
        f"# {header['name']}: learned reranker over every signal",
        "",
        f"Test split, all-gold label space (METRICS.md); everything tuned on dev. {header['labels']['codes']:,} "
        f"labels in train; candidates per note: each signal's top {header['candidates']['k']} (dev MAP picked it).",
        "",
        format_systems_table(metrics),
    ]
    if header.get("leave_one_out"):
        lines += ["Leave one signal out (the ranker retrained without it; its candidates leave too):", ""]
        lines.append(
            format_systems_table(
                {"all signals": metrics["reranker"]} | {f"without {k}": v for k, v in header["leave_one_out"].items()}
            )
        )
    lines += [
        "Candidates per signal (dev MAP of the ranker picks k):",
        "",
        "| k | dev MAP | dev recall of the candidates | rounds |",
        "|---|---|---|---|",
    ]
    for row in header["candidates"]["per_k"]:
        lines.append(
            f"| {row['k']} | {row['dev_map']:.3f} | {row['dev_candidate_recall']:.3f} | {row['best_iteration']} |"
        )
    gains = header.get("unseen_gain") or {}
    if gains.get("per_gain"):
        target = gains.get("target")
        lines += [
            "",
            f"Weight of gold codes unseen in training when the ranker learns (dev picks {gains['chosen']}: "
            + (
                f"the smallest reaching dev unseen recall@10 >= {target}, else the best dev MAP)"
                if target
                else "the best dev MAP)"
            ),
            "",
            "| unseen gain | dev MAP | dev recall@10 (unseen gold) |",
            "|---|---|---|",
        ]
        lines += [
            f"| {r['gain']} | {_cell(r['dev_map'])} | {_cell(r['dev_unseen_recall@10'])} |" for r in gains["per_gain"]
        ]
    reach = header.get("unseen_reach")
    if reach and reach["gold_assignments"]:
        top = reach["final_top"]
        lines += [
            "",
            f"Test gold codes no training note carried: {reach['gold_assignments']:,} assignments. "
            f"Candidates hold {reach['any_source']:,} of them; the final ranking puts {top['10']:,} in their "
            f"note's top 10, {top['20']:,} in its top 20, {top['50']:,} in its top 50. Brought by each source:",
            "",
            "| source | unseen gold assignments among its candidates |",
            "|---|---|",
            *[f"| {name} | {n:,} |" for name, n in reach["per_source"].items()],
        ]
    # the model card's calibration section; "before" is the sigmoid of the ranker's raw score, not a probability
    lines += [
        "",
        *format_calibration(header["calibration"]),
        "",
        "Before calibration: the sigmoid of the ranker's score.",
    ]
    importance = sorted(header["ranker"]["importance"].items(), key=lambda kv: -kv[1])[:15]
    lines += ["", "Features by share of the ranker's gain:", "", "| feature | gain share |", "|---|---|"]
    lines += [f"| {name} | {share:.3f} |" for name, share in importance]
    lines += [
        "",
        "Wall time (s, 2 CPU cores unless stated): " + ", ".join(f"{k} {v:.1f}" for k, v in header["timing"].items()),
    ]
    return "\n".join(lines) + "\n"
