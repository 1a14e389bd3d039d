"""``kind: synthetic_scale``: a synthetic corpus at MIMIC size (:mod:`medcoder.data.synthetic_scale`)."""

from __future__ import annotations

from medcoder.data.synthetic_scale import ScaleSource
from medcoder.registry import SOURCES

SOURCES.register("synthetic_scale")(ScaleSource)

__all__ = ["ScaleSource"]
