"""Models. Importing this package registers every built-in model."""

from medcoder.models import linear, neural, plm  # noqa: F401  (registers the built-in models)
from medcoder.models.base import CodingModel, build_model, load_model

__all__ = ["CodingModel", "build_model", "load_model"]
