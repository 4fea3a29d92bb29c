"""The integer semantics every golden function uses (and every RTL unit implements).

All arrays are ``int64``; nothing here overflows for values inside the ranges that
``HDPConfig`` derives (the widest is the threshold rule, under 2**40 for all presets).
"""

import numpy as np

__all__ = ["quantize", "split_int_frac", "shift_right_floor", "shift_round_half_up",
           "saturate", "best_frac_bits"]


def quantize(x: np.ndarray, bits: int, frac: int) -> np.ndarray:
    """``clamp(round_half_even(x * 2**frac), -2**(bits-1), 2**(bits-1)-1)`` as int64.

    NaN or infinite input is a ``ValueError`` (the command line rejects it earlier)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot quantize NaN or infinite values")
    q = np.rint(x * float(1 << frac))  # rint rounds half to even
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(q, lo, hi).astype(np.int64)


def best_frac_bits(x: np.ndarray, bits: int) -> int:
    """The largest fraction width F in ``[0, bits-1]`` at which quantizing ``x`` clips nothing
    (0 when even F = 0 clips)."""
    x = np.asarray(x, dtype=np.float64)
    for frac in range(bits - 1, -1, -1):
        q = np.rint(x * float(1 << frac))
        if q.size == 0 or (q.min() >= -(1 << (bits - 1)) and q.max() <= (1 << (bits - 1)) - 1):
            return frac
    return 0


def split_int_frac(x_q: np.ndarray, frac: int) -> tuple[np.ndarray, np.ndarray]:
    """Two's complement floor split: ``x_I = x_q >> frac``, ``x_F = x_q - (x_I << frac)``.

    ``0 <= x_F < 2**frac`` and ``x_q == x_I * 2**frac + x_F``."""
    x_q = np.asarray(x_q, dtype=np.int64)
    x_i = x_q >> frac
    return x_i, x_q - (x_i << frac)


def shift_right_floor(x: np.ndarray, sh: int) -> np.ndarray:
    """Arithmetic shift right by ``sh >= 0`` (floor division by ``2**sh``)."""
    return np.asarray(x, dtype=np.int64) >> sh


def shift_round_half_up(x: np.ndarray, sh: int) -> np.ndarray:
    """Divide by ``2**sh`` rounding half up (``(x + 2**(sh-1)) >> sh``); ``sh <= 0`` shifts left."""
    x = np.asarray(x, dtype=np.int64)
    if sh <= 0:
        return x << (-sh)
    return (x + (1 << (sh - 1))) >> sh


def saturate(x: np.ndarray, bits: int) -> np.ndarray:
    """Clamp to the signed range of ``bits`` bits."""
    return np.clip(np.asarray(x, dtype=np.int64), -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
