"""Every registered kind of saved system keeps the one contract (``SYSTEMS.names()``, as test_conformance does
for models).

Each kind has a builder here that trains a small bundle of it through ``medcoder train``; a kind registered
without one fails :func:`test_every_registered_kind_is_checked`. The checks (:data:`CHECKS`) take only the
bundle folder, so a kind defined elsewhere (tests/test_extension.py's toy kind) runs them on its own bundle:

- ``predict`` agrees with ``predict_proba`` and the decision rule, ranked by the one tie order;
- the explain contract: evidence spans inside the note (the same from ``explain`` and ``predict``), or one
  ``MedcoderError`` naming why, from both, before any work;
- save -> move -> load gives identical scores, records and identity; a changed byte changes the identity;
- ``evaluate`` on the saved bundle equals the test figures written when it was trained;
- the service (``/v1/code``, ``/v1/model``) and batch prediction code it and name it by its identity.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SYNTHETIC_SOURCE, TrainedRun, run_main, write_yaml

import medcoder
from medcoder.data.dataset import load_dataset
from medcoder.errors import MedcoderError
from medcoder.inference.base import Coder
from medcoder.registry import SYSTEMS

N_NOTES = 6  # notes the prediction checks code


# ----------------------------------------------------------------- one small bundle of each built-in kind
def _train(config: Path, output: Path) -> Path:
    result = run_main(["train", config, "-o", output])
    assert result.code == 0, result.err
    return output


def _retrieval(root: Path, synthetic_run: TrainedRun, tiny_bert: str) -> Path:
    from medcoder.data.synthetic import INVENTORY

    config = {
        "kind": "retrieval",
        "data": {"source": SYNTHETIC_SOURCE},
        "encoder": tiny_bert,
        "max_seq_length": 32,
        "classifier": str(synthetic_run.bundle),
        "train": {"epochs": 0},
        "index": {"prefixes": sorted({e.code[:3] for e in INVENTORY})[:12], "cache_dir": str(root / "cache")},
        "fusion": {"weights": [0.0, 1.0], "novel_weights": [1.0], "floors": [0.5]},
    }
    return _train(write_yaml(root / "retrieval.yaml", config), root / "retrieval")


def _rerank(root: Path, synthetic_run: TrainedRun, tiny_bert: str) -> Path:
    config = {
        "kind": "rerank",
        "name": "tiny-rerank",
        "data": {"source": SYNTHETIC_SOURCE},
        "labels": {"system": "icd10cm"},
        "folds": 2,
        "bases": [{"name": "unigrams", "model": {"type": "tfidf_lr.v1", "C": 10, "n_jobs": 1}}],
        "features": ["frequency", "lexical"],
        "candidates": [5],
        "leave_one_out": False,
        "ranker": {"n_estimators": 60, "early_stopping_rounds": 20},
    }
    return _train(write_yaml(root / "rerank.yaml", config), root / "rerank")


BUILDERS: dict[str, Callable[[Path, TrainedRun, str], Path]] = {
    "model": lambda root, run, bert: run.bundle,
    "retrieval": _retrieval,
    "rerank": _rerank,
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, synthetic_run, tiny_bert) -> Callable[[str], Path]:
    built: dict[str, Path] = {}

    def bundle(kind: str) -> Path:
        if kind not in built:
            built[kind] = BUILDERS[kind](tmp_path_factory.mktemp(kind), synthetic_run, tiny_bert)
        return built[kind]

    return bundle


# ----------------------------------------------------------------- the checks
def test_notes(coder: Coder) -> list[Any]:
    """The test split of the data the system was trained on."""
    return load_dataset(coder.data_config())["test"]


test_notes.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def check_predict_agrees_with_proba_and_the_decision_rule(path: Path, tmp_path: Path) -> None:
    coder = medcoder.load(path)
    texts = [n.text for n in test_notes(coder)[:N_NOTES]]
    proba = coder.predict_proba(texts)
    assert proba.shape == (len(texts), len(coder.codes)) and proba.dtype == np.float32
    column = {code: j for j, code in enumerate(coder.codes)}
    everything = coder.predict(texts, top_k=len(coder.codes))
    default = coder.predict(texts)
    rule = coder.decision
    for row, note, plain in zip(proba, everything, default, strict=True):
        listed = [(column[c.code], c) for c in note.codes]
        assert [c.rank for _, c in listed] == list(range(1, len(listed) + 1))
        for j, c in listed:
            assert c.probability == round(float(row[j]), 6) and c.description == coder.description(c.code)
        # the one tie order: score highest first, then the column of `codes`
        keys = [(-float(row[j]), j) for j, _ in listed]
        assert keys == sorted(keys)
        if rule is None:  # argmax: the first-ranked code alone
            assert [c.predicted for _, c in listed] == [True] + [False] * (len(listed) - 1)
        else:
            cut = rule.values()
            for j, c in listed:
                assert c.predicted == bool(row[j] >= (cut if np.ndim(cut) == 0 else cut[j]))
        # without top_k: exactly the predicted ones, in the same order
        assert [(c.code, c.rank) for c in plain.codes] == [(c.code, c.rank) for _, c in listed if c.predicted]
        assert all(c.evidence is None for c in plain.codes)
        assert (note.new_codes is not None) == coder.capabilities.new_codes


def check_the_explain_contract(path: Path, tmp_path: Path) -> None:
    coder = medcoder.load(path)
    texts = [n.text for n in test_notes(coder)[:N_NOTES]]
    if not coder.capabilities.explain:
        reason = coder.capabilities.why_not_explain
        assert reason
        with pytest.raises(MedcoderError, match=re.escape(reason)):
            coder.predict(texts, explain=True)
        with pytest.raises(MedcoderError, match=re.escape(reason)):
            coder.explain(texts, [coder.codes[:1]] * len(texts))
        return
    explained = coder.predict(texts, top_k=5, explain=True)
    asked = [[c.code for c in note.codes] for note in explained]
    again = coder.explain(texts, asked)
    some = 0
    for text, note, spans in zip(texts, explained, again, strict=True):
        for code in note.codes:
            assert code.evidence is not None
            assert code.evidence == spans[code.code]  # explain gives what predict gave
            for e in code.evidence:
                assert 0 <= e.start < e.end <= len(text) and text[e.start : e.end] == e.text
                some += 1
    assert some > 0, "a system that says it explains gave no span at all"
    with pytest.raises(MedcoderError, match="does not score"):
        coder.explain(texts[:1], [["NOT-A-CODE"]])


def check_save_move_load_gives_identical_scores(path: Path, tmp_path: Path) -> None:
    coder = medcoder.load(path)
    texts = [n.text for n in test_notes(coder)[:N_NOTES]]
    explain = coder.capabilities.explain
    before = [p.to_dict() for p in coder.predict(texts, top_k=10, explain=explain)]
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(path, tmp_path / "copy")
    shutil.move(tmp_path / "copy", moved)
    again = medcoder.load(moved)
    assert np.array_equal(again.predict_proba(texts), coder.predict_proba(texts))
    assert [p.to_dict() for p in again.predict(texts, top_k=10, explain=explain)] == before
    assert again.identity == coder.identity == medcoder.load(path).identity  # stable: loads and moves keep it
    assert re.fullmatch(rf"{re.escape(coder.name)}@[0-9a-f]{{12}}", coder.identity)
    # one changed byte in any file of the system is another system
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "note": "changed"}))
    assert medcoder.load(moved).identity != coder.identity


def _numbers(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _numbers(item, f"{prefix}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _numbers(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def check_evaluate_equals_the_training_figures(path: Path, tmp_path: Path) -> None:
    coder = medcoder.load(path)
    written = coder.test_metrics()
    assert written, f"a {coder.kind} system keeps no test figures"
    evaluated = coder.evaluate(test_notes(coder))
    old, new = _numbers(written), _numbers(evaluated)
    assert old.keys() == new.keys()
    for key, value in old.items():
        if isinstance(value, float) and isinstance(new[key], float):
            assert (math.isnan(value) and math.isnan(new[key])) or new[key] == pytest.approx(value, abs=1e-9), key
        else:
            assert new[key] == value, key
    assert coder.metrics_table(evaluated).startswith("|")


def check_the_service_and_batch_prediction_code_it(path: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from medcoder.inference.batch import progress_path, run_batch
    from medcoder.inference.inputs import PredictionInputs
    from medcoder.serve.app import create_app
    from medcoder.serve.audit import AuditStore
    from medcoder.serve.settings import ServeSettings

    coder = medcoder.load(path)
    texts = [n.text for n in test_notes(coder)[:N_NOTES]]
    explain = coder.capabilities.explain
    expected = [p.to_dict() for p in coder.predict(texts, top_k=3, explain=explain)]

    audit = AuditStore(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    with TestClient(create_app(path, ServeSettings(), audit=audit)) as client:
        for _ in range(600):
            if client.get("/ready").status_code == 200:
                break
            import time

            time.sleep(0.1)
        model = client.get("/v1/model").json()
        assert (model["version"], model["kind"]) == (coder.identity, coder.kind)
        assert model["can_explain"] == explain and model["suggests_new_codes"] == coder.capabilities.new_codes
        body = {"notes": [{"text": t, "id": str(i)} for i, t in enumerate(texts)], "top_k": 3, "explain": explain}
        coded = client.post("/v1/code", json=body).json()
        assert coded["model_version"] == coder.identity
        for note, want in zip(coded["notes"], expected, strict=True):
            got = [(c["code"], c["probability"], c["predicted"], c["rank"]) for c in note["codes"]]
            assert got == [(c["code"], c["probability"], c["predicted"], c["rank"]) for c in want["codes"]]
        first = coded["notes"][0]["codes"][0]["code"]
        stored = client.post(
            "/v1/decisions", json={"text": texts[0], "decisions": [{"code": first, "action": "accept"}]}
        )
        assert stored.status_code == 201, stored.text
    assert audit.rows()[0]["model_version"] == coder.identity
    audit.close()

    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    output = tmp_path / "codes.jsonl"
    summary = run_batch(coder, PredictionInputs((notes,)), output, top_k=3, explain=explain)
    assert summary.model == coder.identity and summary.coded == len(texts)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [{**line, "id": None} for line in lines] == [{**want, "id": None} for want in expected]
    assert json.loads(output.with_name(output.name + ".summary.json").read_text())["model"] == coder.identity
    assert not progress_path(output).exists()


CHECKS = [
    check_predict_agrees_with_proba_and_the_decision_rule,
    check_the_explain_contract,
    check_save_move_load_gives_identical_scores,
    check_evaluate_equals_the_training_figures,
    check_the_service_and_batch_prediction_code_it,
]


def test_every_registered_kind_is_checked() -> None:
    assert set(SYSTEMS.names()) <= set(BUILDERS), "a saved-system kind without a conformance bundle"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_conformance(kind: str, check, bundles, tmp_path) -> None:
    check(bundles(kind), tmp_path)
