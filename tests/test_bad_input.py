"""Bad input through the CLI: one ``error:`` line naming where, exit 2, no traceback, nothing half-written.

Every failing run writes to an output that already exists (a trained bundle,
a JSONL file, a metrics file) and checks it is byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import pathlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SMALL_MODEL, CliResult, TrainedRun, leftovers, snapshot, write_yaml

NOTE = "68-year-old man with atrial fibrillation on apixaban.\n"


def assert_user_error(result: CliResult, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, stderr exactly one ``error:`` line holding every fragment, no traceback."""
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err and "Traceback" not in result.out
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def good_record(i: int) -> bytes:
    return json.dumps({"id": f"n{i}", "text": f"note {i}: hypertension, follow-up", "labels": ["I10"]}).encode()


@dataclass(frozen=True)
class TrainCase:
    """A broken training setup: ``make(folder) -> (config path, fragments the error must name)``."""

    name: str
    make: Callable[[Path], tuple[Path, list[str]]]


def _jsonl_case(bad_line: bytes, line: int, *fragments: str) -> Callable[[Path], tuple[Path, list[str]]]:
    """JSONL data with good records and ``bad_line`` at 1-based ``line``."""

    def make(folder: Path) -> tuple[Path, list[str]]:
        lines = [good_record(i) for i in range(1, 6)]
        lines.insert(line - 1, bad_line)
        data = folder / "notes.jsonl"
        data.write_bytes(b"\n".join(lines) + b"\n")
        config = write_yaml(folder / "run.yaml", {"data": {"source": {"kind": "jsonl", "path": str(data)}}})
        return config, [f"{data}:{line}:", *fragments]

    return make


def _csv_missing_column(folder: Path) -> tuple[Path, list[str]]:
    data = folder / "notes.csv"
    data.write_text("id,body,labels\n1,hypertension follow-up,I10\n2,diabetes follow-up,E11.9\n")
    source = {"kind": "csv", "path": str(data)}
    config = write_yaml(folder / "run.yaml", {"data": {"source": source}})
    return config, [f"{data}:1:", "field 'text'", "missing column", "id, body, labels"]


def _config_case(text: str, *fragments: str, line: int | None = None) -> Callable[[Path], tuple[Path, list[str]]]:
    def make(folder: Path) -> tuple[Path, list[str]]:
        config = folder / "run.yaml"
        config.write_text(text)
        where = f"{config}:{line}:" if line else f"{config}:"
        return config, [where, *fragments]

    return make


def _missing_data_file(folder: Path) -> tuple[Path, list[str]]:
    data = folder / "absent.jsonl"
    config = write_yaml(folder / "run.yaml", {"data": {"source": {"kind": "jsonl", "path": str(data)}}})
    return config, [f"{data}: file not found"]


def _missing_config_file(folder: Path) -> tuple[Path, list[str]]:
    config = folder / "absent.yaml"
    return config, [f"{config}: file not found"]


TRAIN_CASES = [
    TrainCase(
        "empty text",
        _jsonl_case(b'{"id": "n9", "text": "", "labels": ["I10"]}', 3, "record 'n9'", "field 'text'", "empty"),
    ),
    TrainCase(
        "whitespace text",
        _jsonl_case(b'{"id": "n9", "text": " \\n\\t ", "labels": ["I10"]}', 2, "record 'n9'", "whitespace"),
    ),
    TrainCase(
        "non-UTF-8",
        _jsonl_case(b'{"id": "n9", "text": "caf\xe9 au lait", "labels": ["I10"]}', 4, "not valid UTF-8", "0xe9"),
    ),
    TrainCase("malformed JSON", _jsonl_case(b'{"id": "n9", "text": "x" "labels": ["I10"]}', 3, "malformed JSON")),
    TrainCase("not an object", _jsonl_case(b'["n9", "text"]', 2, "expected a JSON object")),
    TrainCase(
        "missing field",
        _jsonl_case(b'{"id": "n9", "labels": ["I10"]}', 2, "record 'n9'", "field 'text'", "missing field"),
    ),
    TrainCase(
        "duplicate id",
        _jsonl_case(good_record(1), 5, "record 'n1'", "duplicate note id", "first seen on line 1"),
    ),
    TrainCase(
        "empty label set",
        _jsonl_case(b'{"id": "n9", "text": "no codes", "labels": []}', 2, "record 'n9'", "field 'labels'", "empty"),
    ),
    TrainCase("CSV missing column", _csv_missing_column),
    TrainCase("config typo", _config_case("model:\n  Cc: 3\n", "unknown key 'model.Cc'")),
    TrainCase(
        "config typo with type", _config_case("model:\n  type: tfidf_lr.v1\n  Cc: 3\n", "unknown key 'model.Cc'")
    ),
    TrainCase("config wrong type", _config_case("labels:\n  min_freq: abc\n", "labels.min_freq", "integer")),
    TrainCase("config not a mapping", _config_case("- 1\n- 2\n", "expected a mapping")),
    TrainCase("malformed YAML", _config_case("name: x\nmodel:\n  C: [1, 2\nseed: 3\n", "malformed YAML", line=4)),
    TrainCase("missing data file", _missing_data_file),
    TrainCase("missing config file", _missing_config_file),
]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c.name for c in TRAIN_CASES])
def test_train_rejects_bad_input_and_keeps_the_old_bundle(
    cli, synthetic_run: TrainedRun, tmp_path: Path, case: TrainCase
) -> None:
    bundle = synthetic_run.copy_bundle(tmp_path / "model")
    before = snapshot(bundle)
    config, fragments = case.make(tmp_path)
    assert_user_error(cli("-q", "train", config, "-o", bundle), *fragments)
    assert snapshot(bundle) == before
    assert leftovers(tmp_path) == []


def test_error_is_the_last_line_after_progress_logs(cli, tmp_path: Path) -> None:
    config, fragments = _jsonl_case(b'{"id": "n9", "labels": ["I10"]}', 2, "field 'text'")(tmp_path)
    result = cli("train", config, "-o", tmp_path / "model")  # not quiet: INFO lines come first
    assert result.code == 2
    assert "Traceback" not in result.err
    lines = result.err.rstrip("\n").splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert all(fragment in lines[-1] for fragment in fragments)
    assert not (tmp_path / "model").exists()


def test_failure_while_saving_leaves_old_bundle_intact(
    cli, synthetic_run: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new bundle is built beside the old one; a crash mid-save removes it and keeps the old."""
    bundle = synthetic_run.copy_bundle(tmp_path / "model")
    before = snapshot(bundle)
    config = write_yaml(
        tmp_path / "run.yaml",
        {"data": {"source": {"kind": "synthetic", "n_notes": 60, "n_codes": 5}}, "model": SMALL_MODEL},
    )

    def disk_full(*args: object, **kwargs: object) -> str:
        raise OSError(28, "No space left on device", str(bundle / "README.md"))

    monkeypatch.setattr("medcoder.inference.model.render_model_card", disk_full)
    line = assert_user_error(cli("-q", "train", config, "-o", bundle), "No space left on device", code=1)
    assert str(bundle / "README.md") in line
    assert snapshot(bundle) == before
    assert leftovers(tmp_path) == []


def test_output_below_a_file_is_one_line_error(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("keep me\n")
    (tmp_path / "note.txt").write_text(NOTE)
    result = cli("-q", "predict", synthetic_run.bundle, tmp_path / "note.txt", "-o", blocker / "out.jsonl")
    assert_user_error(result, str(blocker), code=1)
    assert blocker.read_text() == "keep me\n"


# ------------------------------------------------------------------ predict
def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


NOT_UTF8 = b"fine line\nan \xff\xfe byte\n"
# name: (make the bad input, fragments of the --strict error, the error record's kind without --strict)
PREDICT_CASES = {
    "empty note": (_write("note.txt", b""), ["note.txt", "empty"], "empty_text"),
    "whitespace note": (_write("note.txt", b"  \n\t\n   \n"), ["note.txt", "whitespace"], "empty_text"),
    "non-UTF-8 note": (_write("note.txt", NOT_UTF8), ["note.txt:2:", "not valid UTF-8", "0xff"], "not_utf8"),
    "non-UTF-8 JSONL": (
        _write("notes.jsonl", b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "\x80"}\n'),
        ["notes.jsonl:2:", "not valid UTF-8"],
        "not_utf8",
    ),
    "malformed JSONL": (
        _write("notes.jsonl", b'{"id": "a", "text": "ok"}\n\n{"id": "b", "text": }\n'),
        ["notes.jsonl:3:", "malformed JSON"],
        "malformed_json",
    ),
    "missing text field": (
        _write("notes.jsonl", b'{"id": "a", "text": "ok"}\n{"id": "b", "body": "x"}\n'),
        ["notes.jsonl:2:", "field 'text'", "missing field"],
        "missing_field",
    ),
    "empty JSONL text": (
        _write("notes.jsonl", b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "  "}\n'),
        ["notes.jsonl:2:", "record 'b'", "field 'text'"],
        "empty_text",
    ),
    "id of wrong type": (
        _write("notes.jsonl", b'{"id": "a", "text": "ok"}\n{"id": ["b"], "text": "x"}\n'),
        ["notes.jsonl:2:", "field 'id'", "string or integer"],
        "wrong_type",
    ),
    "missing note file": (lambda folder: folder / "absent.txt", ["absent.txt: file not found"], None),
}


@pytest.mark.parametrize("name", list(PREDICT_CASES))
def test_predict_strict_rejects_bad_notes_and_keeps_old_output(
    cli, synthetic_run: TrainedRun, tmp_path: Path, name: str
) -> None:
    make, fragments, kind = PREDICT_CASES[name]
    good = tmp_path / "good.txt"
    good.write_text(NOTE)
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "previous run"}\n')
    path = make(tmp_path)
    # The bad file comes after a good one: nothing may be written for the good one either.
    strict = ["--strict"] if kind is not None else []  # a missing file stops every batch
    line = assert_user_error(cli("-q", "predict", synthetic_run.bundle, good, path, "-o", out, *strict), *fragments)
    assert str(tmp_path) in line
    assert out.read_text() == '{"id": "previous run"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["good.txt", "out.jsonl", *([path.name] * path.exists())]
    )


@pytest.mark.parametrize("name", [name for name, case in PREDICT_CASES.items() if case[2] is not None])
def test_predict_gives_bad_notes_an_error_record_and_goes_on(
    cli, synthetic_run: TrainedRun, tmp_path: Path, name: str
) -> None:
    make, fragments, kind = PREDICT_CASES[name]
    good = tmp_path / "good.txt"
    good.write_text(NOTE)
    path = make(tmp_path)
    out = tmp_path / "out.jsonl"
    result = cli("-q", "predict", synthetic_run.bundle, good, path, "-o", out)
    assert result.code == 0, result.err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    coded = [r for r in records if "codes" in r]
    errors = [r for r in records if "error" in r]
    assert records[0]["id"] == "good.txt" and records[0]["codes"]
    assert len(errors) == 1 and errors[0]["kind"] == kind
    assert errors[0]["source"].startswith(str(path)) and fragments[0].split(":")[0] in errors[0]["source"]
    assert len(coded) == len(records) - 1  # the good notes of the bad file are coded too
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert (summary["notes_read"], summary["coded"], summary["errors_by_kind"]) == (len(records), len(coded), {kind: 1})
    # the summary line, shown even with -q (rich may wrap it)
    assert f"{len(coded)} coded, 1 error ({kind} 1)" in " ".join(result.err.split())


@pytest.mark.parametrize(
    ("stdin", "extra", "fragments"),
    [
        (b"\xff\xfe not text", ["--strict"], ["<stdin>", "not valid UTF-8"]),
        (b"   \n\n", ["--strict"], ["<stdin>", "empty"]),
        (
            b'{"id": "a", "text": "ok"}\n{"id": "b" "text": "x"}\n',
            ["--stdin-format", "jsonl", "--strict"],
            ["<stdin>:2:", "malformed JSON"],
        ),
        (b"note", ["--stdin-format", "csv"], ["--stdin-format", "'csv'"]),
    ],
    ids=["non-UTF-8", "empty", "malformed JSONL", "unknown format"],
)
def test_predict_rejects_bad_stdin(
    cli, synthetic_run: TrainedRun, stdin: bytes, extra: list[str], fragments: list[str]
) -> None:
    result = cli("-q", "predict", synthetic_run.bundle, *extra, stdin=stdin)
    assert_user_error(result, *fragments)
    # --strict stops before the first batch is written: the good note "a" was not printed either
    assert result.out == ""


def test_predict_bad_stdin_records_become_error_records(cli, synthetic_run: TrainedRun) -> None:
    stdin = b'{"id": "a", "text": "ok"}\n{"id": "b" "text": "x"}\n{"id": "c", "text": 3}\n'
    result = cli("-q", "predict", synthetic_run.bundle, "--stdin-format", "jsonl", stdin=stdin)
    assert result.code == 0, result.err
    a, b, c = (json.loads(line) for line in result.out.splitlines())
    assert a["id"] == "a" and a["codes"]
    assert b == {
        "id": "<stdin>:2",
        "error": "malformed JSON: Expecting ',' delimiter (column 12)",
        "kind": "malformed_json",
        "source": "<stdin>:2",
    }
    assert c == {"id": "c", "error": "expected a string, found number", "kind": "wrong_type", "source": "<stdin>:3"}
    empty = cli("-q", "predict", synthetic_run.bundle, stdin=b"   \n\n")
    assert empty.code == 0, empty.err
    assert json.loads(empty.out) == {
        "id": "stdin",
        "error": "text is empty or whitespace",
        "kind": "empty_text",
        "source": "<stdin>",
    }


def test_evaluate_rejects_bad_data_and_keeps_old_metrics(cli, synthetic_run: TrainedRun, tmp_path: Path) -> None:
    data = tmp_path / "gold.jsonl"
    data.write_bytes(b"\n".join([good_record(1), good_record(2), good_record(1)]) + b"\n")
    out = tmp_path / "metrics.json"
    out.write_text("{}\n")
    result = cli("-q", "evaluate", synthetic_run.bundle, "--data", data, "--split", "all", "--output", out)
    assert_user_error(result, f"{data}:3:", "record 'n1'", "duplicate note id")
    assert out.read_text() == "{}\n"

    unsplit = tmp_path / "unsplit.jsonl"
    unsplit.write_bytes(good_record(1) + b"\n")
    result = cli("-q", "evaluate", synthetic_run.bundle, "--data", unsplit)
    assert_user_error(result, str(unsplit), "no notes in split 'test'", "--split all")


# ------------------------------------------------------------------ bundles
class _TouchOnUnpickle:
    """A pickle payload whose loading creates ``marker``: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _pickle_that_touches(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))


def test_pickle_payload_is_live(tmp_path: Path) -> None:
    """The payload used below does run code when unpickled, so its marker staying absent means something."""
    _pickle_that_touches(tmp_path / "model.pkl", tmp_path / "unpickled")
    pickle.loads((tmp_path / "model.pkl").read_bytes())
    assert (tmp_path / "unpickled").exists()


def _not_a_bundle(bundle: Path, tmp: Path) -> tuple[Path, list[str]]:
    folder = tmp / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text(NOTE)
    return folder, [f"{folder}:", "not a medcoder model directory"]


def _missing_folder(bundle: Path, tmp: Path) -> tuple[Path, list[str]]:
    return tmp / "nowhere", [f"{tmp / 'nowhere'}:", "not a model directory"]


def _foreign_format(bundle: Path, tmp: Path) -> tuple[Path, list[str]]:
    config = json.loads((bundle / "config.json").read_text())
    config["format"] = "sentence-transformers.v2"
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle, [f"{bundle / 'config.json'}:", "'sentence-transformers.v2'", "medcoder.bundle.v2"]


def _truncated_config(bundle: Path, tmp: Path) -> tuple[Path, list[str]]:
    text = (bundle / "config.json").read_text()
    (bundle / "config.json").write_text(text[: len(text) // 2])
    return bundle, [f"{bundle / 'config.json'}:", "malformed JSON"]


def _garbage_weights(bundle: Path, tmp: Path) -> tuple[Path, list[str]]:
    (bundle / "model.safetensors").write_bytes(b"\x00\x13garbage bytes, not tensors" * 40)
    return bundle, [f"{bundle / 'model.safetensors'}:", "unreadable weights"]


def _only_pickle(bundle: Path, tmp: Path) -> tuple[Path, list[str]]:
    folder = tmp / "pickled"
    folder.mkdir()
    _pickle_that_touches(folder / "model.pkl", tmp / "unpickled")
    return folder, [f"{folder}:", "no config.json"]


def _pickle_instead_of_weights(bundle: Path, tmp: Path) -> tuple[Path, list[str]]:
    (bundle / "model.safetensors").unlink()
    _pickle_that_touches(bundle / "model.pkl", tmp / "unpickled")
    return bundle, [f"{bundle}:", "missing model.safetensors"]


BUNDLE_CASES = {
    "not a bundle": _not_a_bundle,
    "missing folder": _missing_folder,
    "foreign format": _foreign_format,
    "truncated config.json": _truncated_config,
    "garbage safetensors": _garbage_weights,
    "only model.pkl": _only_pickle,
    "model.pkl instead of weights": _pickle_instead_of_weights,
}


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("name", list(BUNDLE_CASES))
def test_bad_bundles_are_refused_never_unpickled(
    cli, synthetic_run: TrainedRun, tmp_path: Path, name: str, command: str
) -> None:
    bundle = synthetic_run.copy_bundle(tmp_path / "model")
    target, fragments = BUNDLE_CASES[name](bundle, tmp_path)
    note = tmp_path / "note.txt"
    note.write_text(NOTE)
    args = ["predict", target, note] if command == "predict" else ["evaluate", target]
    result = cli("-q", *args)
    assert_user_error(result, *fragments)
    assert result.out == ""
    assert not (tmp_path / "unpickled").exists()


def test_paths_with_brackets_are_printed_verbatim(cli, tmp_path: Path) -> None:
    """Error text is not rich markup: ``[b]`` must not vanish and ``[/i]`` must not crash the printer."""
    model = tmp_path / "run[b]" / "[" / "i]"  # the path string holds "[b]" and "[/i]"
    result = cli("-q", "predict", model, tmp_path / "note.txt")
    assert_user_error(result, f"{model}: not a model directory")


# --------------------------------------------------------------- experiment
@pytest.mark.parametrize(
    ("variants", "fragments"),
    [
        ([{"name": "a"}, {"name": "b", "overrides": {"model": {"Cc": 1}}}], ["variant 'b'", "unknown key 'model.Cc'"]),
        ([{"name": "a"}, {"name": "a"}], ["variant names must be unique", "a"]),
        ([{"name": "a", "overrides": {"labels": {"min_freq": "abc"}}}], ["variant 'a'", "labels.min_freq"]),
    ],
    ids=["override typo", "duplicate variant", "override wrong type"],
)
def test_experiment_config_errors_stop_before_any_run(
    cli, tmp_path: Path, variants: list[dict], fragments: list[str]
) -> None:
    base = {"data": {"source": {"kind": "synthetic", "n_notes": 60, "n_codes": 5}}, "model": SMALL_MODEL}
    config = write_yaml(tmp_path / "exp.yaml", {"base": base, "variants": variants, "seeds": [0, 1]})
    assert_user_error(cli("-q", "experiment", config, "-o", tmp_path / "out"), f"{config}:", *fragments)
    assert not (tmp_path / "out").exists()


def test_labels_of_a_folder_without_labels(cli, tmp_path: Path) -> None:
    assert_user_error(cli("-q", "labels", tmp_path), f"{tmp_path}: no config.json, so this is not a medcoder model")


def test_train_refuses_to_replace_a_folder_that_is_not_a_bundle(cli, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "thesis.tex").write_text("months of work\n")
    config = write_yaml(
        tmp_path / "run.yaml",
        {"data": {"source": {"kind": "synthetic", "n_notes": 60, "n_codes": 5}}, "model": SMALL_MODEL},
    )
    result = cli("-q", "train", config, "-o", folder)
    assert (folder / "thesis.tex").read_text() == "months of work\n"
    assert_user_error(result, str(folder))


def test_demo_output_path_with_brackets(cli, tmp_path: Path) -> None:
    output = tmp_path / "demo[" / "i]"  # the path string holds "[/i]"
    result = cli("-q", "demo", "--n-notes", "50", "--output", output)
    assert result.code == 0
    assert f"medcoder predict {output / 'model'} {output / 'new_note.txt'}" in result.out
