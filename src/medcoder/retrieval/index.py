"""Code retrieval: an index of code-description embeddings over the whole ICD catalog.

A classifier only predicts the codes it was trained on; retrieval embeds every
code description of the catalog once (a bi-encoder: the same sentence encoder
embeds notes or mentions and descriptions) and returns, for a query vector, the
codes whose descriptions lie nearest (cosine similarity).

- :func:`medcoder.data.icd.catalog_entries` lists the codes of a catalog with their
  descriptions (ICD-10-CM: every code, or only the billable leaves).
- :class:`CodeIndex` holds the unit-length vectors ``[codes, dim]`` (float32) and
  answers top-k queries with one matrix product and a partial sort.
- :meth:`CodeIndex.save` / :meth:`CodeIndex.load`: a folder with ``index.json``
  (format, codes, the encoder's fingerprint) and ``vectors.safetensors``; no pickle.
- :func:`cached_index` builds an index once per (encoder fingerprint, catalog) and
  reuses it from a cache folder afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.data.icd import catalog_entries
from medcoder.errors import InputError, MedcoderError
from medcoder.io import atomic_directory, read_json_file

logger = logging.getLogger(__name__)

INDEX_FORMAT = "medcoder.code_index.v1"
Encode = Callable[[list[str]], np.ndarray]
Progress = Callable[[int, int], None]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows scaled to length 1 (an all-zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class CodeIndex:
    """Unit-length description vectors of ``codes``; :meth:`search` gives the top-k codes by cosine."""

    def __init__(self, codes: Sequence[str], vectors: np.ndarray, *, meta: dict[str, Any] | None = None) -> None:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(codes):
            raise MedcoderError(f"an index needs one vector per code: {len(codes)} codes, vectors {vectors.shape}")
        if len(set(codes)) != len(codes):
            raise MedcoderError("an index lists each code once")
        self.codes = list(codes)
        self.vectors = unit_rows(vectors)
        self.meta = dict(meta or {})

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def build(
        cls,
        encode: Encode,
        codes: Sequence[str],
        descriptions: Sequence[str],
        *,
        batch_size: int = 1024,
        meta: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> CodeIndex:
        """Embed ``descriptions`` with ``encode`` (a list of texts -> ``[n, dim]``) in batches.

        Descriptions go in order of length, so a batch pads little (the vectors come
        back in the codes' order).
        """
        if len(codes) != len(descriptions):
            raise MedcoderError(f"{len(codes)} codes but {len(descriptions)} descriptions")
        order = sorted(range(len(descriptions)), key=lambda i: len(descriptions[i]))
        parts = []
        for start in range(0, len(order), batch_size):
            batch = [descriptions[i] for i in order[start : start + batch_size]]
            parts.append(np.asarray(encode(batch), dtype=np.float32))
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        if not parts:
            return cls(codes, np.zeros((0, 1), dtype=np.float32), meta=meta)
        vectors = np.empty((len(order), parts[0].shape[1]), dtype=np.float32)
        vectors[order] = np.concatenate(parts)
        return cls(codes, vectors, meta=meta)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` codes for each query row: (indices ``[q, k]``, cosine scores ``[q, k]``), best first."""
        queries = unit_rows(np.atleast_2d(queries))
        if queries.shape[1] != self.dim:
            raise MedcoderError(f"query vectors have {queries.shape[1]} dimensions, the index {self.dim}")
        k = max(1, min(k, len(self.codes)))
        scores = queries @ self.vectors.T  # [q, codes]
        if k < len(self.codes):
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(len(self.codes)), scores.shape).copy()
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)

    def save(self, folder: str | Path) -> None:
        """Write ``index.json`` + ``vectors.safetensors`` atomically (the folder appears whole or not at all)."""
        from safetensors.numpy import save_file

        with atomic_directory(folder) as tmp:
            save_file({"vectors": np.ascontiguousarray(self.vectors)}, str(tmp / "vectors.safetensors"))
            header = {"format": INDEX_FORMAT, "codes": self.codes, "dim": self.dim, "meta": self.meta}
            (tmp / "index.json").write_text(json.dumps(header, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> CodeIndex:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = Path(folder)
        header = read_json_file(folder / "index.json")
        if not isinstance(header, dict) or header.get("format") != INDEX_FORMAT:
            raise InputError(f"{folder / 'index.json'}: not a medcoder code index (expected format {INDEX_FORMAT!r})")
        codes = header.get("codes")
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise InputError(f"{folder / 'index.json'}: 'codes' must be a list of strings")
        try:
            vectors = load_file(str(folder / "vectors.safetensors"))["vectors"]
        except (OSError, SafetensorError, KeyError) as error:
            raise InputError(f"{folder / 'vectors.safetensors'}: unreadable index vectors ({error})") from error
        if vectors.shape != (len(codes), header.get("dim")):
            raise InputError(
                f"{folder / 'vectors.safetensors'}: vectors {vectors.shape} do not match "
                f"{len(codes)} codes x {header.get('dim')} dimensions in index.json"
            )
        return cls(codes, vectors, meta=header.get("meta") or {})


def default_cache_dir() -> Path:
    """Where catalog indexes are cached when the config names no folder.

    ``$MEDCODER_CACHE/index``, else ``$XDG_CACHE_HOME/medcoder/index``, else
    ``~/.cache/medcoder/index``: an index depends only on the encoder's weights
    and the catalog, so every run with the same encoder reuses it.
    """
    root = os.environ.get("MEDCODER_CACHE")
    if root:
        return Path(root) / "index"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "medcoder" / "index"


def index_folder(
    cache_dir: str | Path, encoder_fingerprint: str, *, system: str, leaves_only: bool, prefixes: Sequence[str] | None
) -> Path:
    """The folder under ``cache_dir`` that holds the index of this encoder and catalog."""
    wanted = tuple(sorted(set(prefixes))) if prefixes else ()
    catalog = f"{system}|{int(leaves_only)}" + (f"|{','.join(wanted)}" if wanted else "")
    key = hashlib.sha256(f"{encoder_fingerprint}|{catalog}".encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{system}-{'leaves' if leaves_only else 'all'}-{key}"


def cached_index(
    encode: Encode,
    encoder_fingerprint: str,
    cache_dir: str | Path,
    *,
    system: str = "icd10cm",
    leaves_only: bool = False,
    prefixes: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> tuple[CodeIndex, bool]:
    """The catalog's index for this encoder: loaded from ``cache_dir`` when built before, else built and saved.

    Returns (index, whether it came from the cache). ``prefixes`` keeps only the codes
    starting with one of them (a chapter, say). The cache key is the encoder's
    fingerprint and the catalog (system, leaves_only, prefixes), so a fine-tuned
    encoder never reuses the vectors of another.
    """
    wanted = tuple(sorted(set(prefixes))) if prefixes else ()
    folder = index_folder(cache_dir, encoder_fingerprint, system=system, leaves_only=leaves_only, prefixes=prefixes)
    if (folder / "index.json").is_file():
        try:
            index = CodeIndex.load(folder)
            if index.meta.get("encoder_fingerprint") == encoder_fingerprint:
                return index, True
        except InputError as error:
            logger.warning("rebuilding the code index: %s", error)
    codes, descriptions = catalog_entries(system, leaves_only=leaves_only)
    if wanted:
        kept = [i for i, code in enumerate(codes) if code.startswith(wanted)]
        if not kept:
            raise MedcoderError(f"no {system} code starts with any of {list(wanted)}")
        codes, descriptions = tuple(codes[i] for i in kept), tuple(descriptions[i] for i in kept)
    meta = {
        "encoder_fingerprint": encoder_fingerprint,
        "system": system,
        "leaves_only": leaves_only,
        "prefixes": list(wanted),
    }
    index = CodeIndex.build(encode, codes, descriptions, meta=meta, progress=progress)
    index.save(folder)
    return index, False
