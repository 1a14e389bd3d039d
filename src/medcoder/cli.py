"""The ``medcoder`` command line. Each command is a thin call into the library.

Errors the user can fix (``MedcoderError``) print one line and exit with
status 2; no traceback. A file-system failure (``OSError``: permission denied,
disk full, an output path below a file) prints one line and exits with status 1.
Run with ``--debug`` to see the traceback anyway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from medcoder.errors import MedcoderError

app = typer.Typer(
    name="medcoder",
    help="Code clinical notes with ICD codes: train, evaluate, predict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
out_console = Console()
logger = logging.getLogger("medcoder")
_state = {"debug": False}


class RichReporter:
    """Progress bars on stderr (only when it is a terminal; logs otherwise)."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator:
        if not err_console.is_terminal:
            from medcoder.progress import LogReporter

            with LogReporter().task(description, total) as update:
                yield update
            return
        columns = [
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=err_console, transient=False) as bar:
            task_id = bar.add_task(description, total=total)

            def update(done: int, total_: int) -> None:
                bar.update(task_id, completed=done, total=total_)

            yield update
            bar.update(task_id, completed=bar.tasks[0].total or 1, total=bar.tasks[0].total or 1)


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(console=err_console, show_path=False, show_time=False, markup=False)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    _state["debug"] = debug


def _write_or_print(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        from medcoder.io import atomic_write_text

        atomic_write_text(output, text)
        logger.info("wrote %s", output)


# ----------------------------------------------------------------- commands
@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Where the demo model and metrics go.")] = Path("runs/demo"),
    n_notes: Annotated[int, typer.Option(min=50, help="Synthetic notes to generate.")] = 1500,
) -> None:
    """Train TF-IDF+LR on synthetic ICD-10-CM notes, evaluate it and code a new note."""
    from medcoder.demo import run_demo

    run_demo(output, n_notes=n_notes, reporter=RichReporter(), console=out_console)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model directory to write.")],
) -> None:
    """Train one model (or a reranked system), tune thresholds on dev, evaluate on test, save a bundle."""
    from medcoder.config import load_config
    from medcoder.config.rerank import RerankConfig
    from medcoder.evaluation.report import format_metrics_table
    from medcoder.training.run import train_run

    loaded = load_config(config, ("train", "rerank"))
    if isinstance(loaded, RerankConfig):
        from medcoder.evaluation.report import render_rerank_report
        from medcoder.training.rerank import run_rerank

        record = run_rerank(loaded, output, reporter=RichReporter())
        sys.stdout.write(f"reranked system written to {output}\n\n")
        sys.stdout.write(render_rerank_report(record))
        return
    result = train_run(loaded, output, reporter=RichReporter())
    sys.stdout.write(f"model written to {result.bundle_dir}\n\n")
    sys.stdout.write(format_metrics_table(result.metrics["test"]))


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    data: Annotated[
        Path | None, typer.Option(help="JSONL notes with gold labels; default: the model's own data config.")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate (train/dev/test); 'all' for every note.")] = "test",
    output: Annotated[Path | None, typer.Option(help="Write the metrics JSON here.")] = None,
) -> None:
    """Evaluate a saved model (any saved system) with its dev-tuned thresholds."""
    from medcoder.inference.evaluate import evaluate_system

    coder, metrics = evaluate_system(model, data=data, split=split, reporter=RichReporter())
    sys.stdout.write(coder.metrics_table(metrics))
    if output is not None:
        from medcoder.io import atomic_write_json

        atomic_write_json(output, metrics)


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Text files (one note each) or .jsonl files; '-' or none: stdin.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL file to write (default stdout).")] = None,
    top_k: Annotated[int, typer.Option(min=0, help="Also list the k best-ranked codes below the threshold.")] = 0,
    explain: Annotated[
        bool, typer.Option("--explain", help="Add the text spans behind each code (models that can explain).")
    ] = False,
    stdin_format: Annotated[str, typer.Option(help="How to read stdin: 'text' (one note) or 'jsonl'.")] = "text",
    text_field: Annotated[str, typer.Option(help="Text field of JSONL input.")] = "text",
    id_field: Annotated[str, typer.Option(help="Id field of JSONL input.")] = "id",
    pair_field: Annotated[
        str, typer.Option(help="Second-text field of JSONL input (sentence-pair models only).")
    ] = "text_pair",
) -> None:
    """Code new notes; one JSON line per note with codes, descriptions and probabilities."""
    from medcoder import load
    from medcoder.inference.inputs import read_prediction_inputs

    if stdin_format not in ("text", "jsonl"):
        raise MedcoderError(f"--stdin-format must be 'text' or 'jsonl', got {stdin_format!r}")
    reporter = RichReporter()
    coder = load(model)
    ids, texts, pairs = read_prediction_inputs(
        inputs or [],
        stdin_format=stdin_format,
        text_field=text_field,
        id_field=id_field,
        pair_field=pair_field if coder.needs_pairs else None,
    )
    with reporter.task("coding notes", total=len(texts)) as update:
        predictions = coder.predict(texts, ids=ids, pairs=pairs, top_k=top_k, explain=explain, progress=update)
    lines = "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in predictions)
    _write_or_print(lines, output)


@app.command()
def labels(
    source: Annotated[Path, typer.Argument(help="A model directory, a labels.json, or a run config (YAML).")],
    top: Annotated[int, typer.Option(min=0, help="How many codes to list.")] = 20,
) -> None:
    """Inspect a label space: size, filters, unknown codes, most frequent codes."""
    from medcoder.inference.labels_view import describe_label_source

    sys.stdout.write(describe_label_source(source, top=top))


@app.command()
def experiment(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML): base, variants, seeds.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for bundles and the results table.")],
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Train every run again; by default a finished run whose bundle was made from the same config is reused.",
        ),
    ] = False,
) -> None:
    """Run variants x seeds and write results.md / results.json (mean ± sd over seeds).

    Run it again after a stop and it continues: finished runs with unchanged configs are reused.
    """
    from medcoder.config import load_config
    from medcoder.evaluation.report import render_experiment_table
    from medcoder.training.experiment import run_experiment

    loaded = load_config(config, "experiment")
    rows = run_experiment(loaded, output, source=str(config), reporter=RichReporter(), reuse=not fresh)
    sys.stdout.write(render_experiment_table(loaded.name, rows))
    sys.stdout.write(f"\nresults: {output / 'results.md'}, {output / 'results.json'}\n")


@app.command("adapt-domain")
def adapt_domain_command(
    config: Annotated[Path, typer.Argument(help="Stage config (YAML): encoder, corpus, max_tokens, train.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the adapted encoder.")],
) -> None:
    """Stage 1: continue masked-LM training of an encoder on unlabeled in-domain notes.

    The output folder is a Hugging Face encoder: use it as `encoder:` of a transformer.v1 model.
    """
    from medcoder.config import load_config
    from medcoder.training.adapt_domain import adapt_domain

    report = adapt_domain(load_config(config, "adapt_domain"), output, reporter=RichReporter())
    sys.stdout.write(
        f"encoder written to {output}\n"
        f"held-out MLM loss {report['dev_mlm_loss_before']:.3f} -> {report['dev_mlm_loss_after']:.3f} "
        f"(perplexity {report['dev_perplexity_before']:.1f} -> {report['dev_perplexity_after']:.1f}); "
        f"{report['train_blocks']} training blocks of <= {report['block_tokens']} tokens"
        + ("; new MLM head" if report["created_mlm_head"] else "")
        + "\n"
    )


@app.command("retrieval")
def retrieval_command(
    config: Annotated[Path, typer.Argument(help="Retrieval config (YAML): data, encoder, classifier, index, fusion.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the bi-encoder and the results.")],
) -> None:
    """Fine-tune the code bi-encoder, index the whole ICD-10-CM catalog, fuse with a classifier, report.

    Writes a retrieval bundle (biencoder/, index/, classifier/, config.json, results.md): `medcoder predict` codes
    notes with it, `medcoder.load` opens it.
    """
    from medcoder.config import load_config
    from medcoder.evaluation.report import render_retrieval_report
    from medcoder.training.retrieval import run_retrieval

    result = run_retrieval(load_config(config, "retrieval"), output, reporter=RichReporter(), source=str(config))
    sys.stdout.write(render_retrieval_report(result))
    sys.stdout.write(f"\nretrieval system written to {output} (report: {output / 'results.md'})\n")


@app.command()
def schema(
    kind: Annotated[str, typer.Argument(help="Config kind: train, experiment, adapt_domain or retrieval.")] = "train",
) -> None:
    """Print the JSON schema of a config file kind, with every registered model type and data source.

    Editors with a YAML language server validate and complete configs against it.
    """
    from medcoder.config import config_kinds

    kinds = config_kinds()
    if kind not in kinds:
        raise MedcoderError(f"unknown config kind {kind!r} (expected one of {', '.join(kinds)})")
    sys.stdout.write(json.dumps(kinds[kind].model_json_schema(), indent=2) + "\n")


def _print_error(message: str) -> None:
    # escape(): a path or record id such as "runs[b]" or "x[/i]" is text, not rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    try:
        app(args=argv, prog_name="medcoder")
    except MedcoderError as exc:
        if _state["debug"]:
            raise
        _print_error(str(exc))
        return 2
    except OSError as exc:  # the file system said no (permission, disk full, a path that is a file)
        if _state["debug"]:
            raise
        _print_error(str(exc))
        return 1
    except SystemExit as exc:  # typer's standalone mode always ends with SystemExit
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
