"""``drcaml.v1``: CAML + the code-description regulariser (descriptions from the label space's catalog)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from medcoder.data.encoding import EncodedCorpus, tokenize
from medcoder.errors import BundleError
from medcoder.models.caml import CamlCoder, CamlConfig
from medcoder.models.networks.cnn import DRCAML
from medcoder.registry import MODELS


class DrCamlConfig(CamlConfig):
    """CAML + the code-description regulariser (descriptions from the label space's catalog)."""

    type: Literal["drcaml.v1"] = "drcaml.v1"  # type: ignore[assignment]
    description_weight: float = Field(0.01, ge=0.0)
    description_max_tokens: int = Field(30, ge=1)


@MODELS.register("drcaml.v1", config=DrCamlConfig)
class DrCamlCoder(CamlCoder):
    """DR-CAML: the token ids of each code's description travel with the weights (``description_ids``)."""

    config: DrCamlConfig

    def prepare(
        self, texts: Sequence[str], y: np.ndarray, *, spans: Sequence[Sequence[tuple[int, int]]] | None
    ) -> EncodedCorpus:
        corpus = super().prepare(texts, y, spans=spans)
        self.description_ids_ = self._description_ids()
        return corpus

    def _description_ids(self) -> torch.Tensor:
        """Token ids ``[n_labels, description_max_tokens]`` of each code's description (0 = padding)."""
        width = self.config.description_max_tokens
        ids = torch.zeros((self.n_labels, width), dtype=torch.long)
        descriptions = self.label_descriptions or [None] * self.n_labels
        for row, text in enumerate(descriptions):
            encoded = self.vocab_.encode(tokenize(text or "", lowercase=self.config.encoding.lowercase))[:width]
            ids[row, : len(encoded)] = torch.tensor(encoded, dtype=torch.long)
        return ids

    def network(self, pretrained: np.ndarray | None) -> torch.nn.Module:
        cfg = self.config
        return self.word_network(
            DRCAML,
            pretrained,
            description_ids=self.description_ids_,
            lambda_=cfg.description_weight,
            kernel_size=cfg.kernel_size,
            num_filters=cfg.num_filters,
        )

    def loss(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        drcaml = getattr(network, "module", network)  # under DDP the network is wrapped
        penalty = drcaml.regularizer(batch["labels"])
        if drcaml is not network and not penalty.requires_grad:
            # DDP's all-reduce waits for a gradient of every parameter on every rank. A batch with no
            # positive label gives a constant penalty, leaving the description encoder (used by the
            # regulariser only) without one, and the next step fails ("Expected to have finished reduction
            # in the prior iteration"). A zero-weighted term keeps it in the graph: its gradient here is 0,
            # averaged with the other ranks' real ones. One process keeps the old path (no gradient, so
            # the optimizer skips the encoder, as before).
            penalty = penalty + 0.0 * sum(p.sum() for p in drcaml.description_conv.parameters())
        return super().loss(network, batch) + penalty

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"description_ids": self.description_ids_}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        if "description_ids" not in tensors:
            raise BundleError(f"{path}: no description_ids for a DR-CAML model")
        self.description_ids_ = tensors.pop("description_ids")
