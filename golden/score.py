"""Golden twin of ``hw/score_unit.py`` (integer pass) and of the cross terms the array computes.

``q.k = 2**(2F) * A + 2**F * X + C`` with ``A = sum q_I k_I``, ``X = sum (q_I k_F + q_F k_I)``,
``C = sum q_F k_F`` (``x_I``, ``x_F`` from :func:`golden.intmath.split_int_frac`).
"""

import numpy as np

__all__ = ["integer_scores", "cross_terms", "ff_terms"]


def integer_scores(q_i: np.ndarray, k_i: np.ndarray) -> np.ndarray:
    """``A[i, j] = sum_d q_I[i, d] * k_I[j, d]`` (int64, shape (Nq, Nk))."""
    return np.asarray(q_i, np.int64) @ np.asarray(k_i, np.int64).T


def cross_terms(q_i, q_f, k_i, k_f) -> np.ndarray:
    """``X[i, j] = sum_d (q_I k_F + q_F k_I)``."""
    q_i, q_f, k_i, k_f = (np.asarray(a, np.int64) for a in (q_i, q_f, k_i, k_f))
    return q_i @ k_f.T + q_f @ k_i.T


def ff_terms(q_f, k_f) -> np.ndarray:
    """``C[i, j] = sum_d q_F k_F`` (fraction x fraction, unsigned)."""
    return np.asarray(q_f, np.int64) @ np.asarray(k_f, np.int64).T
