"""``kind: synthetic``: notes generated from the ICD-10-CM catalog (the demo dataset and test fixture).

The generator (:mod:`medcoder.data.synthetic`) declares its own knobs as a
source config, :class:`~medcoder.data.synthetic.SyntheticSource`; this module
makes it the source of that kind.
"""

from __future__ import annotations

from medcoder.data.synthetic import SyntheticSource
from medcoder.registry import SOURCES

SOURCES.register("synthetic")(SyntheticSource)

__all__ = ["SyntheticSource"]
