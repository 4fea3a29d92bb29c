"""Golden twin of P x V on the array and of the output requantization.

``acc[i] = sum_j p[i, j] * v_q[j]`` has ``prob_frac + v_frac`` fraction bits;
``out = saturate(round_half_up(acc / 2**out_shift), out_bits)`` with
``out_shift = prob_frac + v_frac - out_frac`` (a left shift when negative).
"""

import numpy as np

from .intmath import saturate, shift_round_half_up

__all__ = ["pv", "requantize"]


def pv(p: np.ndarray, v_q: np.ndarray) -> np.ndarray:
    return np.asarray(p, np.int64) @ np.asarray(v_q, np.int64)


def requantize(acc: np.ndarray, cfg) -> np.ndarray:
    return saturate(shift_round_half_up(acc, cfg.out_shift), cfg.out_bits)
