"""The final score of a kept entry (twin of the score stage's operands, ``hw/stages/score.py``).

``S = 2**(2F) * A + 2**F * X`` (``drop_ff``) or ``S = 2**(2F) * A + 2**F * X + C`` (``exact``);
``S`` has ``2F`` fraction bits.  ``exact`` equals ``q_q . k_q`` bit for bit.
"""

import numpy as np

__all__ = ["approx_scores"]


def approx_scores(a, x, c, cfg) -> np.ndarray:
    f = cfg.qk_frac
    s = (np.asarray(a, np.int64) << (2 * f)) + (np.asarray(x, np.int64) << f)
    if cfg.approx == "exact":
        s = s + np.asarray(c, np.int64)
    return s
