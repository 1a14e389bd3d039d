"""The one orchestration of every torch coder, word-level and transformer alike.

:class:`TorchCoder` owns what all of them share: fitting one network per seed of
the ensemble through the training loop (early stopping on dev, checkpoints that
resume), scoring (the mean probability of the members, notes of similar length
batched together), attention evidence for :meth:`~TorchCoder.explain`, and the
weights in the bundle (``model.safetensors``, each member's tensors under
``member{m}.``). A model supplies only what differs:

- :meth:`~TorchCoder.prepare`: state learned before the network (a vocabulary,
  word vectors, a tokenizer, auxiliary targets) and the encoded training notes;
- :meth:`~TorchCoder.encode` and :meth:`~TorchCoder.batch`: notes -> tensors;
- :meth:`~TorchCoder.build_network`: a fresh seeded ``nn.Module`` returning a
  :class:`~medcoder.models.networks.heads.CoderOutput`;
- optionally :meth:`~TorchCoder.loss`, :meth:`~TorchCoder.training_batch`,
  :meth:`~TorchCoder.param_groups`, :meth:`~TorchCoder.finish_network`, and the
  files of its own state (:meth:`~TorchCoder.save_state` / :meth:`~TorchCoder.load_state`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medcoder.config import TrainConfig
from medcoder.data.encoding import LengthBucketPlan
from medcoder.engine.loop import LoopResult, train_loop
from medcoder.engine.precision import autocast_factory
from medcoder.errors import BundleError, ConfigError, MedcoderError
from medcoder.evaluation.metrics import mean_average_precision, micro_prf
from medcoder.evaluation.thresholds import tune_global_threshold
from medcoder.models.base import CodingModel, DevSet, Progress, Spans, TaskType
from medcoder.models.networks.heads import CoderOutput, top_evidence

logger = logging.getLogger(__name__)

_MEMBER_KEY = re.compile(r"^member(\d+)\.(.+)$")


class TorchCoder(CodingModel):
    """A torch coder: ``members_`` are the ensemble's networks (one unless ``config.ensemble`` > 1).

    The config must have ``train`` (:class:`~medcoder.config.TrainConfig`) and ``ensemble``.
    """

    weight_files: ClassVar[tuple[str, ...]] = ("model.safetensors",)
    requires: ClassVar[tuple[str, ...]] = ("numpy", "safetensors", "torch")
    predict_batch_size: ClassVar[int] = 32

    # ------------------------------------------------- what a model supplies
    def prepare(self, texts: Sequence[str], y: np.ndarray, *, spans: Sequence[Sequence[tuple[int, int]]] | None) -> Any:
        """Learn the state that comes before the network (vocabulary, tokenizer...); return the encoded ``texts``."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> Any:
        """Notes -> an encoded corpus with ``lengths`` (tokens per note) and ``len()``."""
        raise NotImplementedError

    def batch(self, corpus: Any, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The network's input for ``corpus[indices]``."""
        raise NotImplementedError

    def build_network(self, seed: int, *, y: np.ndarray | None) -> torch.nn.Module:
        """A new network seeded with ``seed``; ``y`` (train targets) for training, None for a skeleton to load into."""
        raise NotImplementedError

    def training_batch(
        self, corpus: Any, indices: Sequence[int], y: np.ndarray, *, seed: int, epoch: int, step: int
    ) -> dict[str, torch.Tensor]:
        """A training batch: :meth:`batch` + ``labels`` float ``[batch, n_labels]`` (deterministic in its arguments)."""
        del seed, epoch, step
        return {**self.batch(corpus, indices), "labels": torch.from_numpy(y[list(indices)].astype(np.float32))}

    def forward(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> CoderOutput:
        return network(batch)

    def loss(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss of a training batch (``network`` may be wrapped by DDP)."""
        return coder_loss(self.forward(network, batch).logits, batch["labels"], single_label=self.single_label)

    def param_groups(self, network: torch.nn.Module) -> list[dict[str, Any]] | None:
        """Optimizer parameter groups (None: the loop's default groups)."""
        return None

    def finish_network(self, network: torch.nn.Module) -> None:
        """Called on each trained network before it is kept (drop training-only parts)."""

    def token_attention(self, batch: dict[str, torch.Tensor], attention: torch.Tensor, corpus: Any) -> torch.Tensor:
        """One note's attention ``[labels, positions]`` as ``[labels, tokens]`` (positions are tokens by default)."""
        del batch, corpus
        return attention

    def token_offsets(self, text: str, corpus: Any) -> list[tuple[int, int]]:
        """Character span of each token of ``text`` (encoded alone as ``corpus``)."""
        raise NotImplementedError

    def save_state(self, directory: Path) -> None:
        """Write the model's own files (beside ``model.safetensors``)."""

    def load_state(self, directory: Path) -> None:
        """Read back what :meth:`save_state` wrote."""

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors saved beside the members' weights (not inside a network)."""
        return {}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        """Read back :meth:`extra_tensors` (``path`` names the file in errors)."""

    # ------------------------------------------------------------- training
    def fit(
        self,
        texts: Sequence[str],
        y: np.ndarray,
        *,
        pairs: Sequence[str] | None = None,
        dev: DevSet | None = None,
        work_dir: Path | None = None,
        progress: Progress | None = None,
        spans: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> TorchCoder:
        if pairs is not None or self.task == "pair":
            raise MedcoderError(f"{self.name} codes single texts; sentence pairs need tfidf_lr.v1")
        train_config = stopping_config(self.config.train, single_label=self.single_label, task=self.task)
        self.stopping_metric_ = train_config.early_stopping_metric
        y = np.asarray(y, dtype=bool)
        corpus = self.prepare(texts, y, spans=spans)
        evaluate = None
        if dev is not None:
            dev_corpus = self.encode(dev.texts)
            dev_y = np.asarray(dev.y, dtype=bool)

            def evaluate(network: torch.nn.Module) -> dict[str, float]:
                return dev_metrics(self._scores([network], dev_corpus), dev_y, single_label=self.single_label)

        self.members_: list[torch.nn.Module] = []
        self.history_: list[dict[str, Any]] = []
        for member in range(self.config.ensemble):
            seed = self.seed + member
            network = self.build_network(seed, y=y)
            plan = LengthBucketPlan(
                corpus.lengths,
                batch_size=self.config.train.batch_size,
                seed=seed,
                bucketing=self.config.train.length_bucketing,
            )

            def make_batch(indices: list[int], epoch: int, step: int, seed: int = seed) -> dict[str, torch.Tensor]:
                return self.training_batch(corpus, indices, y, seed=seed, epoch=epoch, step=step)

            result = train_loop(
                network,
                plan,
                make_batch,
                self.loss,
                train_config,
                evaluate=evaluate,
                checkpoint_dir=None if work_dir is None else work_dir / f"member{member}",
                seed=seed,
                progress=progress,
                param_groups=self.param_groups(network),
            )
            self.finish_network(network)
            network.eval()
            self.members_.append(network)
            self.history_.append(member_record(member, seed, result))
        return self

    def training_report(self) -> dict[str, Any]:
        return {"metric": getattr(self, "stopping_metric_", None), "members": getattr(self, "history_", [])}

    # ----------------------------------------------------------- prediction
    def _scores(self, networks: Sequence[torch.nn.Module], corpus: Any) -> np.ndarray:
        """Mean probability over ``networks``: float32 ``[n_docs, n_labels]``, batches of similar length."""
        order = np.argsort(corpus.lengths, kind="stable")  # similar lengths together: little padding
        out = np.zeros((len(corpus), self.n_labels), dtype=np.float32)
        device = next(networks[0].parameters()).device
        with torch.inference_mode(), autocast_factory(self.config.train.precision, device)():
            for start in range(0, len(order), self.predict_batch_size):
                indices = order[start : start + self.predict_batch_size].tolist()
                batch = {k: v.to(device) for k, v in self.batch(corpus, indices).items()}
                total = torch.zeros((len(indices), self.n_labels))
                for network in networks:
                    was_training = network.training
                    network.eval()
                    logits = self.forward(network, batch).logits.float().cpu()
                    total += torch.softmax(logits, dim=1) if self.single_label else torch.sigmoid(logits)
                    network.train(was_training)
                out[indices] = (total / len(networks)).numpy()
        return out

    def predict_scores(self, texts: Sequence[str], *, pairs: Sequence[str] | None = None) -> np.ndarray:
        if pairs is not None:
            raise MedcoderError(f"{self.name} codes single texts, not pairs")
        return self._scores(self.members_, self.encode(texts))

    def explain(
        self, texts: Sequence[str], label_indices: Sequence[Sequence[int]], *, top: int = 3, window: int = 5
    ) -> list[dict[int, Spans]]:
        """Per note, the strongest spans (``window`` tokens) of the members' mean label-wise attention."""
        if not self.can_explain():
            raise MedcoderError(f"model {self.name} has no label-wise attention to explain its codes with")
        results = []
        with torch.inference_mode():
            for text, labels in zip(texts, label_indices, strict=True):
                corpus = self.encode([text])
                batch = self.batch(corpus, [0])
                attention = None
                for network in self.members_:
                    output = self.forward(network, batch)
                    if output.attention is None:
                        raise MedcoderError(f"model {self.name} has no attention to explain its codes with")
                    attention = output.attention[0] if attention is None else attention + output.attention[0]
                per_token = self.token_attention(batch, attention.float() / len(self.members_), corpus)
                offsets = self.token_offsets(text, corpus)
                results.append(top_evidence(per_token, offsets, list(labels), window=window, top=top))
        return results

    # ---------------------------------------------------------- persistence
    def save(self, directory: Path) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for m, network in enumerate(self.members_):
            for name, tensor in network.state_dict().items():
                tensors[f"member{m}.{name}"] = tensor.detach().contiguous()
        tensors.update(self.extra_tensors())
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": f"medcoder.{self.name}"})
        self.save_state(directory)

    @classmethod
    def load(cls, directory: Path, config: Any, *, n_labels: int, task: TaskType) -> TorchCoder:
        model = cls(config, n_labels=n_labels, task=task)
        path = directory / "model.safetensors"
        model.load_state(directory)
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise BundleError(f"{path}: unreadable weights ({exc})") from None
        states: dict[int, dict[str, torch.Tensor]] = {}
        rest: dict[str, torch.Tensor] = {}
        for key, tensor in tensors.items():
            match = _MEMBER_KEY.match(key)
            if match:
                states.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
            else:
                rest[key] = tensor
        model.load_extra_tensors(rest, path)
        if not states:  # a one-network bundle of medcoder 0.1 stored its weights without a member prefix
            states = {0: rest}
        if sorted(states) != list(range(len(states))):
            raise BundleError(f"{path}: member weights {sorted(states)} are not numbered 0..{len(states) - 1}")
        model.members_ = []
        for m in range(len(states)):
            network = model.build_network(0, y=None)
            try:
                network.load_state_dict(states[m], strict=True)
            except RuntimeError as exc:
                first = str(exc).splitlines()[0]
                raise BundleError(f"{path}: weights do not fit the config ({first})") from None
            network.eval()
            model.members_.append(network)
        return model


# --------------------------------------------------------------- helpers
def stopping_config(train: TrainConfig, *, single_label: bool, task: str) -> TrainConfig:
    """``train`` with its early-stopping metric resolved (None -> map / accuracy) and checked against the task."""
    metric = train.early_stopping_metric or ("accuracy" if single_label else "map")
    allowed = ("accuracy", "loss") if single_label else ("map", "micro_f1", "loss")
    if metric not in allowed:
        raise ConfigError(
            f"train.early_stopping_metric {metric!r} does not apply to a {task} task (use one of {', '.join(allowed)})"
        )
    return train.model_copy(update={"early_stopping_metric": metric})


def coder_loss(logits: torch.Tensor, labels: torch.Tensor, *, single_label: bool) -> torch.Tensor:
    """Cross-entropy on the argmax label (single-label) or mean binary cross-entropy; logits ``[batch, labels]``."""
    logits = logits.float()
    if single_label:
        return torch.nn.functional.cross_entropy(logits, labels.argmax(dim=1))
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())


def dev_metrics(scores: np.ndarray, y: np.ndarray, *, single_label: bool) -> dict[str, float]:
    """Early-stopping metrics of probabilities ``scores`` against bool ``y`` ``[n_docs, n_labels]``."""
    if single_label:
        return {"accuracy": float((scores.argmax(axis=1) == y.argmax(axis=1)).mean())}
    eps = 1e-7
    clipped = np.clip(scores, eps, 1 - eps)
    loss = float(-(y * np.log(clipped) + (~y) * np.log(1 - clipped)).mean())
    threshold = tune_global_threshold(y, scores)
    return {"map": mean_average_precision(y, scores), "micro_f1": micro_prf(y, scores >= threshold)[2], "loss": loss}


def member_record(member: int, seed: int, result: LoopResult) -> dict[str, Any]:
    """What a model's training report says of one trained network."""
    return {
        "member": member,
        "seed": seed,
        "best_epoch": result.best_epoch,
        "best_dev": result.best_score,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "resumed_from_step": result.resumed_from,
        "history": result.history,
    }


def set_prior_bias(bias: torch.Tensor, y: np.ndarray) -> None:
    """Start every label's output bias at the logit of its (smoothed) train frequency.

    With thousands of rare labels a zero bias spends the first epochs learning
    that almost every label is off; starting from the priors lets the few
    steps a small dataset gives go to label-specific evidence.
    """
    prior = (y.sum(axis=0) + 0.5) / (len(y) + 1.0)
    with torch.no_grad():
        bias.copy_(torch.as_tensor(np.log(prior / (1 - prior)), dtype=bias.dtype))
