"""medcoder: clinical text coding with transfer learning.

``medcoder.load(path)`` opens any saved system (a model, a seed ensemble, a
retrieval + classifier fusion) as a :class:`medcoder.inference.base.Coder`.
Importing medcoder is cheap: nothing heavy (torch, scikit-learn) is imported
until a model that needs it is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medcoder.inference.base import Coder

from medcoder.version import __version__


def load(path: str | Path) -> Coder:
    """Open the saved system at ``path``; see :func:`medcoder.inference.load.load`."""
    from medcoder.inference.load import load as load_system

    return load_system(path)


__all__ = ["__version__", "load"]
