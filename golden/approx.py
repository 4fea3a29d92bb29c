"""The final score of a kept entry (twin of the score stage's operands, ``hw/stages/score.py``,
and of the softmax stage's per-key compensation, ``hw/stages/softmax.py``).

* ``drop_ff``: ``S = 2**(2F) * A + 2**F * X`` (the fraction x fraction term ``C`` dropped);
* ``exact``: ``S = 2**(2F) * A + 2**F * X + C``, which equals ``q_q . k_q`` bit for bit;
* ``comp``: ``drop_ff`` plus a per-key compensation ``c_j = ((2**F - 1) * sum_d k_F[j, d]) >> 1``,
  the expected ``C`` of key ``j`` for a query fraction uniform over ``[0, 2**F)``.  A term
  that is the same for every key of a row cancels in the softmax; one that depends on the key
  does not, which is why this recovers most of what ``drop_ff`` loses.

``S`` has ``2F`` fraction bits.
"""

import numpy as np

__all__ = ["approx_scores", "key_compensation"]


def key_compensation(k_f, cfg) -> np.ndarray:
    """``c_j = ((2**F - 1) * sum_d k_F[j, d]) >> 1`` (int64, one per key row of ``k_f``)."""
    f = cfg.qk_frac
    total = np.asarray(k_f, np.int64).sum(axis=-1)
    return (((1 << f) - 1) * total) >> 1


def approx_scores(a, x, c, cfg, comp=None) -> np.ndarray:
    """``S`` of every (query, key) pair under ``cfg.approx``; ``comp`` is
    :func:`key_compensation` of the keys (needed by ``comp`` only)."""
    f = cfg.qk_frac
    s = (np.asarray(a, np.int64) << (2 * f)) + (np.asarray(x, np.int64) << f)
    if cfg.approx == "exact":
        s = s + np.asarray(c, np.int64)
    elif cfg.approx == "comp":
        if comp is None:
            raise ValueError("approx = 'comp' needs the per-key compensation (comp=...)")
        s = s + np.asarray(comp, np.int64)[None, :]
    return s
