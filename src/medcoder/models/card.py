"""The model card (README.md) written into every bundle."""

from __future__ import annotations

from typing import Any

from medcoder.config import RunConfig, dump_yaml
from medcoder.data.labels import LabelSpace
from medcoder.evaluation.scoring import format_frequency_table, format_metrics_table


def _source_line(config: RunConfig) -> str:
    source = config.data.source.model_dump()
    kind = source.pop("kind")
    details = ", ".join(f"{k}={v}" for k, v in source.items() if v is not None)
    return f"`{kind}` ({details})" if details else f"`{kind}`"


def render_model_card(config: RunConfig, labels: LabelSpace, metrics: dict[str, Any], info: dict[str, Any]) -> str:
    """Markdown describing data, label space, metrics, timings and versions."""
    lines = [
        f"# medcoder model: {config.name}",
        "",
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
        " probabilities are not calibrated across datasets.",
        "",
        "## Run config",
        "",
        "```yaml",
        dump_yaml(config).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
