"""Adding a kind of saved system is one module: this one is defined here, registered, and used end to end.

The kind ("keywords") codes a note by the words that best mark each code in the training notes: a code's
score is the share of its keywords the note holds, so many codes tie. Its config class, its trainer and its
``Coder`` (which saves and loads itself, scores a batch, explains by keyword spans and states its decision
rule) are all it takes; nothing else in medcoder is edited. ``medcoder train`` dispatches to it through the
registry, and ``medcoder predict`` (batch prediction), ``evaluate``, ``report``, ``medcoder.load`` and the
service use it as any other system; the system conformance checks hold for it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
from conftest import SYNTHETIC_SOURCE, write_yaml
from pydantic import Field
from test_system_conformance import CHECKS

import medcoder
from medcoder.bundles import TrainedSystem, bundle_header
from medcoder.config import DataConfig, LabelConfig
from medcoder.config.base import Strict
from medcoder.data.dataset import fit_label_space, load_dataset
from medcoder.data.labels import LabelSpace
from medcoder.data.records import Note
from medcoder.evaluation.report import format_metrics_table
from medcoder.evaluation.scoring import score_notes
from medcoder.evaluation.thresholds import Thresholds
from medcoder.inference.base import Capabilities, Coder, Evidence, Scores
from medcoder.inference.parts import new_bundle
from medcoder.io import atomic_write_json, read_json_file
from medcoder.progress import LogReporter, Reporter, Update
from medcoder.registry import SYSTEMS

# ----------------------------------------------------------------- the new kind, in one place
_WORD = re.compile(r"[a-z]{4,}")


class KeywordsConfig(Strict):
    """What ``medcoder train`` reads for a keyword system."""

    command: ClassVar[str] = "medcoder train"
    kind: Literal["keywords"] = "keywords"
    name: str = "keywords"
    data: DataConfig = Field(default_factory=DataConfig)
    labels: LabelConfig = Field(default_factory=LabelConfig)
    words: int = Field(3, ge=1)  # keywords per code


class KeywordsCoder(Coder):
    """Each code's keywords; a note's score for a code is the share of them it holds."""

    kind = "keywords"

    def __init__(self, config: KeywordsConfig, labels: LabelSpace, words: dict[str, list[str]], **kw: Any) -> None:
        super().__init__(kw.get("path"), kw.get("header") or {**bundle_header("keywords"), "config": {}})
        self.config, self.labels, self.words = config, labels, words
        self.thresholds: Thresholds = kw.get("thresholds") or Thresholds("global", 0.5)

    @classmethod
    def load(cls, path: Path, header: dict[str, Any]) -> KeywordsCoder:
        saved = read_json_file(path / "keywords.json")
        config = KeywordsConfig.model_validate(header["config"])
        labels = LabelSpace.from_json(path / "labels.json")
        thresholds = Thresholds.from_dict(saved["thresholds"])
        return cls(config, labels, saved["words"], thresholds=thresholds, path=path, header=header)

    def save(self, path: Path, metrics: dict[str, Any]) -> None:
        header = {**bundle_header(self.kind), "config": self.config.model_dump(mode="json"), "metrics": metrics}
        with new_bundle(path) as tmp:
            atomic_write_json(tmp / "config.json", header)
            self.labels.to_json(tmp / "labels.json")
            words = {"format": "test.keywords.v1", "words": self.words, "thresholds": self.thresholds.to_dict()}
            atomic_write_json(tmp / "keywords.json", words)

    @classmethod
    def labels_file(cls, path: Path, header: dict[str, Any]) -> Path | None:
        return path / "labels.json"

    @property
    def codes(self) -> list[str]:
        return self.labels.codes

    def description(self, code: str) -> str | None:
        return self.labels.description(code)

    @property
    def decision(self) -> Thresholds:
        return self.thresholds

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(explain=True)

    def score_batch(self, texts: Sequence[str], pairs: Sequence[str] | None) -> Scores:
        out = np.zeros((len(texts), len(self.codes)), dtype=np.float32)
        for i, text in enumerate(texts):
            present = set(_WORD.findall(text.lower()))
            for j, code in enumerate(self.codes):
                out[i, j] = sum(w in present for w in self.words[code]) / len(self.words[code])
        return Scores(dense=out)

    def evidence(
        self, texts: Sequence[str], codes: Sequence[Sequence[str]], top: int, context: Any
    ) -> list[dict[str, list[Evidence]]]:
        out = []
        for text, wanted in zip(texts, codes, strict=True):
            spans = {}
            for code in wanted:
                found = [re.search(rf"\b{w}\b", text, flags=re.IGNORECASE) for w in self.words[code]]
                weight = round(1 / len(self.words[code]), 4)
                spans[code] = [Evidence(m.start(), m.end(), m.group(0), weight) for m in found if m][:top]
            out.append(spans)
        return out

    def data_config(self) -> DataConfig:
        return self.config.data

    def evaluate(self, notes: Sequence[Note], *, progress: Update | None = None) -> dict[str, Any]:
        scores = self.predict_proba([n.text for n in notes], progress=progress)
        return score_notes(scores, notes, self.labels, self.thresholds)

    def metrics_table(self, metrics: dict[str, Any]) -> str:
        return format_metrics_table(metrics)


def learn_keywords(notes: Sequence[Note], labels: LabelSpace, n: int) -> dict[str, list[str]]:
    """Per code, the ``n`` words most specific to its notes (share of the word's notes that carry the code)."""
    every: Counter[str] = Counter()
    per_code: dict[str, Counter[str]] = {code: Counter() for code in labels.codes}
    for note in notes:
        words = set(_WORD.findall(note.text.lower()))
        every.update(words)
        for code in labels.map_labels(note.labels):
            if code in per_code:
                per_code[code].update(words)
    return {
        code: sorted(counts, key=lambda w: (-counts[w] / (every[w] + 2), w))[:n] for code, counts in per_code.items()
    }


def train_keywords(config: KeywordsConfig, output: Path, *, reporter: Reporter, source: str = "") -> TrainedSystem:
    splits = load_dataset(config.data)
    labels = fit_label_space(config.labels, "multilabel", splits["train"])
    system = KeywordsCoder(config, labels, learn_keywords(splits["train"], labels, config.words))
    dev = splits["dev"]
    dev_scores = system.predict_proba([n.text for n in dev])
    system.thresholds = Thresholds.tune(labels.transform([n.labels for n in dev]), dev_scores, "global")
    metrics = system.evaluate(splits["test"])
    system.save(Path(output), metrics)
    return TrainedSystem(Path(output), format_metrics_table(metrics), what="keyword system")


@pytest.fixture
def registered():
    SYSTEMS.register("keywords", config=KeywordsConfig, trainer=train_keywords)(KeywordsCoder)
    yield
    SYSTEMS.unregister("keywords")


# ----------------------------------------------------------------- used end to end, through the CLI
def test_a_system_kind_defined_here_trains_codes_evaluates_serves_and_reports(registered, cli, tmp_path) -> None:
    config = write_yaml(
        tmp_path / "keywords.yaml",
        {"kind": "keywords", "name": "kw", "data": {"source": SYNTHETIC_SOURCE}, "labels": {"system": "icd10cm"}},
    )
    result = cli("train", config, "-o", tmp_path / "kw")
    assert result.code == 0, result.err
    assert f"keyword system written to {tmp_path / 'kw'}" in result.out and "| MAP |" in result.out
    written = json.loads((tmp_path / "kw" / "config.json").read_text())["metrics"]
    assert written["all_gold"]["map"] > 0.3  # the keywords carry the codes

    coder = medcoder.load(tmp_path / "kw")
    assert isinstance(coder, KeywordsCoder) and coder.info.identity.startswith("kw@")
    notes = tmp_path / "notes.jsonl"
    texts = [n.text for n in load_dataset(coder.data_config())["test"][:4]]
    notes.write_text("".join(json.dumps({"id": f"n{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    coded = cli("predict", tmp_path / "kw", notes, "--top-k", "3", "--explain", "-o", tmp_path / "codes.jsonl")
    assert coded.code == 0, coded.err
    lines = [json.loads(x) for x in (tmp_path / "codes.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["n0", "n1", "n2", "n3"]
    for text, line in zip(texts, lines, strict=True):
        for code in line["codes"]:
            assert all(text[e["start"] : e["end"]] == e["text"] for e in code["evidence"])
    summary = json.loads((tmp_path / "codes.jsonl.summary.json").read_text())
    assert summary["model"] == coder.identity

    evaluated = cli("evaluate", tmp_path / "kw", "--output", tmp_path / "figures.json")
    assert evaluated.code == 0, evaluated.err
    assert json.loads((tmp_path / "figures.json").read_text()) == written  # the figures the run wrote

    reported = cli("report", tmp_path / "kw")
    assert reported.code == 0, reported.err
    page = (tmp_path / "kw" / "report.html").read_text()
    assert coder.identity in page and "keywords" in page


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_the_system_conformance_checks_hold_for_the_new_kind(registered, check, tmp_path) -> None:
    config = KeywordsConfig.model_validate({"data": {"source": SYNTHETIC_SOURCE}, "words": 2})
    system = train_keywords(config, tmp_path / "kw", reporter=LogReporter())
    (tmp_path / "check").mkdir()
    check(system.path, tmp_path / "check")


def test_ties_are_ranked_by_column(registered, tmp_path) -> None:
    """Keyword shares tie often: equal scores keep the order of ``codes``, the lower column first."""
    labels = LabelSpace(codes=["B", "A", "C"], train_freq={"B": 3, "A": 2, "C": 1})
    words = {"B": ["fever"], "A": ["fever"], "C": ["rash"]}
    coder = KeywordsCoder(KeywordsConfig(), labels, words, thresholds=Thresholds("global", 0.5))
    [note] = coder.predict(["fever and rash today"], top_k=3)
    assert [(c.code, c.rank, c.probability) for c in note.codes] == [("B", 1, 1.0), ("A", 2, 1.0), ("C", 3, 1.0)]
    [note] = coder.predict(["rash only"], top_k=3)
    assert [c.code for c in note.codes] == ["C", "B", "A"] and [c.predicted for c in note.codes] == [True, False, False]
