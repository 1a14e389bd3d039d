"""Model configs, one class per registered model type, and the shared training-loop config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from medcoder.config.base import Strict


class TfidfLrConfig(Strict):
    """TF-IDF features + one-vs-rest (or multinomial) logistic regression."""

    type: Literal["tfidf_lr.v1"] = "tfidf_lr.v1"
    ngram_range: tuple[int, int] = (1, 2)
    min_df: int = Field(2, ge=1)
    max_df: float = Field(1.0, gt=0.0, le=1.0)
    max_features: int | None = Field(None, ge=1)
    sublinear_tf: bool = True
    lowercase: bool = True
    C: float = Field(100.0, gt=0.0)
    class_weight: Literal["balanced"] | None = None
    max_iter: int = Field(1000, ge=1)
    n_jobs: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _ngram_order(self) -> TfidfLrConfig:
        low, high = self.ngram_range
        if not 1 <= low <= high:
            raise ValueError("ngram_range must be (low, high) with 1 <= low <= high")
        return self


class TrainConfig(Strict):
    """The one training loop shared by every torch model."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    max_grad_norm: float | None = Field(5.0, gt=0.0)
    # auto: bf16 where the hardware has it natively (CUDA, AVX512-BF16/AMX CPUs), else fp32; fp16: CUDA only
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # None: "map" for multi-label tasks, "accuracy" for single-label ones
    early_stopping_metric: Literal["map", "micro_f1", "loss", "accuracy"] | None = None
    early_stopping_patience: int = Field(5, ge=1)
    checkpoint_every_steps: int = Field(0, ge=0)  # 0: a checkpoint at the end of every epoch only
    length_bucketing: bool = True
    num_threads: int | None = Field(None, ge=1)  # torch intra-op threads; None: all cores


class WordEncodingConfig(Strict):
    """Word-level input of the CNN/RNN coders."""

    max_tokens: int = Field(2500, ge=1)  # truncate notes to the first N tokens
    min_count: int = Field(2, ge=1)  # vocabulary: words seen at least this often in train
    max_vocab: int | None = Field(None, ge=2)
    lowercase: bool = True
    word_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # share of tokens removed at train time


class Word2VecConfig(Strict):
    """In-domain word2vec (gensim) trained before the coder."""

    algorithm: Literal["cbow", "skipgram"] = "cbow"
    window: int = Field(5, ge=1)
    epochs: int = Field(5, ge=1)
    min_count: int = Field(2, ge=1)
    corpus: str | None = None  # unlabeled JSONL ("text" field) used in addition to the training notes


class EmbeddingConfig(Strict):
    """Word embeddings: random, trained word2vec, or a .vec/.txt/.bin file a user brings."""

    init: Literal["random", "word2vec", "file"] = "random"
    dim: int = Field(100, ge=1)
    path: str | None = None
    word2vec: Word2VecConfig = Field(default_factory=Word2VecConfig)
    freeze: bool = False

    @model_validator(mode="after")
    def _path_for_files(self) -> EmbeddingConfig:
        if (self.init == "file") != (self.path is not None):
            raise ValueError("path is required by, and only allowed with, init: file")
        return self


class TransferConfig(Strict):
    """Source task -> target task: reuse a trained TextCNN's embeddings (EM) and convolutions (CV)."""

    source: str  # a TextCNN model directory trained on the source task
    embeddings: Literal["frozen", "tuned"] = "frozen"
    convolutions: Literal["frozen", "tuned", "dual"] = "tuned"  # dual: a tuned copy beside a frozen copy
    adaptation_dim: int = Field(256, ge=1)  # the new layer between source features and the new output


class NeuralCoderConfig(Strict):
    """Fields shared by every word-level torch coder."""

    encoding: WordEncodingConfig = Field(default_factory=WordEncodingConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    ensemble: int = Field(1, ge=1)  # seeds seed..seed+ensemble-1; predictions are their mean
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    transfer: TransferConfig | None = None

    @model_validator(mode="after")
    def _transfer_only_for_textcnn(self) -> NeuralCoderConfig:
        if self.transfer is not None and self.type != "textcnn.v1":  # type: ignore[attr-defined]
            raise ValueError("transfer is implemented for textcnn.v1 targets only")
        return self


class TextCnnConfig(NeuralCoderConfig):
    """Kim (2014): parallel convolutions, max-over-time pooling, linear output."""

    type: Literal["textcnn.v1"] = "textcnn.v1"
    filter_sizes: tuple[int, ...] = (3, 4, 5)
    num_filters: int = Field(100, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)


class CamlConfig(NeuralCoderConfig):
    """Mullenbach et al. (2018): one convolution + per-label attention."""

    type: Literal["caml.v1"] = "caml.v1"
    kernel_size: int = Field(10, ge=1)
    num_filters: int = Field(50, ge=1)


class DrCamlConfig(CamlConfig):
    """CAML + the code-description regulariser (descriptions from the label space's catalog)."""

    type: Literal["drcaml.v1"] = "drcaml.v1"  # type: ignore[assignment]
    description_weight: float = Field(0.01, ge=0.0)
    description_max_tokens: int = Field(30, ge=1)


class MultiResCnnConfig(NeuralCoderConfig):
    """Li & Yu (2020): multi-filter residual convolutions + per-label attention."""

    type: Literal["multirescnn.v1"] = "multirescnn.v1"
    filter_sizes: tuple[int, ...] = (3, 5, 9, 15, 19, 25)
    num_filters: int = Field(50, ge=1)


class BiGruConfig(NeuralCoderConfig):
    """Bidirectional GRU with a pooled or label-wise attention output."""

    type: Literal["bigru.v1"] = "bigru.v1"
    hidden: int = Field(128, ge=1)
    layers: int = Field(1, ge=1)
    output: Literal["pooled", "label_attention"] = "label_attention"


def _transformer_train() -> TrainConfig:
    # Fine-tuning defaults from the literature: small LR, warmup, few epochs.
    return TrainConfig(epochs=10, batch_size=8, lr=5e-5, warmup_ratio=0.1, weight_decay=0.01, early_stopping_patience=3)


class AuxiliaryTasksConfig(Strict):
    """Multi-task training: auxiliary heads on the shared encoder, one weighted combined loss.

    Only the main (full-code) head is kept in the bundle; the auxiliary tasks
    shape the encoder during training.
    """

    # ICD hierarchy heads beside the full-code head (targets: the ancestors of each note's codes)
    levels: list[Literal["chapter", "block", "category"]] = Field(default_factory=list)
    level_weight: float = Field(0.5, ge=0.0)
    # token tagging of the coded evidence spans, on notes that carry span annotations
    span_tagging: bool = False
    span_weight: float = Field(0.5, ge=0.0)

    @model_validator(mode="after")
    def _something_to_do(self) -> AuxiliaryTasksConfig:
        if not self.levels and not self.span_tagging:
            raise ValueError("auxiliary needs levels and/or span_tagging: true")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError("auxiliary.levels must not repeat a level")
        return self


class TransformerCoderConfig(Strict):
    """A Hugging Face encoder, truncated or hierarchical, with a pooled or label-wise attention head."""

    type: Literal["transformer.v1"] = "transformer.v1"
    encoder: str = "minilm"  # hub id, local folder, or "minilm" (the packaged offline MiniLM-L6)
    architecture: Literal["trun", "hier"] = "trun"
    head: Literal["pooled", "label_attention"] = "label_attention"
    pooling: Literal["cls", "mean"] = "cls"  # pooled head (trun) / segment vectors (hier)
    max_tokens: int = Field(512, ge=3)  # trun: the whole row incl. [CLS]/[SEP]; hier: content tokens of a note
    segment_length: int = Field(128, ge=3)  # hier: tokens per segment incl. [CLS]/[SEP]
    segment_stride: int | None = Field(None, ge=1)  # hier: content tokens between segment starts; None: no overlap
    segment_layers: int = Field(1, ge=1)  # hier + pooled: layers of the transformer over segment vectors
    projection: int = Field(256, ge=1)  # label attention: size of tanh(W h)
    # descriptions: each label's attention query and output weights start from the encoder's
    # embedding of its code description (the label space's catalog), instead of random
    label_init: Literal["random", "descriptions"] = "random"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # before the head
    # None keeps the checkpoint's value; 0 is the default because at 512 tokens on CPU it costs > 2x
    attention_dropout: float | None = Field(0.0, ge=0.0, lt=1.0)
    layer_lr_decay: float = Field(1.0, gt=0.0, le=1.0)  # each lower encoder layer trains at this x the LR above
    head_lr: float | None = Field(1e-3, gt=0.0)  # heads start from scratch: a larger LR; None: train.lr
    gradient_checkpointing: bool = False
    auxiliary: AuxiliaryTasksConfig | None = None  # multi-task training (stage 2)
    train: TrainConfig = Field(default_factory=_transformer_train)

    @model_validator(mode="after")
    def _segments_fit(self) -> TransformerCoderConfig:
        if self.segment_stride is not None and self.segment_stride > self.segment_length - 2:
            raise ValueError(f"segment_stride must be at most segment_length - 2 = {self.segment_length - 2}")
        return self


ModelConfig = Annotated[
    TfidfLrConfig
    | TextCnnConfig
    | CamlConfig
    | DrCamlConfig
    | MultiResCnnConfig
    | BiGruConfig
    | TransformerCoderConfig,
    Field(discriminator="type"),
]


DEFAULT_MODEL_TYPE = "tfidf_lr.v1"
