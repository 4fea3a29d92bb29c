"""NumPy golden model of hdpgen, bit-exact with the RTL (NumPy only, never Amaranth).

Mirrors ``hw/`` file for file: :mod:`golden.score` (integer score unit and cross terms),
:mod:`golden.pruner` (block and head importance, head pruning, block pruning),
:mod:`golden.approx`, :mod:`golden.softmax`, :mod:`golden.pv`, and :mod:`golden.model`
which joins them like ``hw/top.py``.  :mod:`golden.intmath` defines every integer rule
(split, shifts, rounding, saturation) and :mod:`golden.tables` every constant table.
``docs/spec.md`` specifies every rule in prose, citing the function that implements it.
"""

from .model import HeadResult, attention, attention_head
from .reference import float_attention

__all__ = ["HeadResult", "attention", "attention_head", "float_attention"]
