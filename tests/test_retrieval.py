"""Code retrieval index over the ICD-10-CM catalog: exact top-k, safe files, caching per encoder."""

from __future__ import annotations

import functools
import json
import re
import zlib

import numpy as np
import pytest

from medcoder.bundles import bundle_identity
from medcoder.data.icd import catalog_entries, describe
from medcoder.errors import InputError, MedcoderError
from medcoder.retrieval.index import CodeIndex, cached_index


@functools.cache
def word_vector(word: str, dim: int = 64) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(word.encode())).standard_normal(dim).astype(np.float32)


def hashed_bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in encoder: each lower-cased word adds a pseudo-random direction."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            out[row] += word_vector(word)
    return out


def test_catalog_lists_codes_not_chapters_or_blocks() -> None:
    codes, descriptions = catalog_entries()
    leaves, _ = catalog_entries(leaves_only=True)
    assert len(codes) == len(set(codes)) == len(descriptions) > 90_000
    assert 70_000 < len(leaves) < len(codes) and set(leaves) <= set(codes)
    assert not any("-" in c for c in codes)  # no blocks such as "A00-A09"
    assert {"A00", "A00.0", "R07.9", "I10"} <= set(codes) and "A00" not in set(leaves)
    i = codes.index("R07.9")  # a tuple: the listing is cached, nobody may change it
    assert descriptions[i] == describe("R07.9", "icd10cm") == "Chest pain, unspecified"
    with pytest.raises(MedcoderError, match="icd10cm and icd10pcs only"):
        catalog_entries("icd9cm")


def test_search_is_the_exact_top_k_by_cosine() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 16))
    index = CodeIndex([f"C{i}" for i in range(500)], vectors)
    queries = rng.standard_normal((7, 16))
    top, scores = index.search(queries, k=10)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    np.testing.assert_array_equal(top, np.argsort(-cosine, axis=1)[:, :10])
    np.testing.assert_allclose(scores, np.sort(cosine, axis=1)[:, ::-1][:, :10], rtol=1e-5)
    all_top, _ = index.search(queries[0], k=10_000)  # k beyond the index: every code, ranked
    assert all_top.shape == (1, 500) and set(all_top[0]) == set(range(500))
    with pytest.raises(MedcoderError, match="16"):
        index.search(rng.standard_normal((1, 8)))


def test_save_load_round_trip_and_damaged_files_are_named(tmp_path) -> None:
    index = CodeIndex(["A00", "B01", "C02"], np.eye(3, 4), meta={"encoder_fingerprint": "abc"})
    index.save(tmp_path / "idx")
    again = CodeIndex.load(tmp_path / "idx")
    assert again.codes == index.codes and again.meta == index.meta
    np.testing.assert_array_equal(again.vectors, index.vectors)

    header = json.loads((tmp_path / "idx" / "index.json").read_text())
    (tmp_path / "idx" / "index.json").write_text(json.dumps({**header, "codes": ["A00", "B01"]}))
    with pytest.raises(InputError, match=r"vectors\.safetensors: vectors \(3, 4\) do not match 2 codes"):
        CodeIndex.load(tmp_path / "idx")
    (tmp_path / "idx" / "index.json").write_text(json.dumps({**header, "format": "other"}))
    with pytest.raises(InputError, match=r"index\.json: not a medcoder code index"):
        CodeIndex.load(tmp_path / "idx")
    (tmp_path / "idx" / "index.json").write_text(json.dumps(header))
    (tmp_path / "idx" / "vectors.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(InputError, match="unreadable index vectors"):
        CodeIndex.load(tmp_path / "idx")


def test_whole_catalog_index_is_built_once_per_encoder_and_finds_the_described_code(tmp_path) -> None:
    calls = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return hashed_bag_of_words(texts)

    index, cached = cached_index(encode, "encoder-A", tmp_path / "cache")
    assert not cached and sum(calls) == len(index.codes) > 90_000
    top, _ = index.search(hashed_bag_of_words(["cholera due to vibrio cholerae 01 biovar eltor"]), k=3)
    assert index.codes[top[0][0]] == "A00.1"  # Cholera due to Vibrio cholerae 01, biovar eltor

    calls.clear()
    again, cached = cached_index(encode, "encoder-A", tmp_path / "cache")
    assert cached and calls == [] and again.codes == index.codes
    _, cached = cached_index(encode, "encoder-B", tmp_path / "cache")  # another encoder: its own vectors
    assert not cached and sum(calls) == len(index.codes)
    chapter, cached = cached_index(encode, "encoder-A", tmp_path / "cache", prefixes=["A0"])  # part of the catalog
    assert not cached and 50 < len(chapter.codes) < 500 and all(c.startswith("A0") for c in chapter.codes)
    np.testing.assert_allclose(chapter.vectors[chapter.codes.index("A00.1")], index.vectors[index.codes.index("A00.1")])
    with pytest.raises(MedcoderError, match="no icd10cm code starts with"):
        cached_index(encode, "encoder-A", tmp_path / "cache", prefixes=["??"])


def test_fingerprint_changes_with_any_weight_byte(tmp_path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"abc")
    first = bundle_identity(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"abd")
    assert bundle_identity(tmp_path / "m") != first
