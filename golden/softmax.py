"""Golden twin of ``hw/softmax_unit.py``: a base-2 softmax specified to the bit.

For each row ``i``, over its kept entries ``j`` (pruned and masked entries count as minus
infinity; a row with none gives all-zero probabilities):

1. ``m = max_j S[i, j]``; ``delta_j = min(m - S[i, j], delta_max)`` (the clamp changes nothing,
   it bounds the multiplier).
2. ``t_j = (delta_j * scale) >> 16`` is ``delta * log2(e) / (sqrt(d) * 2**(2F))`` with
   ``E = exp_frac`` fraction bits (floor).
3. ``e_j = exp_lut[t_j mod 2**E] >> (t_j >> E)`` with ``exp_lut[f] = round(2**(W - f/2**E))``,
   ``W = exp_bits``: ``e_j`` approximates ``2**W * exp(-(m - S)/sqrt(d))``; the row's maximum
   gives exactly ``2**W``.  The table has ``2**E`` entries of ``W + 1`` bits.
4. ``sum = sum_j e_j`` (``>= 2**W``); one reciprocal per row,
   ``R = floor(2**(W + P + G) / sum)`` with ``P = prob_frac`` and ``G = recip_guard``
   guard bits (an exact integer division: a sequential divider in hardware).
5. ``p_j = (e_j * R + 2**(W + G - 1)) >> (W + G)``: unsigned, ``P`` fraction bits, round half
   up, ``0 <= p_j <= 2**P``.

Constants come from :func:`golden.tables.softmax_constants`.
"""

import numpy as np

from .tables import softmax_constants

__all__ = ["softmax_exponents", "softmax_rows"]


def softmax_exponents(s: np.ndarray, keep: np.ndarray, cfg) -> np.ndarray:
    """Steps 1-3: ``e`` (int64, same shape as ``s``), 0 where not kept."""
    k = softmax_constants(cfg)
    s = np.asarray(s, np.int64)
    keep = np.asarray(keep, bool)
    lo = np.iinfo(np.int64).min
    m = np.where(keep, s, lo).max(axis=-1, keepdims=True)
    delta = np.where(keep, m - np.where(keep, s, m), 0)
    delta = np.minimum(delta, k.delta_max)
    t = (delta * k.scale) >> k.scale_shift
    e_frac = cfg.exp_frac
    ti = np.minimum(t >> e_frac, cfg.exp_bits + 1)
    tf = t & ((1 << e_frac) - 1)
    lut = np.asarray(k.exp_lut, np.int64)
    return np.where(keep, lut[tf] >> ti, 0)


def softmax_rows(s: np.ndarray, keep: np.ndarray, cfg) -> np.ndarray:
    """Probabilities (int64, ``prob_frac`` fraction bits) of each row's kept entries."""
    e = softmax_exponents(s, keep, cfg)
    total = e.sum(axis=-1, keepdims=True)
    recip = np.where(total > 0, (1 << cfg.recip_shift) // np.maximum(total, 1), 0)
    sh = cfg.exp_bits + cfg.recip_guard
    return np.where(total > 0, (e * recip + (1 << (sh - 1))) >> sh, 0)
