"""Word vectors: train word2vec on in-domain text, read a user's vector file, seed an embedding layer.

Nothing here reads or writes pickles. Gensim's native ``.model``/``.kv`` files
are pickles, so we refuse them; a user's vectors come in the word2vec text
format (``.vec``/``.txt``, also GloVe's header-less variant) or the word2vec
binary format (``.bin``). Our own copy of a set of vectors is a directory:
``vectors.safetensors`` (float32 ``[n, dim]``) + ``vectors.json`` (tokens).
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from medcoder.data.encoding import PAD_ID, Vocab
from medcoder.errors import InputError, MedcoderError
from medcoder.io import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    read_json_file,
)

logger = logging.getLogger(__name__)

FORMAT = "medcoder.word_vectors.v1"
VECTORS_FILE, TOKENS_FILE = "vectors.safetensors", "vectors.json"
_KEYS = frozenset({"format", "tokens", "dim", "meta"})
_TEXT_SUFFIXES = (".vec", ".txt")
_BINARY_SUFFIXES = (".bin",)
_PICKLE_SUFFIXES = (".model", ".kv", ".pkl", ".pickle", ".joblib", ".npy", ".pt", ".pth")
# Protocol 2-5 pickles start with PROTO (0x80) and the protocol number.
_PICKLE_HEADS = frozenset(bytes([0x80, protocol]) for protocol in range(2, 6))
# Gensim cuts any "sentence" longer than this (its MAX_WORDS_IN_BATCH) without a
# word; whole notes are longer, so we hand them over in pieces of this size.
_MAX_SENTENCE = 10_000


def _stable_hash(text: str) -> int:
    """Python's ``hash`` of a str changes with PYTHONHASHSEED; gensim takes this instead."""
    return zlib.crc32(text.encode("utf-8"))


@dataclass
class WordVectors:
    """``vectors[i]`` (float32 ``[n, dim]``) is the vector of ``tokens[i]``; ``meta`` records provenance."""

    tokens: list[str]
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.tokens):
            raise ValueError(f"expected vectors [{len(self.tokens)}, dim], got shape {self.vectors.shape}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("word vector tokens are not unique")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.tokens)

    def embedding_matrix(self, vocab: Vocab, *, seed: int = 0, scale: float | None = None) -> tuple[np.ndarray, float]:
        """Initial weights for an embedding layer over ``vocab``: float32 ``[len(vocab), dim]`` and the coverage.

        A vocab word takes the vector of the same word, else of its lowercase
        form, else of the most frequent vector word with that lowercase form
        (vector files list frequent words first). Other rows are drawn from a
        seeded normal with standard deviation ``scale`` (default: that of the
        vectors), so they start on the same scale; ``<pad>`` is zeros. The
        coverage is the share of vocab words (``<pad>``/``<unk>`` excluded) found.
        """
        exact = {token: i for i, token in enumerate(self.tokens)}
        folded: dict[str, int] = {}
        for i, token in enumerate(self.tokens):
            folded.setdefault(token.lower(), i)
        if scale is None:
            scale = float(self.vectors.std()) if self.vectors.size else 0.1
        rng = np.random.default_rng(seed)
        matrix = rng.normal(0.0, scale, size=(len(vocab), self.dim)).astype(np.float32)
        found = 0
        for row, token in enumerate(vocab.tokens[2:], start=2):
            lower = token.lower()
            source = exact.get(token, exact.get(lower, folded.get(lower)))
            if source is not None:
                matrix[row] = self.vectors[source]
                found += 1
        matrix[PAD_ID] = 0.0
        words = len(vocab) - 2
        return matrix, (found / words if words else 0.0)

    def save(self, path: str | Path) -> None:
        """Write the directory ``path`` (``vectors.safetensors`` + ``vectors.json``) atomically."""
        with atomic_directory(path) as tmp:
            atomic_write_bytes(tmp / VECTORS_FILE, save_safetensors({"vectors": self.vectors}))
            atomic_write_json(
                tmp / TOKENS_FILE, {"format": FORMAT, "tokens": self.tokens, "dim": self.dim, "meta": self.meta}
            )

    @classmethod
    def load(cls, path: str | Path) -> WordVectors:
        """Read a directory written by :meth:`save`; ``InputError`` naming the file and key otherwise."""
        path = Path(path)
        if not path.is_dir():
            raise InputError("not a word-vector directory (expected vectors.safetensors + vectors.json)", path=path)
        for name in (VECTORS_FILE, TOKENS_FILE):
            if not (path / name).is_file():
                raise InputError("file not found", path=path / name)
        meta_path = path / TOKENS_FILE
        data: Any = read_json_file(meta_path)
        if not isinstance(data, dict):
            raise InputError(f"expected a JSON object, got {type(data).__name__}", path=meta_path)
        if data.get("format") != FORMAT:
            raise InputError(
                f"not medcoder word vectors: expected {FORMAT!r}, got {data.get('format')!r}",
                path=meta_path,
                field="format",
            )
        unknown, missing = sorted(set(data) - _KEYS), sorted(_KEYS - set(data))
        if unknown or missing:
            raise InputError("unknown key" if unknown else "missing key", path=meta_path, field=(unknown or missing)[0])
        tokens = data["tokens"]
        if (
            not isinstance(tokens, list)
            or not all(isinstance(t, str) for t in tokens)
            or len(set(tokens)) != len(tokens)
        ):
            raise InputError("expected a list of unique strings", path=meta_path, field="tokens")
        if not isinstance(data["dim"], int) or isinstance(data["dim"], bool) or data["dim"] < 1:
            raise InputError(f"expected an integer >= 1, got {data['dim']!r}", path=meta_path, field="dim")
        if not isinstance(data["meta"], dict):
            raise InputError("expected an object", path=meta_path, field="meta")
        tensor_path = path / VECTORS_FILE
        try:
            tensors = load_safetensors(tensor_path.read_bytes())
        except SafetensorError as exc:
            raise InputError(f"not a safetensors file: {exc}", path=tensor_path) from None
        vectors = tensors.get("vectors")
        expected = (len(tokens), data["dim"])
        if vectors is None or vectors.dtype != np.float32 or vectors.shape != expected:
            got = "no 'vectors' tensor" if vectors is None else f"{vectors.dtype} {list(vectors.shape)}"
            raise InputError(
                f"expected a float32 'vectors' tensor of shape {list(expected)}, got {got}", path=tensor_path
            )
        return cls(tokens, vectors, data["meta"])


def train_word2vec(
    token_lists: Sequence[Sequence[str]],
    *,
    dim: int = 100,
    algorithm: Literal["cbow", "skipgram"] = "cbow",
    window: int = 5,
    min_count: int = 2,
    epochs: int = 5,
    seed: int = 0,
    workers: int = 1,
) -> WordVectors:
    """Train word2vec (gensim) on tokenized texts.

    With ``workers=1`` the result depends only on the inputs and ``seed`` (not
    on PYTHONHASHSEED); more workers train faster but not reproducibly.
    """
    from gensim.models import Word2Vec  # gensim is slow to import; only this function needs it

    if algorithm not in ("cbow", "skipgram"):
        raise ValueError(f"algorithm must be 'cbow' or 'skipgram', got {algorithm!r}")
    sentences = [
        list(tokens[i : i + _MAX_SENTENCE]) for tokens in token_lists for i in range(0, len(tokens), _MAX_SENTENCE)
    ]
    model = Word2Vec(
        vector_size=dim,
        sg=1 if algorithm == "skipgram" else 0,
        window=window,
        min_count=min_count,
        seed=seed,
        workers=workers,
        hashfxn=_stable_hash,
    )
    model.build_vocab(sentences)
    if len(model.wv) == 0:
        raise MedcoderError(
            f"word2vec: no word occurs at least min_count={min_count} times in {len(token_lists)} texts"
        )
    model.train(sentences, total_examples=model.corpus_count, epochs=epochs)
    meta = {
        "source": "word2vec",
        "algorithm": algorithm,
        "dim": dim,
        "window": window,
        "min_count": min_count,
        "epochs": epochs,
        "seed": seed,
        "texts": len(token_lists),
    }
    return WordVectors(list(model.wv.index_to_key), np.array(model.wv.vectors, dtype=np.float32), meta)


def load_word_vectors(path: str | Path) -> WordVectors:
    """Read pre-trained vectors: word2vec text (``.vec``/``.txt``, with or without
    the ``count dim`` header, so GloVe too) or word2vec binary (``.bin``); ``.gz`` allowed.

    Pickle-based files (gensim ``.model``/``.kv``, ``.pkl``) are refused: loading one
    can run arbitrary code. Malformed input is an ``InputError`` naming the file and line.
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    kind = suffixes[-2] if compressed and len(suffixes) == 2 else (suffixes[-1] if suffixes else "")
    if kind in _PICKLE_SUFFIXES:
        raise InputError(
            f"{kind} files are pickles (gensim's native format), which medcoder never loads; "
            "export the vectors with gensim's save_word2vec_format to a .vec or .bin file",
            path=path,
        )
    if kind not in _TEXT_SUFFIXES + _BINARY_SUFFIXES:
        raise InputError(f"unknown word-vector file type {kind or '(none)'!r}; expected .vec, .txt or .bin", path=path)
    if not path.is_file():
        raise InputError("file not found" if not path.exists() else "expected a file", path=path)
    try:
        with _open(path, compressed) as handle:
            head = handle.read(2)
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read: {exc}", path=path) from None
    if head in _PICKLE_HEADS:
        raise InputError("this is a Python pickle, which medcoder never loads", path=path)
    tokens, matrix = _read_binary(path) if kind in _BINARY_SUFFIXES else _read_text(path, compressed)
    if not tokens:
        raise InputError("no word vectors in file", path=path)
    return WordVectors(tokens, matrix, {"source": path.name})


def _open(path: Path, compressed: bool) -> IO[bytes]:
    return gzip.open(path, "rb") if compressed else path.open("rb")


def _read_binary(path: Path) -> tuple[list[str], np.ndarray]:
    from gensim.models import KeyedVectors

    try:
        keyed = KeyedVectors.load_word2vec_format(str(path), binary=True)
    except (ValueError, EOFError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"not a valid word2vec binary file: {exc}", path=path) from None
    vectors = np.array(keyed.vectors, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise InputError(f"vector {bad[0] + 1} ({keyed.index_to_key[bad[0]]!r}) has a non-finite value", path=path)
    return list(keyed.index_to_key), vectors


def _text_lines(path: Path, compressed: bool) -> Iterator[tuple[int, str]]:
    number = 0
    try:
        with _open(path, compressed) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})", path=path, line=number) from None
    except (OSError, EOFError) as exc:  # a damaged .gz
        raise InputError(f"cannot read after line {number}: {exc}", path=path) from None


def _read_text(path: Path, compressed: bool) -> tuple[list[str], np.ndarray]:
    """Parse the word2vec text format: optional ``count dim`` line, then ``word x1 ... xdim`` per line.

    A word may itself hold spaces (GloVe has a few): the last ``dim`` fields are the numbers.
    """
    tokens: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    duplicates = 0
    header: tuple[int, int] | None = None
    dim: int | None = None
    for number, line in _text_lines(path, compressed):
        fields = line.rstrip("\r\n").rstrip(" ").split(" ")
        if number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
            header = int(fields[0]), int(fields[1])
            dim = header[1]
            if dim < 1:
                raise InputError(f"header gives dimension {dim}; expected >= 1", path=path, line=number)
            continue
        if fields == [""]:
            continue
        if dim is None:
            dim = len(fields) - 1
            if dim < 1:
                raise InputError("expected a word followed by numbers", path=path, line=number)
        word, numbers = _split_word(fields, dim, path, number)
        try:
            row = np.array(numbers, dtype=np.float32)
        except ValueError:
            bad = next((f for f in numbers if not _is_float(f)), " ".join(numbers))
            raise InputError(f"{bad!r} is not a number", path=path, line=number) from None
        if not np.isfinite(row).all():
            raise InputError(f"non-finite value in the vector of {word!r}", path=path, line=number)
        if word in seen:
            duplicates += 1
            continue
        seen.add(word)
        tokens.append(word)
        rows.append(row)
    if header is not None and header[0] != len(tokens) + duplicates:
        raise InputError(f"header announces {header[0]} vectors, found {len(tokens) + duplicates}", path=path, line=1)
    if duplicates:
        logger.warning("%s: %d duplicate words; kept the first vector of each", path, duplicates)
    return tokens, (np.stack(rows) if rows else np.zeros((0, dim or 1), dtype=np.float32))


def _split_word(fields: list[str], dim: int, path: Path, number: int) -> tuple[str, list[str]]:
    """``(word, number fields)``; a line whose count of numbers is not ``dim`` is an ``InputError``."""
    if not fields[0]:
        raise InputError("line starts with a space; expected a word", path=path, line=number)
    if "" in fields[1:]:
        raise InputError("two spaces in a row; expected single spaces between fields", path=path, line=number)
    if len(fields) > dim + 1:
        head = fields[1 : len(fields) - dim]
        if any(_is_float(f) for f in head):  # extra numbers, not a word with spaces in it
            count = sum(_is_float(f) for f in fields[1:])
            raise InputError(f"expected {dim} numbers after the word, found {count}", path=path, line=number)
        return " ".join(fields[: len(fields) - dim]), fields[len(fields) - dim :]
    if len(fields) < dim + 1:
        raise InputError(f"expected {dim} numbers after the word, found {len(fields) - 1}", path=path, line=number)
    return fields[0], fields[1:]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
