"""The config of a reranked system (``kind: rerank``, read by ``medcoder train``).

A reranker ("retrieve then rerank") gathers candidate codes per note from its
base signals (classifiers and catalog retrieval), describes every (note, code)
pair by features (each base's score and rank, retrieval evidence, the code's
train frequency, hierarchy and lexical overlap with the code's catalog text) and
learns to rank the candidates with gradient-boosted trees. The base classifiers'
scores on train are out-of-fold, so the ranker never learns from scores a
model produced on its own training notes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from medcoder.config.base import PathText, Strict
from medcoder.config.retrieval import IndexConfig, MentionsConfig
from medcoder.config.run import Calibration, CoderRunConfig, ModelConfig

FEATURE_GROUPS = ("frequency", "hierarchy", "lexical", "mentions")


class BaseCoderConfig(Strict):
    """One base classifier: trained K times for out-of-fold train scores, once on all of train for dev/test/use."""

    # names a feature group and the bundle's folder bases/<name>/
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=60)
    model: ModelConfig
    seed: int = 0


class RetrievalSignalConfig(Strict):
    """Catalog retrieval: every mention of a note (negated and hypothetical ones too) searches the code index.

    The encoder is used as it is (``minilm``: the packaged MiniLM), never fine-tuned on the
    training notes, so its evidence on train notes is as honest as on test notes.
    """

    encoder: str = "minilm"
    max_seq_length: int = Field(64, ge=8)
    k: int = Field(10, ge=1)  # codes kept per mention
    mentions: MentionsConfig = Field(default_factory=MentionsConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)


class ChildrenConfig(Strict):
    """Candidates from the catalog's hierarchy: codes the note's models never saw, under the categories that
    each signal's ``categories`` best codes belong to, ranked by how close the note's codable mentions come
    to each code's catalog text; the ``k`` best per note (see :mod:`medcoder.rerank.children`)."""

    k: int = Field(40, ge=1)
    categories: int = Field(120, ge=1)
    # a code's score: the best cosine of a codable mention to its catalog vector (with retrieval) + this
    # weight x the share of its own words (those its category lacks) the mentions say
    lexical_weight: float = Field(0.25, ge=0)


class RankerConfig(Strict):
    """LightGBM over the candidate features; ``n_estimators`` is an upper bound, dev MAP stops it early."""

    objective: Literal["lambdarank", "binary"] = "lambdarank"
    n_estimators: int = Field(2000, ge=1)
    learning_rate: float = Field(0.03, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(20, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    early_stopping_rounds: int = Field(100, ge=1)
    # 1: OpenMP threads spin while they wait, so a second thread on a busy 2-core machine slows boosting down
    threads: int = Field(1, ge=1)


class RerankConfig(CoderRunConfig):
    """What ``medcoder train`` reads for a reranked system; it writes a bundle of kind ``rerank``."""

    kind: Literal["rerank"] = "rerank"
    name: str = "rerank"
    bases: list[BaseCoderConfig] = Field(min_length=1)
    retrieval: RetrievalSignalConfig | None = None  # None: candidates come from the classifiers only
    children: ChildrenConfig | None = None  # None: no candidates from the catalog's hierarchy
    folds: int = Field(5, ge=2)  # K of the out-of-fold train scores
    # candidates per note: each base's top-k (and retrieval's top-k); dev MAP picks k among these
    candidates: list[int] = Field(default_factory=lambda: [10, 20, 40], min_length=1)
    features: list[Literal["frequency", "hierarchy", "lexical", "mentions"]] = Field(
        default_factory=lambda: list(FEATURE_GROUPS)
    )
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    # how much a gold code the note's models never saw in training counts against one they saw, when the
    # ranker learns (1: the same). Several: dev picks one, see unseen_recall_target.
    unseen_gains: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    # with several unseen_gains: the smallest gain whose dev recall@10 on unseen gold codes reaches this
    # (a product requirement: coders must see codes the classifier never saw); none reaching it, or
    # no target: the gain with the best dev MAP
    unseen_recall_target: float | None = Field(None, gt=0, le=1)
    calibration: Calibration = "auto"
    # where base models, out-of-fold scores and retrieval evidence are kept while training; None: OUTPUT.work,
    # removed once the bundle is saved (a folder named here is kept: runs sharing it reuse its finished steps)
    work_dir: PathText | None = None
    # after the system is saved: retrain the ranker without each signal in turn (its report rows)
    leave_one_out: bool = True

    @field_validator("unseen_gains")
    @classmethod
    def _gains(cls, value: list[float]) -> list[float]:
        if any(g <= 0 for g in value):
            raise ValueError("unseen gains must be > 0")
        return sorted(set(value))

    @field_validator("features")
    @classmethod
    def _unique_features(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("candidates")
    @classmethod
    def _positive_sorted(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError("candidate counts must be >= 1")
        return sorted(set(value))

    @model_validator(mode="after")
    def _checks(self) -> RerankConfig:
        names = [b.name for b in self.bases]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"base names must be unique, repeated: {', '.join(repeated)}")
        reserved = sorted(set(names) & {"retrieval", "children", "hierarchy", *FEATURE_GROUPS})
        if reserved:
            raise ValueError(f"base name {reserved[0]!r} names a signal or feature group; give the base another name")
        if self.unseen_recall_target is not None and len(self.unseen_gains) < 2:
            raise ValueError("unseen_recall_target chooses among several unseen_gains: give at least two")
        if self.task.type != "multilabel":
            raise ValueError("a reranker ranks codes of multi-label notes: task.type must be 'multilabel'")
        if self.children is not None and self.labels.system not in ("icd10cm", "icd10pcs"):
            raise ValueError(
                "children proposes codes from an ICD-10 catalog's hierarchy: labels.system must be 'icd10cm' or "
                f"'icd10pcs' (got {self.labels.system!r}); remove 'children' for other label systems"
            )
        if self.retrieval is not None and self.labels.system != self.retrieval.index.system:
            raise ValueError(
                f"retrieval searches the {self.retrieval.index.system} catalog, "
                f"so labels.system must be {self.retrieval.index.system!r} (got {self.labels.system!r})"
            )
        return self
