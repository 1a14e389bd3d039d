"""``medcoder demo``: the whole pipeline on synthetic notes, in well under five minutes."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medcoder import load
from medcoder.config import DataConfig, LabelConfig, RunConfig
from medcoder.data.sources.synthetic import SyntheticSource
from medcoder.evaluation.report import format_metrics_table
from medcoder.io import atomic_write_text
from medcoder.progress import Reporter
from medcoder.training.run import train_run

# Written for the demo (no third-party text): a new note the model has never seen.
EXAMPLE_NOTE = """CHIEF COMPLAINT: shortness of breath and leg swelling.

HISTORY OF PRESENT ILLNESS: 71-year-old woman with a long history of hypertension and
type 2 diabetes mellitus who presents with three days of worsening dyspnea on exertion,
orthopnea and bilateral ankle edema. She denies chest pain. No fever or cough.

PAST MEDICAL HISTORY: HTN, T2DM on metformin, hyperlipidemia.

FAMILY HISTORY: father with colon cancer.

ASSESSMENT AND PLAN:
1. Acute on chronic congestive heart failure: start IV furosemide, daily weights.
2. Essential hypertension: continue lisinopril.
3. Type 2 diabetes mellitus without complications: continue metformin, sliding scale insulin.
4. Hyperlipidemia: continue atorvastatin.
Pneumonia was ruled out by chest x-ray.
"""


def demo_config(n_notes: int) -> RunConfig:
    """The demo run: synthetic ICD-10-CM notes, TF-IDF + LR, one global dev threshold."""
    return RunConfig(
        name="demo",
        data=DataConfig(source=SyntheticSource(n_notes=n_notes)),
        labels=LabelConfig(system="icd10cm"),
    )


def run_demo(output: Path, *, n_notes: int, reporter: Reporter, console: Console) -> None:
    """Train and evaluate the demo model, then code :data:`EXAMPLE_NOTE` with it."""
    config = demo_config(n_notes)
    console.print(f"[bold]medcoder demo[/]: {n_notes} synthetic notes, model {escape(config.model.type)}")
    result = train_run(config, output / "model", reporter=reporter)
    split_sizes = result.metrics["test"]["all_gold"]["n_docs"]
    console.print(
        f"\n[bold]Test metrics[/] ({split_sizes} notes, thresholds tuned on dev; "
        f"trained in {result.timing['train']:.1f}s):\n"
    )
    console.print(format_metrics_table(result.metrics["test"]), markup=False, highlight=False)

    note_path = output / "new_note.txt"
    atomic_write_text(note_path, EXAMPLE_NOTE)
    coder = load(result.bundle_dir)
    prediction = coder.predict([EXAMPLE_NOTE], ids=["new_note"], top_k=8, explain=True)[0]
    table = Table(title=f"Codes for {escape(str(note_path))} (top 8; predicted = above the dev-tuned threshold)")
    for column in ("rank", "code", "description", "probability", "predicted", "strongest evidence"):
        table.add_column(column)
    for code in prediction.codes:
        table.add_row(
            str(code.rank),
            escape(code.code),
            escape(code.description or ""),
            f"{code.probability:.3f}",
            "yes" if code.predicted else "",
            escape(f'"{code.evidence[0].text}"' if code.evidence else ""),
        )
    console.print(table)
    console.print(
        f"\nModel: {result.bundle_dir} (model card: {result.bundle_dir / 'README.md'})\n"
        f"Code any note with:  medcoder predict {result.bundle_dir} {note_path}",
        markup=False,
        highlight=False,
        soft_wrap=True,  # paths are copied from here: never break them
    )
