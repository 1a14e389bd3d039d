"""Word vectors: word2vec training, reading vector files, our safetensors format, embedding matrices."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

from medcoder.data.dataset import read_unlabeled_texts
from medcoder.data.encoding import Vocab, tokenize
from medcoder.errors import InputError, MedcoderError
from medcoder.models.word_vectors import (
    WordVectors,
    load_word_vectors,
    train_word2vec,
)

BACKGROUND = Path(__file__).resolve().parents[2] / "shared" / "data" / "codiesp" / "background_en.jsonl"


def _synthetic_corpus(n: int = 600, seed: int = 0) -> list[list[str]]:
    """Drugs and lung diseases each share their own contexts; filler words are everywhere."""
    rng = np.random.default_rng(seed)
    drugs, diseases = ["aspirin", "ibuprofen", "naproxen"], ["pneumonia", "bronchitis", "asthma"]
    filler = [f"f{i}" for i in range(30)]
    docs = []
    for i in range(n):
        if i % 2:
            doc = ["patient", "takes", str(rng.choice(drugs)), "tablet", "daily", "for", "pain"]
        else:
            doc = ["chest", "xray", "shows", str(rng.choice(diseases)), "with", "cough", "fever"]
        docs.append(doc + [str(w) for w in rng.choice(filler, size=3)])
    return docs


def _cosine(vectors: WordVectors, a: str, b: str) -> float:
    x, y = (vectors.vectors[vectors.tokens.index(w)] for w in (a, b))
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


@pytest.fixture(scope="module")
def trained() -> WordVectors:
    return train_word2vec(_synthetic_corpus(), dim=16, algorithm="skipgram", window=3, epochs=20, seed=1)


def test_word2vec_groups_words_used_alike(trained: WordVectors) -> None:
    assert trained.vectors.dtype == np.float32 and trained.vectors.shape == (len(trained.tokens), 16)
    same = min(_cosine(trained, "aspirin", "ibuprofen"), _cosine(trained, "pneumonia", "bronchitis"))
    across = max(_cosine(trained, "aspirin", "pneumonia"), _cosine(trained, "ibuprofen", "asthma"))
    assert same > 0.8
    assert same - across > 0.3
    assert trained.meta["algorithm"] == "skipgram" and trained.meta["texts"] == 600


def test_word2vec_is_deterministic(trained: WordVectors) -> None:
    again = train_word2vec(_synthetic_corpus(), dim=16, algorithm="skipgram", window=3, epochs=20, seed=1)
    assert again.tokens == trained.tokens
    assert np.array_equal(again.vectors, trained.vectors)
    other = train_word2vec(_synthetic_corpus(), dim=16, algorithm="skipgram", window=3, epochs=20, seed=2)
    assert not np.array_equal(other.vectors, trained.vectors)


_HASH_SCRIPT = """
import hashlib, sys
sys.path[:0] = [{tests!r}]
from test_embeddings import _synthetic_corpus
from medcoder.models.word_vectors import train_word2vec
v = train_word2vec(_synthetic_corpus(200), dim=8, algorithm="cbow", epochs=3, seed=5)
print(hashlib.sha256(v.vectors.tobytes() + "|".join(v.tokens).encode()).hexdigest())
"""


def test_word2vec_ignores_pythonhashseed() -> None:
    script = _HASH_SCRIPT.format(tests=str(Path(__file__).parent))
    # Both at once: most of each run is importing torch and gensim.
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=os.environ | {"PYTHONHASHSEED": hash_seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for hash_seed in ("1", "2")
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    digests = {out.strip() for out, _ in outputs}
    assert len(digests) == 1 and len(digests.pop()) == 64


def test_word2vec_keeps_long_texts_whole() -> None:
    # Gensim silently cuts texts past 10,000 words; a word seen only beyond that must still be learned.
    long_text = ["filler"] * 12_000 + ["late", "late", "late"]
    vectors = train_word2vec([long_text], dim=4, min_count=2, epochs=1)
    assert "late" in vectors.tokens


def test_word2vec_with_nothing_to_learn() -> None:
    with pytest.raises(MedcoderError, match="min_count=5"):
        train_word2vec([["a", "b"], ["c"]], dim=4, min_count=5)


def _keyed(tokens: list[str], vectors: np.ndarray) -> KeyedVectors:
    keyed = KeyedVectors(vector_size=vectors.shape[1])
    keyed.add_vectors(tokens, vectors)
    return keyed


TOKENS = ["Fever", "cough", "aspirin", "pneumonia"]
VECTORS = np.arange(12, dtype=np.float32).reshape(4, 3) / 7 - 0.5


@pytest.mark.parametrize("name", ["vectors.vec", "vectors.txt", "vectors.bin"])
def test_load_word2vec_formats(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    _keyed(TOKENS, VECTORS).save_word2vec_format(str(path), binary=name.endswith(".bin"))
    loaded = load_word_vectors(path)
    assert loaded.tokens == TOKENS
    np.testing.assert_allclose(loaded.vectors, VECTORS, atol=1e-6)
    assert loaded.meta == {"source": name}


def test_load_glove_text_without_header_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    _keyed(TOKENS, VECTORS).save_word2vec_format(str(path), write_header=False)
    assert len(path.read_text().splitlines()) == 4
    np.testing.assert_allclose(load_word_vectors(path).vectors, VECTORS, atol=1e-6)
    packed = tmp_path / "glove.txt.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert load_word_vectors(packed).tokens == TOKENS


def test_load_text_word_with_spaces(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("a 1 2\n. . . 3 4\nb 5 6\n", encoding="utf-8")
    loaded = load_word_vectors(path)
    assert loaded.tokens == ["a", ". . .", "b"]
    assert loaded.vectors.tolist() == [[1, 2], [3, 4], [5, 6]]


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("3 2\na 1 2\nb 1 2 3\nc 1 2\n", 3, "expected 2 numbers after the word, found 3"),
        ("a 1 2\nb 1\n", 2, "expected 2 numbers after the word, found 1"),
        ("2 2\na 1 2\nb 1 x\n", 3, "'x' is not a number"),
        ("a 1 2\nb 1  2\n", 2, "two spaces"),
        ("a 1 nan\n", 1, "non-finite"),
        ("3 2\na 1 2\nb 1 2\n", 1, "header announces 3 vectors, found 2"),
    ],
)
def test_malformed_text_vectors(tmp_path: Path, content: str, line: int, words: str) -> None:
    path = tmp_path / "bad.vec"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_word_vectors(path)
    assert caught.value.path == str(path) and caught.value.line == line
    assert words in str(caught.value)


def test_bad_bytes_and_truncated_binary(tmp_path: Path) -> None:
    path = tmp_path / "latin1.vec"
    path.write_bytes("a 1 2\nfi\u00e8vre 3 4\n".encode("latin-1"))
    with pytest.raises(InputError, match="not valid UTF-8") as caught:
        load_word_vectors(path)
    assert caught.value.line == 2
    binary = tmp_path / "cut.bin"
    _keyed(TOKENS, VECTORS).save_word2vec_format(str(binary), binary=True)
    binary.write_bytes(binary.read_bytes()[:-5])
    with pytest.raises(InputError, match="not a valid word2vec binary file"):
        load_word_vectors(binary)


@pytest.mark.parametrize("name", ["model.model", "vectors.kv", "vectors.pkl", "vectors.model.gz"])
def test_pickle_formats_are_refused_unread(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"never opened")
    with pytest.raises(InputError, match="pickle"):
        load_word_vectors(path)


def test_pickle_content_is_refused_whatever_the_name(tmp_path: Path) -> None:
    path = tmp_path / "vectors.bin"
    path.write_bytes(pickle.dumps({"a": [1.0, 2.0]}))
    with pytest.raises(InputError, match="pickle"):
        load_word_vectors(path)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found") as caught:
        load_word_vectors(tmp_path / "absent.vec")
    assert caught.value.path == str(tmp_path / "absent.vec")
    with pytest.raises(InputError, match="unknown word-vector file type '.csv'"):
        load_word_vectors(tmp_path / "vectors.csv")


def test_embedding_matrix_coverage_and_rows() -> None:
    vectors = WordVectors(TOKENS, VECTORS)
    vocab = Vocab(["<pad>", "<unk>", "fever", "cough", "sepsis", "aspirin", "ASPIRIN"])
    matrix, coverage = vectors.embedding_matrix(vocab, seed=3, scale=0.5)
    assert matrix.dtype == np.float32 and matrix.shape == (7, 3)
    assert coverage == pytest.approx(4 / 5)  # all but "sepsis"
    assert not matrix[0].any()
    np.testing.assert_array_equal(matrix[2], VECTORS[0])  # "fever" -> "Fever" via lowercase forms
    np.testing.assert_array_equal(matrix[3], VECTORS[1])
    np.testing.assert_array_equal(matrix[5], VECTORS[2])
    np.testing.assert_array_equal(matrix[6], VECTORS[2])  # "ASPIRIN" -> "aspirin"
    again, _ = vectors.embedding_matrix(vocab, seed=3, scale=0.5)
    np.testing.assert_array_equal(again, matrix)
    other, _ = vectors.embedding_matrix(vocab, seed=4, scale=0.5)
    assert not np.array_equal(other[4], matrix[4])
    unknown = Vocab(["<pad>", "<unk>", *[f"x{i}" for i in range(2000)]])
    fresh, coverage = vectors.embedding_matrix(unknown, scale=0.5)
    assert coverage == 0.0 and fresh[2:].std() == pytest.approx(0.5, rel=0.05)
    fresh, _ = vectors.embedding_matrix(unknown)  # default: the spread of the given vectors
    assert fresh[2:].std() == pytest.approx(VECTORS.std(), rel=0.05)


def test_save_load_round_trip(tmp_path: Path, trained: WordVectors) -> None:
    target = tmp_path / "w2v"
    trained.save(target)
    assert sorted(p.name for p in target.iterdir()) == ["vectors.json", "vectors.safetensors"]
    loaded = WordVectors.load(target)
    assert loaded.tokens == trained.tokens and loaded.meta == trained.meta
    np.testing.assert_array_equal(loaded.vectors, trained.vectors)
    assert [p.name for p in tmp_path.iterdir()] == ["w2v"]


def test_load_rejects_foreign_directories(tmp_path: Path) -> None:
    target = tmp_path / "w2v"
    WordVectors(TOKENS, VECTORS).save(target)
    (target / "vectors.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="not a safetensors file") as caught:
        WordVectors.load(target)
    assert caught.value.path == str(target / "vectors.safetensors")
    WordVectors(TOKENS, VECTORS).save(target)
    meta = json.loads((target / "vectors.json").read_text())
    (target / "vectors.json").write_text(json.dumps(meta | {"tokens": TOKENS[:3]}))
    with pytest.raises(InputError, match=r"shape \[3, 3\]"):
        WordVectors.load(target)
    (target / "vectors.json").write_text(json.dumps(meta | {"format": "other"}))
    with pytest.raises(InputError) as caught:
        WordVectors.load(target)
    assert caught.value.field == "format"
    with pytest.raises(InputError, match="not a word-vector directory"):
        WordVectors.load(tmp_path / "nothing")


def test_read_unlabeled_texts(tmp_path: Path) -> None:
    path = tmp_path / "bg.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n\n{"id": "b", "body": "two", "text": "x"}\n', encoding="utf-8")
    assert read_unlabeled_texts(path) == ["one", "x"]
    path.write_text('{"id": "a", "text": "one"}\n{"id": "b", "text": 3}\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_unlabeled_texts(path)
    assert (caught.value.line, caught.value.record, caught.value.field) == (2, "b", "text")
    with pytest.raises(InputError, match="missing"):
        read_unlabeled_texts(path, text_field="body")


@pytest.mark.skipif(not BACKGROUND.exists(), reason="CodiEsp background notes not present")
def test_real_background_notes() -> None:
    texts = read_unlabeled_texts(BACKGROUND)
    assert len(texts) == 2751
    tokens = [tokenize(text) for text in texts[:300]]
    vectors = train_word2vec(tokens, dim=16, min_count=5, epochs=1)
    assert {"patient", "pain", "fever"} <= set(vectors.tokens)
