"""Subword encoding for the transformer coders: a Hugging Face tokenizer, truncation, segments, batches.

Text flows ``SubwordEncoder.encode`` (content token ids + character offsets,
no special tokens, cut to ``max_tokens``) -> :func:`collate_truncated` (one
``[CLS] content [SEP]`` row per note) or :func:`collate_segments` (every note
cut into segments of ``segment_length`` with an optional overlap, all segments
of the batch in one ``[segments, segment_length]`` tensor for one encoder pass).

Both collators also return ``content_index`` ``[batch, positions]``: which
content token of its note each position holds (-1 for special tokens and
padding), so label attention over positions maps back to character spans.
No model code lives here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class EncodedSubwords:
    """Notes as content token ids (no special tokens), cut to the configured length.

    ids[i]: int64 ``[n_i]``; offsets[i]: int64 ``[n_i, 2]`` character spans in the note;
    n_truncated: notes that were longer than the limit.
    """

    ids: list[np.ndarray]
    offsets: list[np.ndarray]
    n_truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(a) for a in self.ids], dtype=np.int64)


class SubwordEncoder:
    """Wraps a fast Hugging Face tokenizer: no truncation warnings, no per-note Python work beyond slicing."""

    def __init__(self, tokenizer) -> None:  # a transformers PreTrainedTokenizerFast
        from tokenizers import Tokenizer

        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("the transformer coders need a fast (Rust) tokenizer with character offsets")
        self.tokenizer = tokenizer
        # A private copy: the tokenizer.json of many checkpoints enables truncation at 128/512 tokens.
        self._backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self.cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if self.cls_id is None or self.sep_id is None:
            raise ValueError("the tokenizer has no [CLS]/<s> or [SEP]/</s> token")

    def encode(self, texts: Sequence[str], *, max_tokens: int, batch_size: int = 256) -> EncodedSubwords:
        """Content tokens of each text, the first ``max_tokens`` kept."""
        ids: list[np.ndarray] = []
        offsets: list[np.ndarray] = []
        truncated = 0
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            for encoding in self._backend.encode_batch(chunk, add_special_tokens=False):
                n = len(encoding.ids)
                truncated += n > max_tokens
                ids.append(np.asarray(encoding.ids[:max_tokens], dtype=np.int64))
                offsets.append(np.asarray(encoding.offsets[:max_tokens], dtype=np.int64).reshape(-1, 2))
        return EncodedSubwords(ids, offsets, truncated)


def segment_starts(n_tokens: int, content_length: int, stride: int) -> list[int]:
    """Start of each segment (in content tokens) covering ``n_tokens``; one empty segment for an empty note."""
    if n_tokens <= content_length:
        return [0]
    return [i * stride for i in range(math.ceil((n_tokens - content_length) / stride) + 1)]


def collate_truncated(
    encoder: SubwordEncoder, ids: Sequence[np.ndarray], indices: Sequence[int]
) -> dict[str, torch.Tensor]:
    """``[CLS] content [SEP]`` rows of ``ids[i]`` padded to the batch's longest: input_ids/attention_mask/content_index ``[B, T]``."""
    width = 2 + max(len(ids[i]) for i in indices)
    input_ids = np.full((len(indices), width), encoder.pad_id, dtype=np.int64)
    attention = np.zeros((len(indices), width), dtype=bool)
    content_index = np.full((len(indices), width), -1, dtype=np.int64)
    for row, i in enumerate(indices):
        n = len(ids[i])
        input_ids[row, 0] = encoder.cls_id
        input_ids[row, 1 : n + 1] = ids[i]
        input_ids[row, n + 1] = encoder.sep_id
        attention[row, : n + 2] = True
        content_index[row, 1 : n + 1] = np.arange(n)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention),
        "content_index": torch.from_numpy(content_index),
    }


def collate_segments(
    encoder: SubwordEncoder,
    ids: Sequence[np.ndarray],
    indices: Sequence[int],
    *,
    segment_length: int,
    stride: int | None = None,
) -> dict[str, torch.Tensor]:
    """Every note ``ids[i]`` of the batch cut into ``[CLS] content [SEP]`` segments, all segments in one tensor.

    Returns input_ids/attention_mask ``[segments, segment_length]`` (rows padded
    to the longest segment of the batch), segment_doc/segment_slot ``[segments]``
    (which note and which of its segments each row is) and content_index
    ``[batch, max_segments * width]``: the content token at each position of a
    note's segments laid end to end (-1 for special tokens and padding).
    ``stride`` < ``segment_length - 2`` makes consecutive segments overlap.
    """
    content_length = segment_length - 2
    stride = content_length if stride is None else stride
    if not 1 <= stride <= content_length:
        raise ValueError(f"segment stride must be in 1..{content_length}, got {stride}")
    starts = [segment_starts(len(ids[i]), content_length, stride) for i in indices]
    n_segments = sum(len(s) for s in starts)
    longest = max(min(len(ids[i]), content_length) for i in indices)
    width = longest + 2
    slots = max(len(s) for s in starts)
    input_ids = np.full((n_segments, width), encoder.pad_id, dtype=np.int64)
    attention = np.zeros((n_segments, width), dtype=bool)
    segment_doc = np.zeros(n_segments, dtype=np.int64)
    segment_slot = np.zeros(n_segments, dtype=np.int64)
    content_index = np.full((len(indices), slots * width), -1, dtype=np.int64)
    row = 0
    for doc, (i, doc_starts) in enumerate(zip(indices, starts, strict=True)):
        note = ids[i]
        for slot, start in enumerate(doc_starts):
            piece = note[start : start + content_length]
            n = len(piece)
            input_ids[row, 0] = encoder.cls_id
            input_ids[row, 1 : n + 1] = piece
            input_ids[row, n + 1] = encoder.sep_id
            attention[row, : n + 2] = True
            segment_doc[row], segment_slot[row] = doc, slot
            content_index[doc, slot * width + 1 : slot * width + n + 1] = np.arange(start, start + n)
            row += 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention),
        "segment_doc": torch.from_numpy(segment_doc),
        "segment_slot": torch.from_numpy(segment_slot),
        "content_index": torch.from_numpy(content_index),
    }
