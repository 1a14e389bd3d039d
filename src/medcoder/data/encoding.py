"""Word-level encoding for the CNN/RNN coders: tokenizer, vocabulary, batches.

Text flows ``tokenize`` -> :class:`Vocab` ids -> :class:`EncodedCorpus` (all
notes' int32 ids in one flat array + offsets, truncated; no Python list per
note: at MIMIC size lists of token strings took ~60 bytes a token, 4 GB) -> :class:`LengthBucketPlan` (which notes
share a batch) -> :func:`collate` (padded tensors). No model code lives here.

``tokenize`` and ``tokenize_with_offsets`` produce the same tokens in the same
order, so position ``i`` of an encoded note (``i < max_tokens``) is the span
``offsets[i]`` of its text; explanations rely on that.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from medcoder.errors import InputError
from medcoder.io import atomic_write_json, read_json_file

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
VOCAB_FORMAT = "medcoder.vocab.words.v1"
_VOCAB_KEYS = frozenset({"format", "tokens", "min_count", "max_size"})

# A token is a run of letters/digits (any script; "_" excluded so de-identification
# markup like "[**Name**]" yields "name"). A dot joins digits only when a digit
# precedes it, keeping "40.2", "250.00" and "E11.9" whole while "day.5" splits.
# (The lookbehind form is twice as fast as an alternation that backtracks.)
_TOKEN = re.compile(r"[^\W_]+(?:(?<=\d)\.\d+)*")
# Batches per shuffled chunk when bucketing: large enough for similar lengths to
# meet, small enough that batch composition still varies between epochs.
BUCKET_CHUNK_BATCHES = 50


def _ascii_table(lowercase: bool) -> bytes:
    keep = string.ascii_letters + string.digits + "."
    table = bytearray(range(256))
    for byte in range(128):
        char = chr(byte)
        table[byte] = ord(char.lower() if lowercase else char) if char in keep else ord(" ")
    return bytes(table)


# Fast path: in the UTF-8 bytes, every ASCII byte that cannot be part of a token
# becomes a space (multi-byte characters are untouched), so ``split()`` yields
# runs that only the regex tokenizer could still cut: those holding a dot or a
# non-ASCII character go through it, the rest are tokens as they stand. About
# twice as fast as the regex alone, with the same tokens.
_BYTE_TABLES = {True: _ascii_table(True), False: _ascii_table(False)}


def tokenize(text: str, *, lowercase: bool = True) -> list[str]:
    """Split clinical text into word tokens; punctuation is dropped.

    >>> tokenize("Pt w/ T2DM, HbA1c 7.5%; s/p CABG, 2.5mg.")
    ['pt', 'w', 't2dm', 'hba1c', '7.5', 's', 'p', 'cabg', '2.5', 'mg']
    """
    data = text.encode("utf-8", "surrogatepass").translate(_BYTE_TABLES[lowercase])
    runs = data.decode("utf-8", "surrogatepass").split()
    if data.isascii() and b"." not in data:
        return runs
    tokens: list[str] = []
    for run in runs:
        if "." in run or not run.isascii():
            found = _TOKEN.findall(run)
            tokens.extend([token.lower() for token in found] if lowercase else found)
        else:
            tokens.append(run)
    return tokens


def tokenize_with_offsets(text: str, *, lowercase: bool = True) -> list[tuple[str, int, int]]:
    """``(token, start, end)`` for each token of :func:`tokenize`; ``text[start:end]`` is the token as written."""
    if lowercase:
        return [(m.group().lower(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


class Vocab:
    """Word <-> index map, built from training texts only.

    Index 0 is ``<pad>``, 1 is ``<unk>``; words follow by descending count,
    ties broken by the word, so the same texts always give the same ids.
    """

    def __init__(self, tokens: Sequence[str], *, min_count: int = 1, max_size: int | None = None) -> None:
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {list(tokens[:2])!r}")
        self.tokens = list(tokens)
        self.min_count = min_count
        self.max_size = max_size
        self.index = {token: i for i, token in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("vocabulary tokens are not unique")

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], *, min_count: int = 2, max_size: int | None = None) -> Vocab:
        """Count tokens; keep those seen ``min_count`` times or more.

        ``max_size`` caps the whole vocabulary, ``<pad>`` and ``<unk>`` included.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size < 2:
            raise ValueError(f"max_size must be >= 2 (room for {PAD} and {UNK}), got {max_size}")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max_size - 2]
        return cls([PAD, UNK, *words], min_count=min_count, max_size=max_size)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of ``tokens``; unknown words map to ``<unk>`` (1)."""
        get = self.index.get
        return [get(token, UNK_ID) for token in tokens]

    def to_json(self, path: str | Path) -> None:
        """Write the vocabulary (``"format": "medcoder.vocab.words.v1"``) atomically."""
        atomic_write_json(
            path,
            {"format": VOCAB_FORMAT, "tokens": self.tokens, "min_count": self.min_count, "max_size": self.max_size},
        )

    @classmethod
    def from_json(cls, path: str | Path) -> Vocab:
        """Read a file written by :meth:`to_json`; ``InputError`` naming the file and key otherwise."""
        data: Any = read_json_file(path)

        def bad(key: str, message: str) -> InputError:
            return InputError(message, path=path, field=key)

        if not isinstance(data, dict):
            raise InputError(f"expected a JSON object, got {type(data).__name__}", path=path)
        if data.get("format") != VOCAB_FORMAT:
            raise bad(
                "format", f"not a medcoder word vocabulary: expected {VOCAB_FORMAT!r}, got {data.get('format')!r}"
            )
        unknown, missing = sorted(set(data) - _VOCAB_KEYS), sorted(_VOCAB_KEYS - set(data))
        if unknown:
            raise bad(unknown[0], "unknown key")
        if missing:
            raise bad(missing[0], "missing key")
        tokens = data["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise bad("tokens", "expected a list of non-empty strings")
        if tokens[:2] != [PAD, UNK]:
            raise bad("tokens", f"expected the list to start with {PAD!r}, {UNK!r}, got {tokens[:2]!r}")
        if len(set(tokens)) != len(tokens):
            raise bad("tokens", "tokens are not unique")
        min_count, max_size = data["min_count"], data["max_size"]
        if not _is_int(min_count) or min_count < 1:
            raise bad("min_count", f"expected an integer >= 1, got {min_count!r}")
        if max_size is not None and (not _is_int(max_size) or max_size < len(tokens)):
            raise bad("max_size", f"expected null or an integer >= {len(tokens)} (the token count), got {max_size!r}")
        return cls(tokens, min_count=min_count, max_size=max_size)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class TokenStream:
    """The token lists of ``texts``, tokenized afresh on each pass: iterate it as often as needed, hold none.

    Building a vocabulary and encoding are two passes over it; a corpus of long notes never exists as
    Python lists of token strings (at MIMIC size those took ~60 bytes a token: 4 GB).
    """

    def __init__(self, texts: Sequence[str], *, lowercase: bool = True) -> None:
        self.texts = texts
        self.lowercase = lowercase

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[list[str]]:
        return (tokenize(text, lowercase=self.lowercase) for text in self.texts)


class TokenRows(Sequence[np.ndarray]):
    """Row ``i`` of one flat id array: ``flat[offsets[i]:offsets[i + 1]]``, a view (no copy)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.flat = flat
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.flat[self.offsets[index] : self.offsets[index + 1]]


@dataclass(frozen=True)
class EncodedCorpus:
    """Token ids of many notes.

    ``ids[i]`` is an int32 array ``[lengths[i]]`` (a view into one flat array), at most ``max_tokens``
    long and never empty; ``lengths`` is int64 ``[n]``; ``n_truncated`` counts notes cut short.
    """

    ids: Sequence[np.ndarray]
    lengths: np.ndarray
    n_truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Memory held by the ids and lengths."""
        flat = getattr(self.ids, "flat", None)
        ids = flat.nbytes if flat is not None else sum(row.nbytes for row in self.ids)
        return int(ids + self.lengths.nbytes)


def encode_corpus(texts: Iterable[str], vocab: Vocab, *, max_tokens: int, lowercase: bool = True) -> EncodedCorpus:
    """Tokenize, truncate to ``max_tokens`` and map to ids.

    A note with no tokens becomes a single ``<unk>``, so every note fills at
    least one position of a batch.
    """
    return encode_token_lists((tokenize(text, lowercase=lowercase) for text in texts), vocab, max_tokens=max_tokens)


_GROW = 1 << 20  # ids the flat array grows by (at least)


def encode_token_lists(token_lists: Iterable[Sequence[str]], vocab: Vocab, *, max_tokens: int) -> EncodedCorpus:
    """:func:`encode_corpus` for token lists (a :class:`TokenStream`, or lists already made): one flat int32 array."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    get = vocab.index.get
    flat = np.empty(_GROW, dtype=np.int32)
    offsets = [0]
    truncated = 0
    end = 0
    for tokens in token_lists:
        if len(tokens) > max_tokens:
            truncated += 1
            tokens = tokens[:max_tokens]
        row = [get(token, UNK_ID) for token in tokens] or [UNK_ID]
        if end + len(row) > len(flat):
            flat = np.resize(flat, max(2 * len(flat), end + len(row) + _GROW))
        flat[end : end + len(row)] = row
        end += len(row)
        offsets.append(end)
    flat = flat[:end].copy()  # give back the growth room
    offsets_array = np.asarray(offsets, dtype=np.int64)
    return EncodedCorpus(TokenRows(flat, offsets_array), np.diff(offsets_array), truncated)


class BatchPlan(Protocol):
    """Which examples form each batch of an epoch (what the training loop asks of a data plan)."""

    def batches(self, epoch: int) -> list[list[int]]: ...

    def __len__(self) -> int: ...


class LengthBucketPlan:
    """Seeded batch order for one epoch at a time; every index appears exactly once per epoch.

    - ``shuffle=False``: consecutive batches in index order (prediction);
    - ``bucketing=False``: a plain seeded shuffle;
    - ``bucketing=True``: shuffle, cut into chunks of ``BUCKET_CHUNK_BATCHES``
      batches, sort each chunk by length, cut into batches, shuffle the batches.
      Notes of similar length share a batch, so little of each batch is padding.

    The order depends only on ``(seed, epoch)``; a resumed run sees the same batches.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        batch_size: int,
        seed: int,
        bucketing: bool = True,
        shuffle: bool = True,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1:
            raise ValueError(f"lengths must be one-dimensional, got shape {self.lengths.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.batch_size = batch_size
        self.seed = seed
        self.bucketing = bucketing
        self.shuffle = shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def batches(self, epoch: int) -> list[list[int]]:
        """Index lists, one per batch, for ``epoch`` (>= 0)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        n, size = len(self.lengths), self.batch_size
        if not self.shuffle:
            return [list(range(start, min(start + size, n))) for start in range(0, n, size)]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        if not self.bucketing:
            return [order[start : start + size].tolist() for start in range(0, n, size)]
        chunk = size * BUCKET_CHUNK_BATCHES
        batches: list[list[int]] = []
        for start in range(0, n, chunk):
            part = order[start : start + chunk]
            # A stable sort keeps the shuffled order among equal lengths.
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches.extend(part[i : i + size].tolist() for i in range(0, len(part), size))
        return [batches[i] for i in rng.permutation(len(batches))]


def padding_fraction(lengths: Sequence[int] | np.ndarray, batches: Iterable[Sequence[int]]) -> float:
    """Share of padded positions when each batch is padded to its longest member."""
    lengths = np.asarray(lengths)
    padded = real = 0
    for batch in batches:
        sizes = lengths[list(batch)]
        padded += int(sizes.max()) * len(sizes)
        real += int(sizes.sum())
    return 0.0 if padded == 0 else 1.0 - real / padded


def dropout_seed(seed: int, epoch: int, step: int) -> int:
    """A 64-bit generator seed mixed from ``(seed, epoch, step)``, for word dropout."""
    return int(np.random.SeedSequence([seed, epoch, step]).generate_state(1, dtype=np.uint64)[0])


def collate(
    corpus: EncodedCorpus,
    indices: Sequence[int],
    *,
    word_dropout: float = 0.0,
    seed: int = 0,
    epoch: int = 0,
    step: int = 0,
    labels: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Pad one batch to its longest note.

    Returns ``input_ids`` long ``[B, T]`` (0 = ``<pad>``), ``mask`` bool ``[B, T]``
    (True = real token), ``lengths`` long ``[B]`` and, when ``labels`` (bool
    ``[n, L]``) is given, ``labels`` float ``[B, L]``.

    ``word_dropout`` removes each token with that probability (the note closes
    up; at least one token always stays). The draw comes from a generator
    seeded by ``(seed, epoch, step)``: the same call gives the same batch.
    """
    if len(indices) == 0:
        raise ValueError("a batch needs at least one index")
    if not 0.0 <= word_dropout < 1.0:
        raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
    rows = [corpus.ids[i] for i in indices]
    flat = np.concatenate(rows)
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    if word_dropout > 0.0:
        flat, lengths = _drop_words(flat, lengths, word_dropout, dropout_seed(seed, epoch, step))
    # Built in numpy, then shared with torch: torch's own small ops can cost
    # milliseconds each when its thread pool competes for busy cores.
    mask = np.arange(int(lengths.max()))[None, :] < lengths[:, None]
    input_ids = np.zeros(mask.shape, dtype=np.int64)
    input_ids[mask] = flat  # row-major order of the mask's True cells is the order of ``flat``
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "mask": torch.from_numpy(mask),
        "lengths": torch.from_numpy(lengths),
    }
    if labels is not None:
        if labels.ndim != 2:
            raise ValueError(f"labels must be [n, L], got shape {labels.shape}")
        batch["labels"] = torch.from_numpy(np.asarray(labels[list(indices)], dtype=np.float32))
    return batch


def _drop_words(flat: np.ndarray, lengths: np.ndarray, p: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove tokens with probability ``p``; a note that would lose all keeps its luckiest token."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand(len(flat), generator=generator, dtype=torch.float64).numpy()
    keep = draws >= p
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    kept = np.add.reduceat(keep.astype(np.int64), starts)
    for row in np.flatnonzero(kept == 0):
        start = starts[row]
        keep[start + int(np.argmax(draws[start : start + lengths[row]]))] = True
        kept[row] = 1
    return flat[keep], kept.astype(np.int64)
