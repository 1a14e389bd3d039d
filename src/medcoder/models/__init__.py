"""Coding models: the contract (``base``), one module per registered model type, the model bundle.

Model modules register themselves (``@MODELS.register("name.v1", config=...)``)
and are imported on demand by the registry, so this package imports none of
them: coding with a TF-IDF model never imports torch.
"""

from medcoder.models.base import CodingModel, DevSet, build_model, load_model

__all__ = ["CodingModel", "DevSet", "build_model", "load_model"]
