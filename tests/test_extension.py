"""Adding a model and a data source is one module each: both are defined here, registered, and used end to end.

The model is a word-level coder (label-wise attention straight over the word
embeddings): its config class, network and coder are all it takes; the
training loop, ensembles, early stopping, scoring, saving and loading come from
``WordCoder``/``TorchCoder``. The source reads a tab-separated file of notes.
Nothing else in medcoder is edited: ``medcoder train`` validates the config
through the registries, trains, saves a bundle, and ``medcoder predict`` /
``medcoder.load`` use it. The conformance checks run on the new model too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from conftest import write_yaml
from pydantic import Field
from test_conformance import CHECKS, fit_smallest
from torch import nn
from trigger_corpus import TRIGGERS, corpus

import medcoder
from medcoder.config.base import PathText
from medcoder.data.records import Note
from medcoder.data.sources.base import SourceConfig
from medcoder.errors import InputError
from medcoder.models.networks.cnn import WordEmbedding
from medcoder.models.networks.heads import CoderOutput, LabelAttention
from medcoder.models.word import WordCoder, WordModelConfig
from medcoder.registry import MODELS, SOURCES

# ----------------------------------------------------------------- the new model, in one place


class WordAttentionConfig(WordModelConfig):
    """Label-wise attention straight over the words (CAML without its convolution)."""

    type: Literal["word_attention.v1"] = "word_attention.v1"
    hidden: int = Field(32, ge=1)


class WordAttentionNetwork(nn.Module):
    def __init__(self, vocab_size: int, dim: int, hidden: int, n_labels: int, dropout: float) -> None:
        super().__init__()
        self.embedding = WordEmbedding(vocab_size, dim, dropout=dropout)
        self.hidden = nn.Linear(dim, hidden)
        self.head = LabelAttention(hidden, n_labels)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> CoderOutput:
        """``input_ids``, ``mask`` ``[batch, time]`` -> logits ``[batch, labels]``, attention ``[batch, labels, time]``."""
        states = torch.tanh(self.hidden(self.embedding(input_ids, mask)))  # [batch, time, hidden]
        logits, attention, vectors = self.head(states, mask)
        return CoderOutput(logits=logits, attention=attention, features=vectors)


class WordAttentionCoder(WordCoder):
    config: WordAttentionConfig

    def can_explain(self) -> bool:
        return True  # its attention says which words each label looked at

    def network(self, pretrained: np.ndarray | None) -> nn.Module:
        cfg = self.config
        return WordAttentionNetwork(len(self.vocab_), cfg.embedding.dim, cfg.hidden, self.n_labels, cfg.dropout)


# ----------------------------------------------------------------- the new source, in one place


class TsvNotesSource(SourceConfig):
    """One note a line: ``id <TAB> split <TAB> codes joined by | <TAB> text``."""

    kind: Literal["tsv_notes"] = "tsv_notes"
    path: PathText
    code_separator: str = "|"

    def read(self) -> list[Note]:
        notes = []
        for number, line in enumerate(Path(self.path).read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split("\t")
            if len(fields) != 4:
                raise InputError(f"expected 4 tab-separated fields, found {len(fields)}", path=self.path, line=number)
            note_id, split, codes, text = fields
            notes.append(Note(note_id, text, tuple(codes.split(self.code_separator)), split))
        return notes


@pytest.fixture
def registered():
    MODELS.register("word_attention.v1", config=WordAttentionConfig)(WordAttentionCoder)
    SOURCES.register("tsv_notes")(TsvNotesSource)
    yield
    MODELS.unregister("word_attention.v1")
    SOURCES.unregister("tsv_notes")


def write_tsv(path: Path) -> Path:
    rows = []
    for split, (n, seed) in {"train": (160, 0), "dev": (40, 1), "test": (40, 2)}.items():
        texts, y = corpus(n, seed=seed)
        for i, (text, row) in enumerate(zip(texts, y, strict=True)):
            rows.append(f"{split}-{i}\t{split}\t{'|'.join(TRIGGERS[j] for j in np.flatnonzero(row))}\t{text}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_a_model_and_a_source_defined_here_train_save_reload_and_predict(registered, cli, tmp_path) -> None:
    config = write_yaml(
        tmp_path / "run.yaml",
        {
            "kind": "train",
            "data": {"source": {"kind": "tsv_notes", "path": str(write_tsv(tmp_path / "notes.tsv"))}},
            "model": {
                "type": "word_attention.v1",
                "encoding": {"min_count": 1},
                "embedding": {"dim": 16},
                "train": {"epochs": 20, "lr": 0.02, "num_threads": 1},
            },
        },
    )
    result = cli("train", config, "-o", tmp_path / "model")
    assert result.code == 0, result.err
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert (
        saved["run"]["model"]["type"] == "word_attention.v1" and saved["run"]["data"]["source"]["kind"] == "tsv_notes"
    )
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["test"]["all_gold"]["map"] > 0.9  # it learned which word carries which label

    note = tmp_path / "note.txt"
    note.write_text("patient seen today with fever and a new rash, plan follow up")
    result = cli("predict", tmp_path / "model", note)
    assert result.code == 0, result.err
    assert {c["code"] for c in json.loads(result.out)["codes"] if c["predicted"]} == {"fever", "rash"}

    coder = medcoder.load(tmp_path / "model")
    probabilities = coder.predict_proba([note.read_text()])
    assert probabilities.shape == (1, len(TRIGGERS)) and coder.codes[int(probabilities.argmax())] in {"fever", "rash"}
    result = cli("predict", tmp_path / "model", note, "--explain")  # its attention is evidence, like CAML's
    assert result.code == 0, result.err
    for code in json.loads(result.out)["codes"]:
        assert code["code"] in " ".join(e["text"] for e in code["evidence"])  # the trigger word itself

    typo = write_yaml(tmp_path / "typo.yaml", {"model": {"type": "word_attention.v1", "dropuot": 0.2}})
    result = cli("train", typo, "-o", tmp_path / "other")
    assert result.code == 2 and "unknown key 'model.dropuot'" in result.err


def test_the_conformance_checks_hold_for_the_new_model(registered, tiny_bert, tmp_path) -> None:
    assert "word_attention.v1" in MODELS.names()
    data = corpus(160, seed=0), corpus(40, seed=1), corpus(40, seed=2)
    section, model = fit_smallest("word_attention.v1", tiny_bert, data, tmp_path / "work")
    for check in CHECKS:
        (tmp_path / check.__name__).mkdir()
        check("word_attention.v1", section, model, data, tmp_path / check.__name__)


def test_a_plugin_package_registers_through_its_entry_point(monkeypatch) -> None:
    """A model shipped by another package: the registry imports its entry point when a config names it."""
    import importlib.metadata
    import sys

    from medcoder.config import RunConfig, validate

    point = importlib.metadata.EntryPoint(name="unigram", value="plugin_model", group="medcoder.models")

    def entry_points(group: str):
        return [point] if group == "medcoder.models" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    sys.modules.pop("plugin_model", None)
    try:
        config = validate(RunConfig, {"model": {"type": "plugin_unigram_lr.v1"}}, source="run.yaml")
        assert config.model.ngram_range == (1, 1) and "plugin_model" in sys.modules
    finally:
        MODELS.unregister("plugin_unigram_lr.v1")
    broken = importlib.metadata.EntryPoint(name="broken", value="no_such_module_here", group="medcoder.models")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [broken])
    with pytest.raises(Exception, match="the medcoder.models plugin 'broken' \\(no_such_module_here\\) failed to load"):
        validate(RunConfig, {"model": {"type": "nothing_like_it.v1"}}, source="run.yaml")
