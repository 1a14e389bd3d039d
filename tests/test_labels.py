"""LabelSpace: fitting, filters, levels, transform, coverage, persistence."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from medcoder.config import LabelConfig, validate
from medcoder.data.labels import FORMAT, LabelSpace
from medcoder.errors import ConfigError, InputError

SHARED = Path(__file__).resolve().parents[2] / "shared"

# Document frequencies: R50.9 3, I10 3, E11.65 1, T81.4XX 1, E11.9 1, R52 1.
TRAIN = [
    ["R50.9", "I10", "E11.65"],
    ["R50.9", "I10", "T81.4XX"],
    ["r50.9", "R50.9"],  # duplicates after normalisation count once
    ["I10", "E11.9"],
    ["R52"],
]


def test_fit_orders_by_frequency_then_code() -> None:
    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm"))
    assert space.codes == ["I10", "R50.9", "E11.65", "E11.9", "R52", "T81.4XX"]
    assert space.index == {code: i for i, code in enumerate(space.codes)}
    assert space.train_freq == {"I10": 3, "R50.9": 3, "E11.65": 1, "E11.9": 1, "R52": 1, "T81.4XX": 1}
    assert len(space) == 6
    report = space.report
    assert (report["n_docs"], report["n_raw_codes"], report["n_mapped_codes"], report["n_kept"]) == (5, 6, 6, 6)
    assert report["unknown_to_catalog"] == {"count": 0, "examples": []}
    assert report["resolved_via_ancestor"] == {"count": 1, "examples": ["T81.4XX"]}
    assert report["n_docs_without_kept_label"] == 0


def test_min_freq_and_top_k() -> None:
    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm", min_freq=2))
    assert space.codes == ["I10", "R50.9"]
    assert space.report["dropped_min_freq"] == {"count": 4, "examples": ["E11.65", "E11.9", "R52", "T81.4XX"]}
    assert space.report["n_docs_without_kept_label"] == 1  # the R52-only document
    assert space.train_freq["R52"] == 1  # dropped codes keep their train frequency

    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm", top_k=3))
    assert space.codes == ["I10", "R50.9", "E11.65"]  # ties among frequency 1 broken by code string
    assert space.report["dropped_top_k"] == {"count": 3, "examples": ["E11.9", "R52", "T81.4XX"]}

    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm", min_freq=2, top_k=1))
    assert space.codes == ["I10"]
    assert space.report["dropped_min_freq"]["count"] == 4
    assert space.report["dropped_top_k"] == {"count": 1, "examples": ["R50.9"]}


def test_levels_and_truncation() -> None:
    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm", level="category"))
    assert space.codes == ["I10", "R50", "E11", "R52", "T81"]
    assert space.train_freq["E11"] == 2

    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm", level="block"))
    assert space.codes == ["R50-R69", "I10-I1A", "E08-E13", "T80-T88"]
    assert space.description("R50-R69") == "General symptoms and signs (R50-R69)"

    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm", level="chapter"))
    assert space.codes == ["18", "9", "4", "19"]
    assert space.train_freq == {"18": 4, "9": 3, "4": 2, "19": 1}

    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm", truncate=True))
    assert space.codes == ["I10", "R50.9", "E11.6", "E11.9", "R52", "T81.4"]
    assert space.map_labels(["E11.65", "e11.69", "E11.6", "T81.4XXA"]) == ["E11.6", "T81.4"]


def test_unknown_codes_are_kept_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="medcoder.data.labels"):
        space = LabelSpace.fit([["B98.1", "R52"], ["B98.1"]], LabelConfig(system="icd10cm"))
    assert space.codes == ["B98.1", "R52"]
    assert space.report["unknown_to_catalog"] == {"count": 1, "examples": ["B98.1"]}
    assert space.descriptions() == [None, "Pain, unspecified"]
    assert "1 of 2 distinct codes are unknown to the icd10cm catalog" in caplog.text

    # At chapter level an unknown code has nowhere to go: counted as unmappable, left out.
    with caplog.at_level(logging.WARNING, logger="medcoder.data.labels"):
        space = LabelSpace.fit([["B98.1", "R52"], ["B98.1"]], LabelConfig(system="icd10cm", level="chapter"))
    assert space.codes == ["18"]
    assert space.report["unmappable"] == {"count": 1, "examples": ["B98.1"]}
    assert space.report["n_docs_without_kept_label"] == 1


def test_icd9_diagnoses_and_procedures() -> None:
    lists = [["401.9", "39.61", "V10.00"], ["401.1", "E888.9"], ["39.61"]]
    space = LabelSpace.fit(lists, LabelConfig(system="icd9cm", level="chapter"))
    assert space.codes == ["390-459", "E000-E999", "V01-V91"]
    assert space.report["unmappable"] == {"count": 1, "examples": ["39.61"]}
    assert space.report["procedures_without_catalog"] == {"count": 1, "examples": ["39.61"]}
    assert space.report["unknown_to_catalog"]["count"] == 0

    space = LabelSpace.fit(lists, LabelConfig(system="icd9cm", level="category", truncate=True))
    assert space.codes == ["39", "401", "E888", "V10"]
    assert space.map_code("401.91") == "401"


def test_transform_exact_matrix() -> None:
    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm", min_freq=2))  # ["I10", "R50.9"]
    matrix = space.transform([["i10", "R50.9", "I10"], ["Z99.9"], [], ["R509"]])
    assert matrix.dtype == np.bool_
    assert matrix.tolist() == [[True, True], [False, False], [False, False], [False, True]]
    assert space.transform([]).shape == (0, 2)
    with pytest.raises(InputError, match="document 0: expected a list of codes"):
        space.transform(["I10"])


def test_coverage_counts_unseen_codes() -> None:
    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm"))
    dev = [["R50.9", "Z00.00"], ["Z00.00", "R52", "A00.0", "z00.00"], ["I10"]]
    assert space.coverage(dev) == {
        "n_docs": 3,
        "n_assignments": 6,
        "n_unseen_assignments": 3,
        "n_unseen_codes": 2,
        "n_unmappable_assignments": 0,
        "examples": ["Z00.00", "A00.0"],
    }


def test_multiclass() -> None:
    space = LabelSpace.fit([["neuro"], ["cardio"], ["neuro"]], LabelConfig(), task="multiclass")
    assert space.codes == ["cardio", "neuro"]
    assert space.transform([["neuro"], ["cardio"]]).tolist() == [[False, True], [True, False]]
    assert space.class_indices([["neuro"], ["cardio"], ["derm"]]).tolist() == [1, 0, -1]
    with pytest.raises(InputError, match="document 1: a multiclass task needs exactly one label"):
        LabelSpace.fit([["neuro"], ["neuro", "cardio"]], LabelConfig(), task="multiclass")
    with pytest.raises(InputError, match="document 0"):
        LabelSpace.fit([[]], LabelConfig(), task="multiclass")


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="labels.yaml: config: level 'category' needs an ICD system"):
        validate(LabelConfig, {"level": "category"}, source="labels.yaml")
    with pytest.raises(ConfigError, match="min_freq"):
        validate(LabelConfig, {"min_freq": 0}, source="labels.yaml")
    with pytest.raises(ConfigError, match="top_k"):
        validate(LabelConfig, {"top_k": 0}, source="labels.yaml")
    with pytest.raises(ConfigError, match="unknown task"):
        LabelSpace.fit(TRAIN, LabelConfig(), task="regression")


def test_json_round_trip(tmp_path: Path) -> None:
    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm", level="category", truncate=True, min_freq=1, top_k=4))
    path = tmp_path / "bundle" / "labels.json"
    space.to_json(path)
    loaded = LabelSpace.from_json(path)
    assert loaded == space
    assert loaded.codes == space.codes and loaded.index == space.index
    assert (loaded.system, loaded.level, loaded.truncate, loaded.top_k, loaded.task) == (
        "icd10cm",
        "category",
        True,
        4,
        "multilabel",
    )
    assert loaded.report == space.report
    assert np.array_equal(loaded.transform(TRAIN), space.transform(TRAIN))
    assert json.loads(path.read_text())["format"] == FORMAT


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.update(format="medcoder.vocab.v1"), "format"),
        (lambda d: d.pop("format"), "format"),
        (lambda d: d.update(colour="blue"), "colour"),
        (lambda d: d.pop("codes"), "codes"),
        (lambda d: d.update(codes="I10"), "codes"),
        (lambda d: d.update(codes=["I10", "I10"]), "codes"),
        (lambda d: d.update(train_freq={"I10": "3"}), "train_freq"),
        (lambda d: d.update(level="section"), "level"),
        (lambda d: d.update(system="icd11"), "system"),
        (lambda d: d.update(min_freq=0), "min_freq"),
        (lambda d: d.update(truncate="yes"), "truncate"),
    ],
)
def test_from_json_rejects_bad_files(tmp_path: Path, edit, key: str) -> None:
    data = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm")).to_dict()
    edit(data)
    path = _write(tmp_path / "labels.json", data)
    with pytest.raises(InputError) as info:
        LabelSpace.from_json(path)
    assert info.value.path == str(path)
    assert info.value.field == key
    assert str(path) in str(info.value) and repr(key) in str(info.value)


def test_from_json_rejects_foreign_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="malformed JSON"):
        LabelSpace.from_json(_write(tmp_path / "a.json", '{"format": "medcoder.labels.v1", "codes": ['))
    with pytest.raises(InputError, match="expected a JSON object"):
        LabelSpace.from_json(_write(tmp_path / "b.json", ["I10"]))
    with pytest.raises(InputError, match="file not found"):
        LabelSpace.from_json(tmp_path / "missing.json")


def _codiesp_labels() -> dict[str, list[list[str]]]:
    path = SHARED / "data" / "codiesp" / "diagnosis_en.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not available")
    splits: dict[str, list[list[str]]] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            splits.setdefault(record["split"], []).append(record["labels"])
    return splits


def test_codiesp_diagnosis_label_space() -> None:
    splits = _codiesp_labels()
    space = LabelSpace.fit(splits["train"], LabelConfig(system="icd10cm"))
    assert len(space) == 1767
    assert space.report["n_docs"] == 500
    # Every CodiEsp-D train code is placed by the catalog; 50 only via an ancestor (X placeholders).
    assert space.report["unknown_to_catalog"]["count"] == 0
    assert space.report["resolved_via_ancestor"]["count"] == 50
    assert all(description is not None for description in space.descriptions())
    test = space.coverage(splits["test"])
    assert (test["n_assignments"], test["n_unseen_assignments"], test["n_unseen_codes"]) == (2842, 497, 439)
    dev = space.coverage(splits["dev"])
    assert (dev["n_assignments"], dev["n_unseen_assignments"], dev["n_unseen_codes"]) == (2677, 477, 427)
    chapters = LabelSpace.fit(splits["train"], LabelConfig(system="icd10cm", level="chapter"))
    assert len(chapters) == 21 and chapters.report["unmappable"]["count"] == 0


def test_non_string_codes_are_rejected() -> None:
    with pytest.raises(InputError, match="document 1: codes must be strings, got 3"):
        LabelSpace.fit([["I10"], ["R52", 3]], LabelConfig(system="icd10cm"))


def test_catalog_codes_add_the_seen_categories_codes_with_no_training_note() -> None:
    space = LabelSpace.fit(TRAIN, LabelConfig(system="icd10cm", catalog_codes="seen_categories"))
    seen = ["I10", "R50.9", "E11.65", "E11.9", "R52", "T81.4XX"]
    assert space.codes[:6] == seen  # the trained codes first, as without catalog codes
    extra = space.codes[6:]
    assert {"R50.2", "R50.8", "E11.0", "E11.9"} - set(seen) <= set(extra)  # same categories, <= 4 characters
    assert all(code[:3] in {"I10", "R50", "E11", "R52", "T81"} for code in extra)
    assert all(len(code.replace(".", "")) <= 4 for code in extra) and len(set(space.codes)) == len(space.codes)
    assert space.report["n_kept"] == 6 and space.report["n_catalog_codes"] == len(extra) > 10
    assert all(space.train_freq[code] == 0 for code in extra) and space.train_freq["I10"] == 3
    assert "E11.65" in space.codes and "E11.641" not in space.codes  # 5 characters: only the trained one
    again = LabelSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again.codes == space.codes
    with pytest.raises(ValueError, match="catalog_codes needs system icd10cm"):
        LabelConfig(system="icd9cm", catalog_codes="seen_categories")
