"""Configs: defaults, YAML round trip, unknown keys named, experiment expansion."""

from __future__ import annotations

import pytest

from medcoder.config import (
    ExperimentConfig,
    RunConfig,
    config_kinds,
    deep_merge,
    dump_yaml,
    load_config,
    read_config_file,
    validate,
)
from medcoder.errors import ConfigError, InputError


def test_yaml_round_trip(tmp_path) -> None:
    config = validate(RunConfig, {"labels": {"system": "icd10cm", "top_k": 50}, "model": {"C": 3.5}}, source="x")
    path = tmp_path / "run.yaml"
    path.write_text(dump_yaml(config))
    again = load_config(path, "train")
    assert again == config and again.labels.top_k == 50 and again.model.C == 3.5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"type": "tfidf_lr.v1", "Cc": 1}}, "unknown key 'model.Cc'"),
        ({"data": {"source": {"kind": "jsonl", "pth": "a"}}}, "unknown key 'data.source.pth'"),
        ({"data": {"source": {"kind": "jsonl"}}}, "missing required key 'data.source.path'"),
        ({"labels": {"min_freq": "abc"}}, "labels.min_freq"),
        ({"labels": {"level": "subchapter"}}, "labels.level"),
        ({"data": {"split_ratios": [0.5, 0.5, 0.5]}}, "sum"),
        ({"model": {"ngram_range": [3, 1]}}, "ngram_range"),
        ({"modle": {}}, "unknown key 'modle'"),
    ],
)
def test_bad_keys_are_named(raw, message) -> None:
    with pytest.raises(ConfigError, match="run.yaml") as info:
        validate(RunConfig, raw, source="run.yaml")
    assert message in str(info.value)


def test_malformed_yaml_names_line(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nlabels:\n  top_k: [1, 2\n")
    with pytest.raises(InputError, match=r"bad\.yaml:\d+: malformed YAML"):
        read_config_file(path)


def test_missing_config_file(tmp_path) -> None:
    with pytest.raises(InputError, match="file not found"):
        load_config(tmp_path / "nope.yaml", "train")


def test_deep_merge_keeps_base_and_overrides_leaves() -> None:
    base = {"model": {"C": 1, "min_df": 2}, "seed": 0}
    merged = deep_merge(base, {"model": {"C": 100}})
    assert merged == {"model": {"C": 100, "min_df": 2}, "seed": 0}
    assert base["model"]["C"] == 1  # the base is not mutated


def test_experiment_expands_variants_times_seeds(tmp_path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: e\nbase: {labels: {system: icd10cm}}\nseeds: [1, 2, 3]\n"
        "variants:\n  - {name: strong, overrides: {model: {C: 100}}}\n  - {name: weak, overrides: {model: {C: 0.1}}}\n"
    )
    runs = load_config(path, "experiment").runs()
    assert [(v, s) for v, s, _ in runs] == [(v, s) for v in ("strong", "weak") for s in (1, 2, 3)]
    assert {r.model.C for v, _, r in runs if v == "weak"} == {0.1}
    assert all(r.seed == s and r.labels.system == "icd10cm" for _, s, r in runs)


def test_experiment_override_typo_is_an_error(tmp_path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("variants:\n  - {name: a, overrides: {model: {CC: 1}}}\n")
    with pytest.raises(ConfigError, match="variant 'a'.*unknown key 'model.CC'"):
        load_config(path, "experiment")


def test_experiment_variant_names_unique() -> None:
    with pytest.raises(ConfigError, match="repeated: a"):
        validate(ExperimentConfig, {"variants": [{"name": "a"}, {"name": "a"}]}, source="e")


def test_shipped_configs_declare_their_kind_and_validate() -> None:
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(folder.glob("*.yaml"))
    assert len(files) >= 5
    kinds = {}
    for path in files:
        kind = read_config_file(path).get("kind")
        assert kind in config_kinds(), f"{path.name}: kind {kind!r}"
        kinds[path.name] = type(load_config(path, kind)).__name__
    assert {"RunConfig", "ExperimentConfig", "AdaptDomainConfig", "RetrievalConfig"} <= set(kinds.values())


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_variant_names_cannot_leave_the_output_folder(name) -> None:
    with pytest.raises(ConfigError, match="variants.0.name"):
        validate(ExperimentConfig, {"variants": [{"name": name}]}, source="e")


def test_experiment_seeds_unique() -> None:
    with pytest.raises(ConfigError, match="seeds must be unique, repeated: 1"):
        validate(ExperimentConfig, {"variants": [{"name": "a"}], "seeds": [0, 1, 1]}, source="t")


@pytest.mark.parametrize(
    ("text", "kind", "command"),
    [
        ("kind: retrieval\nsearch: {k: 5}\n", "train", "medcoder retrieval"),
        ("stage: retrieval\nsearch: {k: 5}\n", "train", "medcoder retrieval"),  # medcoder 0.1 spelling
        ("kind: experiment\nvariants: [{name: a}]\n", "train", "medcoder experiment"),
        ("kind: train\nmodel: {C: 1}\n", "adapt_domain", "medcoder train"),
    ],
)
def test_another_commands_config_names_the_command(tmp_path, text, kind, command) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"config, not a '{kind}' one; use `{command}`"):
        load_config(path, kind)


def test_a_config_without_kind_is_read_as_the_commands_kind(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: {C: 7}\n", encoding="utf-8")
    assert load_config(path, "train").model.C == 7
    with pytest.raises(ConfigError, match="unknown key 'model'"):
        load_config(path, "retrieval")


def test_model_and_source_sections_are_chosen_by_the_registry() -> None:
    from medcoder.registry import MODELS, SOURCES

    for name in MODELS.names():
        assert validate(RunConfig, {"model": {"type": name}}, source="r").model.type == name
    with pytest.raises(ConfigError, match=r"model\.type: unknown value 'cnn\.v9' \(expected one of 'bigru\.v1'"):
        validate(RunConfig, {"model": {"type": "cnn.v9"}}, source="r")
    with pytest.raises(ConfigError, match=r"missing required key 'data\.source\.kind'"):
        validate(RunConfig, {"data": {"source": {"path": "x"}}}, source="r")
    assert "jsonl" in SOURCES.names() and "synthetic" in SOURCES.names()


def test_json_schema_lists_every_registered_model_and_source() -> None:
    from medcoder.registry import MODELS, SOURCES

    text = str(RunConfig.model_json_schema())
    for name in MODELS.names() + SOURCES.names():
        assert repr(name) in text, name
