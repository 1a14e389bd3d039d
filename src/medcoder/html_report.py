"""One self-contained HTML page of a saved system or an experiment: its figures, plots and a per-code table.

:func:`write_html_report` takes either a bundle folder (anything ``medcoder.load``
opens) or an experiment folder (``medcoder experiment``'s ``results.json`` and one
bundle per variant and seed). For a bundle it reads the test split of the
bundle's own data config (as ``medcoder evaluate`` does), scores it once and
renders:

- the headline figures of METRICS.md (the Markdown metrics table, as HTML);
- macro F1 by train-frequency bin, the reliability diagram of ECE@20, the micro
  precision-recall curve with the tuned decision rule marked (inline SVG);
- one sortable row per code with test support or predictions: train documents,
  test support, precision, recall and F1 at the tuned decision rule.

An experiment page adds the variants table of its results.json and one F1-by-frequency
series per variant, then the model section of the variant with the best dev MAP.

The page needs no network: CSS and the small sorting script are inline, plots are
SVG written by matplotlib (no pyplot, so no GUI backend is touched). Every figure
comes from :mod:`medcoder.evaluation.scoring` (the metrics dict, the gold and the decisions
it counted), :mod:`~medcoder.evaluation.metrics` and :mod:`~medcoder.evaluation.calibration`;
tables are built from those dicts (:mod:`~medcoder.evaluation.report`'s table data), never
parsed back from Markdown.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import io
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.data.dataset import load_dataset, texts_of
from medcoder.data.labels import LabelSpace
from medcoder.errors import MedcoderError
from medcoder.evaluation.calibration import ece_at_k
from medcoder.evaluation.metrics import precision_recall_curve
from medcoder.evaluation.report import EXPERIMENT_CAPTION, Table, experiment_table, frequency_table, metrics_table
from medcoder.evaluation.scoring import Graded, grade_notes
from medcoder.evaluation.thresholds import Thresholds
from medcoder.inference.base import Coder
from medcoder.inference.load import load
from medcoder.inference.parts import read_metrics
from medcoder.io import atomic_write_text, read_json_file
from medcoder.progress import LogReporter, Reporter

ECE_K = 20  # METRICS.md: ECE over each note's 20 top-ranked codes
_CURVE_POINTS = 1500  # points of the precision-recall curve drawn (the curve's steps are thinned evenly)
_TICK, _LABEL, _LEGEND = 9, 10, 9  # font sizes (pt) of the plots


@dataclass(frozen=True)
class ScoredBundle:
    """A system's test split, scored once, and its figures over the all-gold label space (METRICS.md).

    ``graded.codes`` holds the system's codes first (the columns of ``scores``), then the
    codes only train or test gold holds; those are never predicted.
    """

    path: Path
    coder: Coder
    labels: LabelSpace  # the system's train label space: gold mapping, train frequencies, descriptions
    n_notes: int
    single_label: bool
    graded: Graded  # the metrics dict, and the gold and decisions it counted
    rule: str  # the decision rule, in words
    scores: np.ndarray  # float [n_notes, len(coder.codes)]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.graded.metrics


def write_html_report(source: Path, output: Path | None = None, *, progress: Reporter | None = None) -> Path:
    """Write the HTML report of a bundle or an experiment folder ``source``; return the file written.

    Args:
        source: a saved system's folder (with ``config.json``) or an experiment folder (with ``results.json``).
        output: the HTML file (default ``source / "report.html"``), written atomically.
        progress: reporter of the slow steps (reading data, scoring notes); default: log lines.

    Raises:
        MedcoderError: ``source`` is neither kind of folder, or its test data cannot be read.
    """
    source = Path(source)
    reporter = progress or LogReporter()
    output = Path(output) if output is not None else source / "report.html"
    if (source / "config.json").is_file():
        scored = score_bundle(source, reporter)
        body = _model_section(scored, heading="Model and test split")
        page = _page(f"medcoder report: {source.name}", body)
    elif (source / "results.json").is_file():
        page = _experiment_page(source, reporter)
    else:
        raise MedcoderError(
            f"{source}: not a model bundle (no config.json) nor an experiment folder (no results.json); "
            "give a folder written by `medcoder train` or `medcoder experiment`"
        )
    atomic_write_text(output, page)
    return output


# ------------------------------------------------------------------ scoring


def _label_space(coder: Coder, path: Path) -> LabelSpace:
    """The system's train label space (its labels.json): gold mapping and train frequencies."""
    labels = coder.label_space()
    if labels is None:
        raise MedcoderError(f"{path}: this {coder.kind} system has no label space (labels.json) to report on")
    return labels


def _rule_text(thresholds: Thresholds | None) -> str:
    if thresholds is None:
        return "argmax class (single-label task)"
    if thresholds.strategy == "global":
        return f"one global threshold {thresholds.global_:.4f} (tuned on dev micro-F1)"
    return f"per-code thresholds tuned on dev (fallback {thresholds.global_:.4f})"


def score_bundle(path: Path, reporter: Reporter) -> ScoredBundle:
    """Load the system at ``path``, read the test split of its data config and score it once."""
    coder = load(path)
    labels = _label_space(coder, path)
    thresholds = coder.decision  # None: a single-label model, the argmax decides
    try:
        with reporter.task("reading data"):
            notes = load_dataset(coder.data_config())["test"]
    except (MedcoderError, OSError) as exc:
        raise MedcoderError(f"{path}: cannot read the test split of the bundle's data config: {exc}") from None
    texts, pairs = texts_of(notes)
    with reporter.task("scoring notes", total=len(notes)) as update:
        scores = np.asarray(coder.predict_proba(texts, pairs=pairs, progress=update), dtype=np.float64)
    graded = grade_notes(scores, notes, labels, thresholds, codes=coder.codes)
    return ScoredBundle(path, coder, labels, len(notes), thresholds is None, graded, _rule_text(thresholds), scores)


def per_code_rows(scored: ScoredBundle) -> list[dict[str, Any]]:
    """One row per code with test support or predictions: counts and P/R/F1 at the tuned rule, and its description."""
    known = set(scored.coder.codes)
    rows = scored.graded.per_code()
    for row in rows:
        code = row["code"]
        row["description"] = (
            scored.coder.description(code) if code in known else scored.labels.description(code)
        ) or ""
    return rows


# ------------------------------------------------------------------ plots


def _plain(text: str) -> str:
    """``text`` safe for a matplotlib label (no mathtext)."""
    return text.replace("$", r"\$")


def _svg(fig: Any, salt: str) -> str:
    """The figure as an inline ``<svg>`` element: no XML prolog, DOCTYPE or metadata (they name external URLs)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return re.sub(r'(<svg[^>]*?) width="[^"]*" height="[^"]*"', r"\1", text, count=1)


def _figure(width: float = 5.4, height: float = 3.6, **kwargs: Any) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), **kwargs)
    fig.set_layout_engine("constrained")
    return fig


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)


def plot_f1_by_frequency(series: Mapping[str, Sequence[Mapping[str, Any]]], salt: str) -> str:
    """Macro F1 per train-frequency bin: bars for one system, lines for several (one series each)."""
    fig = _figure(5.6 if len(series) == 1 else 7.2, 3.6)
    ax = fig.add_subplot()
    first = next(iter(series.values()))
    names = [row["bin"] for row in first]
    x = np.arange(len(names))
    if len(series) == 1:
        values = [row["macro_f1"] for row in first]
        heights = [v or 0.0 for v in values]
        bars = ax.bar(x, heights, color="#3b6ea8", width=0.65)
        for bar, value in zip(bars, values, strict=True):
            label = "—" if value is None else f"{value:.3f}"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        xytext=(0, 2), textcoords="offset points", fontsize=_TICK)  # fmt: skip
        ax.set_xticks(x, [f"{row['bin']}\n{row['n_labels']} codes" for row in first], fontsize=_TICK)
    else:
        for name, rows in series.items():
            by_bin = {row["bin"]: row["macro_f1"] for row in rows}
            values = [np.nan if by_bin.get(b) is None else by_bin[b] for b in names]
            ax.plot(x, values, marker="o", markersize=4, linewidth=1.4, label=_plain(name))
        ax.set_xticks(x, names, fontsize=_TICK)
        ax.legend(fontsize=_LEGEND, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    top = max([row["macro_f1"] or 0.0 for rows in series.values() for row in rows] + [0.05])
    ax.set_ylim(0, min(1.0, top * 1.18))
    ax.set_xlabel("train documents per code", fontsize=_LABEL)
    ax.set_ylabel("macro F1 (test)", fontsize=_LABEL)
    ax.tick_params(axis="y", labelsize=_TICK)
    _style(ax)
    return _svg(fig, salt)


def plot_reliability(table: Mapping[str, Any], k: int, salt: str) -> str:
    """Reliability diagram of :func:`~medcoder.evaluation.calibration.reliability`'s table, bin counts below."""
    fig = _figure(5.2, 4.4)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    bins = [row for row in table["bins"] if row["n"]]
    mean_p = [row["mean_probability"] for row in bins]
    share = [row["share_gold"] for row in bins]
    top.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=1, label="perfectly calibrated")
    top.plot(mean_p, share, marker="o", color="#c0392b", linewidth=1.4, markersize=5, label="this system")
    top.set_xlim(-0.02, 1.02)
    top.set_ylim(-0.02, 1.04)
    top.set_ylabel("share of gold codes", fontsize=_LABEL)
    ece = table["ece"]
    top.set_title(f"ECE@{k} = {'—' if ece is None else f'{ece:.3f}'} ({table['n']:,} pairs)", fontsize=_LABEL)
    top.legend(fontsize=_LEGEND, loc="upper left", frameon=False)
    widths = [row["high"] - row["low"] for row in table["bins"]]
    bottom.bar([row["low"] for row in table["bins"]], [max(row["n"], 0) for row in table["bins"]], width=widths,
               align="edge", color="#7f8c8d", edgecolor="white")  # fmt: skip
    if any(row["n"] for row in table["bins"]):
        bottom.set_yscale("log")
    bottom.set_ylabel("pairs", fontsize=_LABEL)
    bottom.set_xlabel("probability shown (bin mean)", fontsize=_LABEL)
    for ax in (top, bottom):
        ax.tick_params(labelsize=_TICK)
        _style(ax)
    return _svg(fig, salt)


def plot_pr_curve(precision: np.ndarray, recall: np.ndarray, point: tuple[float, float], label: str, salt: str) -> str:
    """The micro precision-recall curve, the tuned decision rule's (recall, precision) marked."""
    fig = _figure(5.2, 4.0)
    ax = fig.add_subplot()
    if precision.size > _CURVE_POINTS:
        keep = np.unique(np.r_[np.linspace(0, precision.size - 1, _CURVE_POINTS).astype(np.int64), 0])
        precision, recall = precision[keep], recall[keep]
    ax.plot(recall, precision, color="#3b6ea8", linewidth=1.4, label="all thresholds")
    ax.plot([point[1]], [point[0]], marker="o", markersize=8, color="#c0392b", linestyle="none", label=_plain(label))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("micro recall", fontsize=_LABEL)
    ax.set_ylabel("micro precision", fontsize=_LABEL)
    ax.tick_params(labelsize=_TICK)
    ax.legend(fontsize=_LEGEND, loc="lower left", frameon=False)
    _style(ax)
    return _svg(fig, salt)


# ------------------------------------------------------------------ HTML


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def _html_table(table: Table) -> str:
    """A table of :mod:`medcoder.evaluation.report` (header, rows of cells) as escaped HTML."""
    header, rows = table
    head = "".join(f"<th>{_e(c)}</th>" for c in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'<div class="scroll"><table class="md"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>'
    )


def _number_cell(value: float, text: str) -> str:
    return f'<td class="num" data-v="{value!r}">{_e(text)}</td>'


def _code_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sortable per-code table (sorted by test support, then train documents, at first)."""
    columns = [
        ("code", "text"), ("description", "text"), ("train docs", "num"), ("test support", "num"),
        ("predicted", "num"), ("precision", "num"), ("recall", "num"), ("F1", "num"),
    ]  # fmt: skip
    sorted_by = ' aria-sort="descending"'
    head = "".join(
        f'<th data-type="{kind}"{sorted_by if title == "test support" else ""}>'
        f'<button type="button">{_e(title)}</button></th>'
        for title, kind in columns
    )
    body = []
    for row in sorted(rows, key=lambda r: (-r["support"], -r["train"], r["code"])):
        body.append(
            f'<tr><td class="code">{_e(row["code"])}</td><td>{_e(row["description"])}</td>'
            + _number_cell(row["train"], str(row["train"]))
            + _number_cell(row["support"], str(row["support"]))
            + _number_cell(row["predicted"], str(row["predicted"]))
            + "".join(_number_cell(row[k], f"{row[k]:.3f}") for k in ("precision", "recall", "f1"))
            + "</tr>"
        )
    return (
        f'<div class="scroll tall"><table id="codes" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _source_text(coder: Coder) -> str:
    """The data source in one line: its kind and where it reads (or its settings)."""
    source = coder.data_config().source.model_dump()
    kind = source.pop("kind")
    for key in ("path", "name", "dataset"):
        if source.get(key):
            return f"{kind}: {source[key]}"
    details = ", ".join(f"{k}={v}" for k, v in source.items() if v is not None and not k.endswith("_field"))
    return f"{kind} ({details})" if details else kind


def _facts(scored: ScoredBundle, bundle: str) -> str:
    system = scored.coder.info
    info = scored.coder.header.get("info") or {}
    facts = [
        ("system", system.kind + (f" / {system.model_type}" if system.model_type else "")),
        ("identity", system.identity),
        ("bundle", bundle),
        ("dataset", _source_text(scored.coder)),
        ("test notes", f"{scored.n_notes:,}"),
        ("codes scored", f"{len(scored.coder.codes):,}"),
        ("decision rule", scored.rule),
    ]
    if info.get("created"):
        facts.append(("trained", str(info["created"])))
    facts.append(("report made", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")))
    return '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>"


def _figure_html(title: str, svg: str, caption: str, *, single: bool = False) -> str:
    """A plot with its title and caption; ``single``: alone on its row (kept to a readable width)."""
    return f'<figure class="plot{" single" if single else ""}"><h4>{_e(title)}</h4>{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def _model_section(scored: ScoredBundle, *, heading: str, note: str = "", bundle: str | None = None) -> str:
    """Facts, headline figures, three plots and the per-code table of one scored system (``bundle``: its name)."""
    metrics = scored.metrics
    n_model = len(scored.coder.codes)
    salt = re.sub(r"\W", "", scored.path.name) or "model"
    parts = [f'<section id="model"><h2>{_e(heading)}</h2>']
    if note:
        parts.append(f'<p class="note">{_e(note)}</p>')
    parts.append(_facts(scored, bundle or scored.path.name))
    by_frequency = scored.graded.f1_by_frequency
    if scored.single_label:
        summary = "Single-label task: the argmax class is the prediction (METRICS.md: accuracy and macro F1)."
        k = 1
    else:
        unseen = metrics["all_gold"]
        summary = (
            "Test split, thresholds tuned on dev; all gold = train codes ∪ test gold codes, "
            "train-seen = test gold codes never seen in train removed (METRICS.md). "
            f"{unseen['n_unseen_codes']} test gold codes ({unseen['n_unseen_assignments']} assignments) "
            "never occur in train: they are misses in the all-gold column."
        )
        k = min(ECE_K, n_model)
    parts += [
        '<div class="cards"><div><h3>Headline figures</h3>',
        _html_table(metrics_table(metrics)),
        f'<p class="note">{_e(summary)}</p></div><div><h3>Macro F1 by train frequency</h3>',
        _html_table(frequency_table({"f1_by_frequency": by_frequency}) or (["train docs per code"], [])),
        "</div></div>",
        '<div class="plots">',
        _figure_html(
            "F1 by code frequency",
            plot_f1_by_frequency({"model": by_frequency}, f"{salt}f"),
            "Macro F1 of the codes in each bin of train documents per code (all-gold label space).",
        ),
    ]
    model_y = scored.graded.gold[:, :n_model]
    in_range = bool(scored.scores.size) and scored.scores.min() >= 0.0 and scored.scores.max() <= 1.0
    if in_range:
        table = ece_at_k(scored.scores, model_y, k=k)
        parts.append(
            _figure_html(
                "Reliability",
                plot_reliability(table, k, f"{salt}r"),
                (
                    "Each note's top class (its confidence)"
                    if scored.single_label
                    else f"Each note's {k} top-ranked codes (METRICS.md ECE@20)"
                )
                + ", 10 equal-width probability bins: share of gold against the mean probability shown.",
            )
        )
    else:
        parts.append('<p class="note">No reliability diagram: the scores are not probabilities in [0, 1].</p>')
    if not scored.single_label:
        precision, recall, _ = precision_recall_curve(scored.scores, model_y, int(scored.graded.gold.sum()))
        every = metrics["all_gold"]
        point = (every["micro_precision"] or 0.0, every["micro_recall"] or 0.0)
        label = f"tuned rule: P {point[0]:.3f}, R {point[1]:.3f}, F1 {_fmt(every['micro_f1'])}"
        parts.append(
            _figure_html(
                "Micro precision-recall",
                plot_pr_curve(precision, recall, point, label, f"{salt}p"),
                "Every (note, code) pair of the all-gold label space; gold codes the system cannot "
                f"score are misses. The dot: {scored.rule}.",
            )
        )
    parts.append("</div>")
    rows = per_code_rows(scored)
    parts += [
        f"<h3>Per code ({len(rows):,} codes with test support or predictions)</h3>",
        '<p class="note">Counts are test notes; precision, recall and F1 at the tuned decision rule. '
        "Click a column header (or focus it and press Enter) to sort.</p>",
        _code_table(rows),
        "</section>",
    ]
    return "\n".join(parts)


# ------------------------------------------------------------------ experiments


def _run_folder(source: Path, record: Mapping[str, Any]) -> Path | None:
    """The bundle folder of a results.json run: ``variant/seedN`` inside the experiment, else its bundle_dir."""
    for folder in (source / str(record["variant"]) / f"seed{record['seed']}", Path(str(record.get("bundle_dir")))):
        if (folder / "config.json").is_file():
            return folder
    return None


def _run_metrics(source: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """A run's metrics.json (the record's own copy in results.json if the file is gone)."""
    folder = _run_folder(source, record)
    if folder is not None and (folder / "metrics.json").is_file():
        with contextlib.suppress(MedcoderError):
            return read_metrics(folder)
    return dict(record.get("metrics") or {})


def _dev_map(metrics: Mapping[str, Any]) -> float | None:
    value = ((metrics.get("dev") or {}).get("all_gold") or {}).get("map")
    return None if value is None else float(value)


def _mean_bins(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Macro F1 per frequency bin, the mean over a variant's seeds (bins as the first run has them)."""
    tables = [(r.get("test") or {}).get("f1_by_frequency") or [] for r in runs]
    tables = [t for t in tables if t]
    if not tables:
        return []
    out = []
    for row in tables[0]:
        values = [x["macro_f1"] for t in tables for x in t if x["bin"] == row["bin"] and x["macro_f1"] is not None]
        out.append(
            {"bin": row["bin"], "n_labels": row["n_labels"], "macro_f1": statistics.fmean(values) if values else None}
        )
    return out


def _columns_in_order(row: Mapping[str, Any]) -> dict[str, Any]:
    """A summary row of results.json (written with sorted keys) with its columns in the results.md order."""
    from medcoder.training.experiment import MULTILABEL_COLUMNS, SINGLE_LABEL_COLUMNS

    order = ["variant", "n_seeds", "seeds", "ensemble", *(t for t, _ in MULTILABEL_COLUMNS + SINGLE_LABEL_COLUMNS)]
    rank = {title: i for i, title in enumerate(dict.fromkeys(order))}
    return dict(sorted(row.items(), key=lambda item: rank.get(item[0], len(rank))))


def _experiment_page(source: Path, reporter: Reporter) -> str:
    """The variants table, F1 by frequency per variant and the model section of the best variant."""
    results = read_json_file(source / "results.json")
    if not isinstance(results, dict) or not results.get("runs"):
        raise MedcoderError(f"{source / 'results.json'}: expected the results of `medcoder experiment` (no runs)")
    name = str((results.get("experiment") or {}).get("name") or source.name)
    runs = list(results["runs"])
    by_variant: dict[str, list[tuple[Mapping[str, Any], dict[str, Any]]]] = {}
    for record in runs:
        by_variant.setdefault(str(record["variant"]), []).append((record, _run_metrics(source, record)))
    series = {v: _mean_bins([m_ for _, m_ in items]) for v, items in by_variant.items()}
    series = {v: rows for v, rows in series.items() if rows}

    dev = {v: [d for _, m_ in items if (d := _dev_map(m_)) is not None] for v, items in by_variant.items()}
    dev = {v: values for v, values in dev.items() if values}
    if dev:
        variant = max(dev, key=lambda v: statistics.fmean(dev[v]))
        record, best = max(by_variant[variant], key=lambda item: _dev_map(item[1]) or -1.0)
        why = (
            f"Variant {variant!r} has the best dev MAP ({statistics.fmean(dev[variant]):.3f}, mean over "
            f"{len(dev[variant])} seed(s)); shown: its seed {record['seed']} (dev MAP {_dev_map(best):.3f})."
        )
    else:
        record = runs[0]
        variant = str(record["variant"])
        why = f"No dev figures in results.json: shown is the first run, variant {variant!r} seed {record['seed']}."
    if results.get("ensembles"):
        why += " Seed-ensemble rows have no bundle of their own, so they are not candidates."
    folder = _run_folder(source, record)
    if folder is None:
        raise MedcoderError(
            f"{source}: the bundle of variant {variant!r} seed {record['seed']} is missing "
            f"(expected {source / variant / ('seed' + str(record['seed']))} with config.json)"
        )
    scored = score_bundle(folder, reporter)
    summary = [_columns_in_order(row) for row in results.get("summary") or []]
    parts = [
        '<section id="experiment"><h2>Variants</h2>',
        f"<p>{_e(EXPERIMENT_CAPTION)}</p>\n" + _html_table(experiment_table(summary))
        if summary
        else "<p>No summary rows.</p>",
    ]
    if series:
        parts.append(
            _figure_html(
                "F1 by code frequency, per variant",
                plot_f1_by_frequency(series, "experimentf"),
                "Macro F1 per bin of train documents per code (test, all-gold), mean over each variant's seeds; "
                "from each run's metrics.json.",
                single=True,
            )
        )
    parts.append("</section>")
    heading = f"Model: {variant}, seed {record['seed']}"
    parts.append(_model_section(scored, heading=heading, note=why, bundle=f"{folder.parent.name}/{folder.name}"))
    return _page(f"medcoder experiment report: {name}", "\n".join(parts))


# ------------------------------------------------------------------ page

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2733;
margin:0;background:#f6f7f9}
main{max-width:1360px;margin:0 auto;padding:20px 28px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d9dde3;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:13px;margin:0 0 4px}
.note{color:#4a5563;font-size:12.5px;margin:4px 0 8px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0 10px;font-size:13px}
dl.facts dt{color:#4a5563}dl.facts dd{margin:0;word-break:break-all}
table{border-collapse:collapse;background:#fff;font-size:12.5px}
th,td{border:1px solid #e1e4e8;padding:3px 8px;text-align:left;vertical-align:top}
thead th{background:#eef1f5;white-space:nowrap;position:sticky;top:0;z-index:1}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.code{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:nowrap}
tbody tr:nth-child(even){background:#fafbfc}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:18px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(400px,1fr));gap:16px;margin-top:14px}
figure.plot{margin:0;background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:10px}
figure.plot svg{width:100%;height:auto;display:block}
figure.single{max-width:900px;margin-top:14px}
table.md td:not(:first-child){white-space:nowrap}table.md td:first-child{min-width:14em}
figcaption{font-size:12px;color:#4a5563;margin-top:4px}
.scroll{overflow:auto;max-width:100%}.scroll.tall{max-height:900px;border:1px solid #e1e4e8}
#codes{width:100%}#codes td:nth-child(2){min-width:260px}
th button{all:unset;cursor:pointer;font-weight:600;display:block;width:100%}
th button:focus-visible{outline:2px solid #3b6ea8;outline-offset:2px}
th[aria-sort=ascending] button::after{content:" \\25B2"}th[aria-sort=descending] button::after{content:" \\25BC"}
"""

_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  heads.forEach(function (th, col) {
    var button = th.querySelector("button");
    if (!button) { return; }
    button.addEventListener("click", function () {
      var numeric = th.getAttribute("data-type") === "num";
      var current = th.getAttribute("aria-sort");
      var descending = numeric ? current !== "descending" : current === "ascending";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        var c = numeric ? parseFloat(x.getAttribute("data-v")) - parseFloat(y.getAttribute("data-v"))
                        : x.textContent.localeCompare(y.textContent);
        return descending ? -c : c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    });
  });
});
"""


def _page(title: str, body: str) -> str:
    """A whole HTML document: inline CSS and script, no external resource."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><main><header><h1>{_e(title)}</h1></header>\n{body}\n</main><script>{_JS}</script></body></html>\n"
    )
