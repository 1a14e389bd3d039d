"""Text summary of a label space, for ``medcoder labels``."""

from __future__ import annotations

from pathlib import Path

from medcoder.bundles import read_header
from medcoder.config import load_config
from medcoder.data.dataset import fit_label_space, load_dataset
from medcoder.data.labels import LabelSpace
from medcoder.errors import MedcoderError
from medcoder.registry import SYSTEMS


def _fit_from_config(path: Path) -> tuple[LabelSpace, dict[str, dict]]:
    config = load_config(path, "train")
    splits = load_dataset(config.data)
    space = fit_label_space(config.labels, config.task.type, splits["train"])
    coverage = {name: space.coverage([n.labels for n in splits[name]]) for name in ("dev", "test")}
    return space, coverage


def describe_label_source(source: Path, *, top: int = 20) -> str:
    """Describe a bundle's labels.json, a labels.json file, or the label space a run config would fit."""
    coverage: dict[str, dict] = {}
    if source.is_dir():
        header = read_header(source)
        labels_file = SYSTEMS.get(header["kind"]).labels_file(source, header)
        if labels_file is None:
            raise MedcoderError(f"{source}: this {header['kind']} system has no label space of its own")
        space = LabelSpace.from_json(labels_file)
    elif source.suffix == ".json":
        space = LabelSpace.from_json(source)
    else:
        space, coverage = _fit_from_config(source)
    lines = [
        f"label space: {len(space)} labels (task {space.task}, system {space.system}, level {space.level}, "
        f"truncate={space.truncate}, min_freq={space.min_freq}, top_k={space.top_k})",
    ]
    report = space.report
    for key in ("dropped_min_freq", "dropped_top_k", "unmappable", "unknown_to_catalog", "resolved_via_ancestor"):
        entry = report.get(key) or {}
        if entry.get("count"):
            examples = ", ".join(str(e) for e in entry.get("examples", [])[:8])
            lines.append(f"{key.replace('_', ' ')}: {entry['count']} (e.g. {examples})")
    for split, cov in coverage.items():
        share = cov["n_unseen_assignments"] / cov["n_assignments"] if cov["n_assignments"] else 0.0
        lines.append(
            f"{split}: {cov['n_docs']} notes, {cov['n_assignments']} code assignments; "
            f"{cov['n_unseen_codes']} codes ({cov['n_unseen_assignments']} assignments, {share:.1%}) unseen in train"
            + (f", e.g. {', '.join(cov['examples'][:8])}" if cov["examples"] else "")
            + (f"; {cov['n_unmappable_assignments']} unmappable" if cov["n_unmappable_assignments"] else "")
        )
    lines.append("")
    lines.append(f"{'rank':>4}  {'code':<10} {'train docs':>10}  description")
    for rank, code in enumerate(space.codes[:top], start=1):
        lines.append(f"{rank:>4}  {code:<10} {space.train_freq.get(code, 0):>10}  {space.description(code) or ''}")
    return "\n".join(lines) + "\n"
