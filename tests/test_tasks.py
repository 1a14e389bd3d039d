"""The three task types through ``training.run.train_run`` on JSONL data written here.

- multiclass: a note's specialty from its keywords (argmax decision, accuracy/macro-F1).
- pair: NLI-like premise + hypothesis; the label depends on both texts together.
- multilabel: a JSONL source without splits; the stratified split is written to
  ``split_file`` and reused verbatim by the next run.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL_MODEL, run_main, write_jsonl

import medcoder
from medcoder.config import RunConfig
from medcoder.data.records import SPLITS
from medcoder.data.sources.jsonl import JsonlSource
from medcoder.data.sources.synthetic import SyntheticSource
from medcoder.data.splits import stratified_split
from medcoder.data.synthetic import generate_notes
from medcoder.training.run import train_run

SPECIALTY_WORDS = {
    "cardiology": "palpitations murmur angina troponin echocardiogram stent arrhythmia ejection".split(),
    "neurology": "seizure migraine tremor aphasia neuropathy electroencephalogram stroke ataxia".split(),
    "dermatology": "eczema psoriasis melanoma pruritus dermatitis biopsy lesion urticaria".split(),
}
FILLER = (
    "patient seen today in clinic reports symptoms for several weeks history reviewed plan discussed "
    "follow up in two months labs ordered vitals stable medications reconciled"
).split()
FINDINGS = "fever cough rash edema nausea headache wheezing syncope".split()
# Few fixed closings: random filler words let the premise block memorise noise on 200 pairs.
CLOSINGS = ("vitals stable", "plan discussed with the patient", "follow up in two weeks")


def _run_config(source: dict[str, Any], task: str, **data: Any) -> RunConfig:
    return RunConfig.model_validate({"task": {"type": task}, "data": {"source": source, **data}, "model": SMALL_MODEL})


def _splits(n: int, counts: tuple[int, int, int]) -> list[str]:
    assert sum(counts) == n
    return [split for split, k in zip(SPLITS, counts, strict=True) for _ in range(k)]


def _walk_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for value in node.values() for k in _walk_keys(value)}
    if isinstance(node, list):
        return {k for value in node for k in _walk_keys(value)}
    return set()


# --------------------------------------------------------------- multiclass
def specialty_notes(seed: int = 0) -> list[dict[str, Any]]:
    """40 notes per specialty: three of its own keywords, one of another specialty's, filler."""
    rng = random.Random(seed)
    records = []
    for specialty, words in SPECIALTY_WORDS.items():
        others = [w for s, ws in SPECIALTY_WORDS.items() if s != specialty for w in ws]
        for i, split in enumerate(_splits(40, (24, 8, 8))):
            tokens = rng.sample(words, 3) + [rng.choice(others)] + rng.sample(FILLER, 8)
            rng.shuffle(tokens)
            records.append({"id": f"{specialty}-{i}", "text": " ".join(tokens), "labels": specialty, "split": split})
    rng.shuffle(records)
    return records


def test_multiclass_specialty_from_keywords(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "specialty.jsonl", specialty_notes())
    result = train_run(_run_config({"kind": "jsonl", "path": str(data)}, "multiclass"), tmp_path / "model")

    test = result.metrics["test"]
    assert test["n_docs"] == 24 and test["n_classes"] == 3
    assert test["accuracy"] > 0.8
    assert 0.8 < test["macro_f1"] <= 1.0
    keys = _walk_keys(result.metrics)
    assert "map" not in keys and "all_gold" not in keys and "micro_f1" not in keys
    assert json.loads((result.bundle_dir / "thresholds.json").read_text())["decision"] == "argmax"
    # softmax probabilities are left as they are: no calibration for a single-label task
    assert "calibration" not in result.metrics and not (result.bundle_dir / "calibration.json").exists()

    # The saved bundle decides by argmax: exactly one class per note, the right one for clear notes.
    predictor = medcoder.load(result.bundle_dir)
    assert predictor.codes == ["cardiology", "dermatology", "neurology"]
    notes = ["troponin rising, new murmur and angina", "itchy eczema with pruritus, biopsy of lesion"]
    predictions = predictor.predict(notes, top_k=3)
    assert [[c.code for c in p.predicted] for p in predictions] == [["cardiology"], ["dermatology"]]
    for prediction in predictions:
        assert sum(c.probability for c in prediction.codes) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------- pair
def nli_pairs(seed: int = 0) -> list[dict[str, Any]]:
    """Premise: two findings, each "present" or "absent". Hypothesis: one of them, same or flipped status.

    Neither text alone tells the class (every hypothesis wording occurs under
    both labels alike); the n-gram "<finding> <status>" shared by both texts
    does, which is what the premise x hypothesis product block of the features sees.
    """
    rng = random.Random(seed)
    records = []
    for i, split in enumerate(_splits(320, (200, 40, 80))):
        first, second = rng.sample(FINDINGS, 2)
        status = {first: rng.choice(["present", "absent"]), second: rng.choice(["present", "absent"])}
        premise = f"on examination {first} {status[first]} and {second} {status[second]} . {rng.choice(CLOSINGS)} ."
        target = rng.choice([first, second])
        label = "entailment" if i % 2 == 0 else "contradiction"
        flipped = {"present": "absent", "absent": "present"}[status[target]]
        claimed = status[target] if label == "entailment" else flipped
        records.append(
            {"id": f"p{i}", "premise": premise, "hypothesis": f"{target} {claimed}", "label": label, "split": split}
        )
    return records


def test_pair_task_learns_from_both_texts(tmp_path: Path) -> None:
    records = nli_pairs()
    data = write_jsonl(tmp_path / "nli.jsonl", records)
    source = {
        "kind": "jsonl",
        "path": str(data),
        "text_field": "premise",
        "text_pair_field": "hypothesis",
        "labels_field": "label",
    }
    result = train_run(_run_config(source, "pair"), tmp_path / "pair")
    test = result.metrics["test"]
    assert test["n_docs"] == 80 and test["n_classes"] == 2
    assert test["accuracy"] >= 0.8  # chance is 0.5
    assert "map" not in _walk_keys(result.metrics)

    # Control: the hypothesis alone carries no signal, so the pair model's accuracy comes from the pairing.
    alone = [{**r, "text": r["hypothesis"]} for r in records]
    hypothesis_only = write_jsonl(tmp_path / "hypothesis.jsonl", alone)
    control = train_run(
        _run_config({"kind": "jsonl", "path": str(hypothesis_only), "labels_field": "label"}, "multiclass"),
        tmp_path / "control",
    )
    assert control.metrics["test"]["accuracy"] < 0.65
    assert test["accuracy"] - control.metrics["test"]["accuracy"] > 0.2

    # A reloaded pair bundle needs the second text and agrees with training-time scoring.
    predictor = medcoder.load(result.bundle_dir)
    tests = [r for r in records if r["split"] == "test"]
    probabilities = predictor.predict_proba([r["premise"] for r in tests], pairs=[r["hypothesis"] for r in tests])
    accuracy = sum(
        predictor.codes[row.argmax()] == r["label"] for row, r in zip(probabilities, tests, strict=True)
    ) / len(tests)
    assert accuracy == pytest.approx(test["accuracy"])


def test_pair_bundle_from_the_cli(tmp_path: Path) -> None:
    """``evaluate --data`` reads the bundle's own field names; ``predict`` takes JSONL pairs."""
    records = nli_pairs(seed=1)
    data = write_jsonl(tmp_path / "nli.jsonl", records)
    source = {
        "kind": "jsonl",
        "path": str(data),
        "text_field": "premise",
        "text_pair_field": "hypothesis",
        "labels_field": "label",
    }
    result = train_run(_run_config(source, "pair"), tmp_path / "pair")
    out = tmp_path / "eval.json"
    evaluated = run_main(["-q", "evaluate", result.bundle_dir, "--data", data, "--output", out])
    assert evaluated.code == 0, evaluated.err
    assert json.loads(out.read_text()) == result.metrics["test"]

    tests = [r for r in records if r["split"] == "test"]
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl", [{"id": r["id"], "text": r["premise"], "text_pair": r["hypothesis"]} for r in tests]
    )
    predicted = run_main(["-q", "predict", result.bundle_dir, pairs])
    assert predicted.code == 0, predicted.err
    lines = [json.loads(line) for line in predicted.out.splitlines()]
    assert [p["id"] for p in lines] == [r["id"] for r in tests]
    assert all(len([c for c in p["codes"] if c["predicted"]]) == 1 for p in lines)
    chosen = [next(c["code"] for c in p["codes"] if c["predicted"]) for p in lines]
    correct = sum(code == r["label"] for code, r in zip(chosen, tests, strict=True))
    assert correct / len(tests) == pytest.approx(result.metrics["test"]["accuracy"])

    # A plain note has no second text: refused with one line, not a traceback.
    (tmp_path / "note.txt").write_text(tests[0]["premise"])
    refused = run_main(["-q", "predict", result.bundle_dir, tmp_path / "note.txt"])
    assert refused.code == 2 and refused.err.startswith(f"error: {tmp_path / 'note.txt'}: this model codes text pairs")
    no_pair = write_jsonl(tmp_path / "no_pair.jsonl", [{"id": "x", "text": tests[0]["premise"]}])
    refused = run_main(["-q", "predict", result.bundle_dir, no_pair, "--strict"])  # else: an error record
    assert refused.code == 2 and refused.err == f"error: {no_pair}:1: record 'x': field 'text_pair': missing field\n"


# --------------------------------------------------------------- multilabel
def test_multilabel_jsonl_split_file_written_then_reused(tmp_path: Path) -> None:
    notes = generate_notes(SyntheticSource(n_notes=200, n_codes=10, seed=5))
    data = write_jsonl(
        tmp_path / "notes.jsonl", [{"id": n.id, "text": n.text, "labels": list(n.labels)} for n in notes]
    )
    split_file = tmp_path / "splits.json"
    source = {"kind": "jsonl", "path": str(data)}

    first = train_run(_run_config(source, "multilabel", split_file=str(split_file), split_seed=0), tmp_path / "a")
    assert split_file.is_file()
    written = split_file.read_bytes()
    saved = json.loads(written)
    assignments = saved["assignments"]
    assert saved["seed"] == 0 and saved["ratios"] == [0.7, 0.1, 0.2]
    assert set(assignments) == {n.id for n in notes}
    sizes = Counter(assignments.values())
    assert set(sizes) == set(SPLITS)
    assert abs(sizes["train"] - 140) <= 4 and abs(sizes["dev"] - 20) <= 4 and abs(sizes["test"] - 40) <= 4
    # Stratified: every code with enough notes reaches every split.
    code_docs = Counter(code for n in notes for code in n.labels)
    for code, count in code_docs.items():
        if count >= 10:
            assert {assignments[n.id] for n in notes if code in n.labels} == set(SPLITS), code
    bundle_info = json.loads((first.bundle_dir / "config.json").read_text())["info"]
    assert bundle_info["split_sizes"] == dict(sizes)
    assert first.metrics["test"]["all_gold"]["n_docs"] == sizes["test"]
    assert first.metrics["test"]["all_gold"]["micro_f1"] > 0.5

    # A different seed would split differently; the existing file must win.
    other_seed = stratified_split(JsonlSource(path=data).read(), ratios=(0.7, 0.1, 0.2), seed=1)
    assert other_seed != assignments
    second = train_run(_run_config(source, "multilabel", split_file=str(split_file), split_seed=1), tmp_path / "b")
    assert split_file.read_bytes() == written
    assert second.metrics == first.metrics
    assert json.loads((second.bundle_dir / "config.json").read_text())["info"]["split_sizes"] == dict(sizes)
