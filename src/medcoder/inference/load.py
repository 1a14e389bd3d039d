"""``medcoder.load(path)``: open any saved system; its ``config.json`` says which kind it is."""

from __future__ import annotations

from pathlib import Path

from medcoder.bundles import read_header
from medcoder.errors import BundleError
from medcoder.inference.base import Coder
from medcoder.registry import SYSTEMS, UnknownName


def load(path: str | Path) -> Coder:
    """The :class:`Coder` of the bundle folder ``path`` (a model, an ensemble, a retrieval fusion...).

    The folder's ``config.json`` names its kind; the system registered under
    that kind opens it. Paths inside a bundle are relative to it, so a bundle
    that was moved or copied to another machine loads the same.
    """
    folder = Path(path)
    header = read_header(folder)
    try:
        system = SYSTEMS.get(header["kind"])
    except UnknownName as exc:
        raise BundleError(f"{folder / 'config.json'}: {exc}") from None
    return system.load(folder, header)
