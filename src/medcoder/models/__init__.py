"""Models. Importing this package registers every built-in model."""

from medcoder.models import linear  # noqa: F401  (registers tfidf_lr.v1)
from medcoder.models.base import CodingModel, build_model, load_model

__all__ = ["CodingModel", "build_model", "load_model"]
