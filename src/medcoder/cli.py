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
from medcoder.serve.settings import ServeSettings

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
_SERVE = ServeSettings()  # the defaults of `medcoder serve` and `medcoder feedback export` (they live there only)


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
    """Train a saved system (a model, a reranked or retrieval system: the config's kind), tune it on dev,
    evaluate it on test and save a bundle."""
    from medcoder.config import load_config
    from medcoder.config.files import trained_kinds
    from medcoder.registry import SYSTEMS

    kinds = trained_kinds()  # a file without `kind` trains a model
    loaded = load_config(config, tuple(sorted(kinds, key=lambda kind: kinds[kind] != "model")))
    trainer = SYSTEMS.trainer(kinds[loaded.kind])
    result = trainer(loaded, output, reporter=RichReporter(), source=str(config))
    if not result.written:  # a rank other than 0 under torchrun: rank 0 writes the bundle and reports
        return
    sys.stdout.write(f"{result.what} written to {result.path}\n\n")
    sys.stdout.write(result.report)


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


@contextlib.contextmanager
def _batch_progress() -> Iterator:
    """A bar of the input read (notes done, notes/s) for ``predict`` in a terminal; None elsewhere (it logs)."""
    if not err_console.is_terminal:
        yield None
        return
    from rich.progress import TaskProgressColumn, TimeRemainingColumn

    columns = [
        SpinnerColumn(),
        TextColumn("coding notes"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[notes]} notes, {task.fields[rate]} notes/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False) as bar:
        task_id = bar.add_task("coding notes", total=None, notes="0", rate="-")

        def update(state) -> None:  # a medcoder.inference.batch.BatchProgress
            rate = f"{state.notes_per_second:,.0f}" if state.seconds > 0 else "-"
            bar.update(
                task_id, completed=state.bytes_read, total=state.bytes_total, notes=f"{state.notes:,}", rate=rate
            )

        yield update


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Model directory.")],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Notes: .jsonl files (one record a line), .parquet files (one a row), other files (one note each); "
            "'-' or none: stdin."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="JSONL file to write (default stdout). Written as OUT.partial with OUT.progress.json beside it, "
            "renamed to OUT when complete; the summary goes to OUT.summary.json.",
        ),
    ] = None,
    top_k: Annotated[int, typer.Option(min=0, help="Also list the k best-ranked codes below the threshold.")] = 0,
    explain: Annotated[
        bool, typer.Option("--explain", help="Add the text spans behind each code (models that can explain).")
    ] = False,
    stdin_format: Annotated[str, typer.Option(help="How to read stdin: 'text' (one note) or 'jsonl'.")] = "text",
    text_field: Annotated[str, typer.Option(help="Text field of JSONL/Parquet input.")] = "text",
    id_field: Annotated[str, typer.Option(help="Id field of JSONL/Parquet input.")] = "id",
    pair_field: Annotated[
        str, typer.Option(help="Second-text field of JSONL/Parquet input (sentence-pair models only).")
    ] = "text_pair",
    batch_size: Annotated[int, typer.Option(min=1, help="Records coded at once; each batch is written as it ends.")] = (
        256
    ),
    shard: Annotated[
        str | None,
        typer.Option(
            help="I/N: code only shard I of N (0-based, 0/4 ... 3/4): the records whose position among all records "
            "of all inputs (0, 1, 2...; bad ones count, blank lines do not) is I modulo N. Give each shard its own -o."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue an interrupted run of the same command (-o needed); no note is lost or doubled."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start over, discarding an interrupted run's progress at -o.")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Stop at the first record that cannot be coded, instead of an error record."),
    ] = False,
    checkpoint_every: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds between updates of OUT.progress.json (0: after every batch); a kill loses at most this much.",
        ),
    ] = 1.0,
) -> None:
    """Code new notes, streamed: one JSON line per note with codes, descriptions and probabilities.

    A record that cannot be coded (empty text, a field of the wrong type, a broken line) gets an error record
    {"id", "error", "kind", "source"} in its place and the batch goes on (--strict: it stops the batch).
    """
    from medcoder import load
    from medcoder.inference.batch import parse_shard, run_batch
    from medcoder.inference.inputs import PredictionInputs

    if stdin_format not in ("text", "jsonl"):
        raise MedcoderError(f"--stdin-format must be 'text' or 'jsonl', got {stdin_format!r}")
    shard_pair = parse_shard(shard) if shard is not None else (0, 1)
    coder = load(model)
    read = PredictionInputs(
        tuple(inputs or [Path("-")]),
        stdin_format=stdin_format,
        text_field=text_field,
        id_field=id_field,
        pair_field=pair_field if coder.needs_pairs else None,
    )
    with _batch_progress() as progress:
        summary = run_batch(
            coder,
            read,
            output,
            batch_size=batch_size,
            top_k=top_k,
            explain=explain,
            shard=shard_pair,
            resume=resume,
            overwrite=overwrite,
            strict=strict,
            progress=progress,
            checkpoint_seconds=checkpoint_every,
        )
    (logger.warning if summary.errors else logger.info)("%s", summary.line())
    if output is not None:
        logger.info("wrote %s (summary: %s)", output, output.name + ".summary.json")


@app.command()
def synthesize(
    output: Annotated[Path, typer.Argument(help="JSONL file to write (id, text, labels, split per line).")],
    shape: Annotated[
        str, typer.Option(help="'mimic3-full' or 'mimic4-icd10': the benchmark's split sizes and codes.")
    ] = "mimic3-full",
    fraction: Annotated[
        float, typer.Option(min=0.0001, max=1.0, help="Scale every split by this (0.1 = a tenth).")
    ] = 1.0,
    n_codes: Annotated[int | None, typer.Option(min=2, help="ICD-10-CM codes to draw (default: the shape's).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same corpus, byte for byte.")] = 0,
) -> None:
    """Write a synthetic corpus at MIMIC size (long notes, thousands of codes, long tail), streamed to JSONL."""
    from medcoder.data.synthetic_scale import SHAPES, ScaleSource, write_scale_corpus

    if shape not in SHAPES:
        raise MedcoderError(f"--shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    source = ScaleSource.scaled(shape, fraction, seed=seed, **({"n_codes": n_codes} if n_codes else {}))
    with RichReporter().task("writing notes", total=source.n_notes) as update:
        written = write_scale_corpus(source, output, progress=update)
    logger.info("wrote %d notes to %s", written, output)


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
    """Stage 1: train an encoder on unlabeled in-domain notes (masked-LM, or SimCSE for a sentence encoder).

    The output folder is a Hugging Face encoder: use it as `encoder:` of a transformer.v1 model.
    """
    from medcoder.config import load_config
    from medcoder.training.adapt_domain import adapt_domain

    report = adapt_domain(load_config(config, "adapt_domain"), output, reporter=RichReporter())
    sys.stdout.write(f"encoder written to {output}\n{report['summary']}\n")


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
    from medcoder.training.retrieval import train_retrieval

    result = train_retrieval(load_config(config, "retrieval"), output, reporter=RichReporter(), source=str(config))
    sys.stdout.write(result.report)
    sys.stdout.write(f"\nretrieval system written to {output}\n")


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


@app.command()
def report(
    source: Annotated[Path, typer.Argument(help="A model bundle or an experiment folder.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The HTML file to write (default SOURCE/report.html).")
    ] = None,
) -> None:
    """Write one self-contained HTML report: metrics, F1 by code frequency, calibration, PR curve, per-code table."""
    from medcoder.html_report import write_html_report

    written = write_html_report(source, output, progress=RichReporter())
    logger.info("wrote %s", written)


@app.command()
def serve(
    model: Annotated[
        Path, typer.Argument(help="The saved system to serve (a model, ensemble, retrieval or rerank bundle).")
    ],
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --tokens.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    tokens: Annotated[
        Path | None, typer.Option("--tokens", help="JSON file of hashed per-coder tokens (`medcoder token add`).")
    ] = None,
    database: Annotated[
        str, typer.Option("--db", help="Audit database: a SQLAlchemy URL (default: SQLite file in this folder).")
    ] = _SERVE.database_url,
    max_note_chars: Annotated[
        int, typer.Option(min=1, help="Longest note accepted (characters); longer: 413.")
    ] = _SERVE.max_note_chars,
    max_batch: Annotated[int, typer.Option(min=1, help="Most notes in one request; more: 413.")] = _SERVE.max_batch,
    workers: Annotated[int, typer.Option(min=1, help="Inference threads.")] = _SERVE.workers,
    queue: Annotated[
        int, typer.Option(min=0, help="Requests that may wait for a worker; one more gets 503.")
    ] = _SERVE.queue_size,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Request timeout in seconds (504 after it).")
    ] = _SERVE.request_timeout_s,
    batch_notes: Annotated[
        int, typer.Option(min=1, help="Waiting requests coded together in one model call, up to this many notes.")
    ] = _SERVE.batch_notes,
) -> None:
    """Serve the REST API and the coder's web page (http://HOST:PORT/); the model is loaded once, at start-up."""
    import uvicorn

    from medcoder import load
    from medcoder.serve.app import create_app
    from medcoder.serve.settings import ServeSettings

    settings = ServeSettings(
        host=host,
        port=port,
        tokens_file=tokens,
        database_url=database,
        max_note_chars=max_note_chars,
        max_batch=max_batch,
        workers=workers,
        queue_size=queue,
        request_timeout_s=timeout,
        batch_notes=batch_notes,
    )
    settings.check_access()
    logger.info("loading %s", model)
    coder = load(model)  # a bad folder fails here, in one line, before the server starts
    application = create_app(coder, settings)
    logger.info("serving on http://%s:%d/ (audit: %s)", host, port, database.split("@")[-1])
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=10)


token_app = typer.Typer(help="API tokens of the coders (`medcoder serve --tokens FILE`).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("add")
def token_add(
    user: Annotated[str, typer.Argument(help="The coder's name, as the audit will record it.")],
    tokens: Annotated[Path, typer.Option("--tokens", help="The tokens file (created if missing).")],
    admin: Annotated[bool, typer.Option("--admin", help="May read every coder's decisions.")] = False,
) -> None:
    """Make a new token for USER: its hash goes into the file, the token is printed once."""
    from medcoder.serve.auth import add_token

    token = add_token(tokens, user, admin=admin)
    sys.stdout.write(token + "\n")
    logger.info("token for %s added to %s (shown once: keep it)", user, tokens)


feedback_app = typer.Typer(help="The coders' decisions kept by `medcoder serve`.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("export")
def feedback_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="The JSONL training file to write.")],
    database: Annotated[str, typer.Option("--db", help="The audit database (SQLAlchemy URL).")] = _SERVE.database_url,
    coder: Annotated[str | None, typer.Option(help="Only this coder's decisions.")] = None,
    with_text_only: Annotated[
        bool, typer.Option("--with-text-only", help="Only notes whose text the coder kept.")
    ] = False,
) -> None:
    """Write the decisions as training records: per note, the accepted and added codes (``labels``)."""
    from medcoder.serve.audit import export_feedback

    if database.startswith("sqlite:///") and database != "sqlite:///:memory:":
        path = Path(database.removeprefix("sqlite:///"))
        if not path.is_file():
            raise MedcoderError(f"{path}: no audit database here (give --db, the URL `medcoder serve --db` used)")
    counts = export_feedback(database, output, coder=coder, with_text_only=with_text_only)
    logger.info(
        "wrote %s: %d notes (%d with text), %d codes kept, %d rejected",
        output,
        counts["notes"],
        counts["with_text"],
        counts["labels"],
        counts["rejected"],
    )


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
