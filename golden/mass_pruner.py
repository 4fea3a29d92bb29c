"""The probability-mass block rule: keep the fewest blocks whose estimated softmax mass
reaches ``1 - eps`` (a pruner mode beside top-k and threshold; the RTL twin is not built yet).

A fixed per-row budget (top-k) ignores how concentrated a row's softmax is; this rule asks
instead how much estimated probability each block carries.  Integer and sort free:

1. Per key ``j``: ``K_j = sum_d k_I[j, d]``.  Estimated score
   ``S^_ij = (2 * A_ij + K_j) << (2F - 1)``, in the units of the final score ``2^2F A + ...``
   (the ``K_j`` term adds the expected cross term ``X`` for a query fraction of one half;
   a term constant along a row would cancel in the softmax, a per-key one does not).
2. ``p^`` = the final base-2 softmax (:func:`golden.softmax.softmax_rows`) of ``S^`` over each
   row's valid keys.
3. Block mass ``M(r, c)`` = sum of ``p^`` over the block's entries; ``T_r = sum_c M(r, c)``
   over the row's valid blocks.
4. Half-octave buckets: ``key(M) = 2 * msb(M) + (the bit below the msb)`` for ``M > 0``;
   bucket ``b = min(max_c key - key, 31)``; ``M = 0`` goes to bucket 31.
   ``before_r[b]`` = the mass of the row's blocks in buckets with a smaller index.
5. Keep valid block ``c`` iff ``M(r, c) > 0`` and
   ``before_r[b(c)] * 2^8 < (2^8 - eps_q) * T_r`` with ``eps_q = round(eps * 2^8)``;
   diagonal blocks are always kept.

:func:`mass_keep_sorted` is the exact reference the buckets approximate: rank a row's blocks
by mass and keep a block iff the mass ranked strictly above it is ``< (1 - eps) T``.
"""

import numpy as np

from .intmath import split_int_frac
from .pruner import _blocks
from .softmax import softmax_rows

__all__ = ["EPS_FRAC", "N_BUCKETS", "eps_q_of", "estimated_scores", "block_mass", "mass_key",
           "mass_buckets", "mass_keep", "mass_keep_sorted"]

#: Fraction bits of the ``eps`` register.
EPS_FRAC = 8
#: Buckets per row: half octaves below the row's largest block mass; the last holds the rest.
N_BUCKETS = 32


def eps_q_of(eps: float) -> int:
    """``round(eps * 2^8)`` (half to even), checked to lie in ``[0, 2^8)``."""
    q = int(np.rint(float(eps) * (1 << EPS_FRAC)))
    if not 0 <= q < (1 << EPS_FRAC):
        raise ValueError(f"eps must be in [0, 1) with {EPS_FRAC} fraction bits, not {eps!r}")
    return q


def estimated_scores(a: np.ndarray, k_q: np.ndarray, cfg) -> np.ndarray:
    """``S^ = (2 A + K_j) << (2F - 1)`` (int64, (N, N)) from the integer scores ``A`` and the
    quantized keys (the score unit's integer parts)."""
    k_i, _ = split_int_frac(k_q, cfg.qk_frac)
    kj = k_i.sum(axis=-1)
    s = 2 * np.asarray(a, np.int64) + kj[None, :]
    sh = 2 * cfg.qk_frac - 1
    return s << sh if sh >= 0 else s >> 1  # F = 0: (2A + K_j) / 2 rounds K_j's half down


def block_mass(s_hat: np.ndarray, mask: np.ndarray, cfg) -> np.ndarray:
    """``M`` (int64, (block rows, block columns)): the estimated probabilities of the valid
    entries (``mask``) summed per block."""
    p = softmax_rows(s_hat, mask, cfg)
    return _blocks(np.where(mask, p, 0), cfg, 0).sum(axis=2)


def mass_key(m: np.ndarray) -> np.ndarray:
    """``2 * msb(M) + (the bit below the msb)`` for ``M > 0`` (``msb(1) = 0``); -1 for 0."""
    m = np.asarray(m, np.int64)
    # frexp is exact for integers below 2^53: m = f * 2^e with 0.5 <= f < 1, so msb = e - 1
    msb = np.frexp(np.maximum(m, 1).astype(np.float64))[1].astype(np.int64) - 1
    below = np.where(msb > 0, (m >> np.maximum(msb - 1, 0)) & 1, 0)
    return np.where(m > 0, 2 * msb + below, -1)


def mass_buckets(m_row: np.ndarray, valid_row: np.ndarray) -> np.ndarray:
    """Bucket of each block of one row (valid blocks only; others get ``N_BUCKETS - 1``)."""
    key = mass_key(m_row)
    live = valid_row & (m_row > 0)
    if not live.any():
        return np.full(m_row.shape, N_BUCKETS - 1, np.int64)
    top = key[live].max()
    return np.where(live, np.minimum(top - key, N_BUCKETS - 1), N_BUCKETS - 1)


def mass_keep(m: np.ndarray, valid: np.ndarray, diag: np.ndarray, eps_q: int) -> np.ndarray:
    """The bucketed rule (step 5) for every block-row."""
    one = 1 << EPS_FRAC
    keep = diag & valid
    for r in range(m.shape[0]):
        mr = np.where(valid[r], m[r], 0)
        total = int(mr.sum())
        b = mass_buckets(mr, valid[r])
        per = np.zeros(N_BUCKETS, np.int64)
        np.add.at(per, b, mr)  # invalid blocks add 0
        before = np.concatenate(([0], np.cumsum(per)[:-1]))
        for c in np.nonzero(valid[r])[0]:
            if mr[c] > 0 and int(before[b[c]]) * one < (one - eps_q) * total:
                keep[r, c] = True
    return keep


def mass_keep_sorted(m: np.ndarray, valid: np.ndarray, diag: np.ndarray, eps_q: int) -> np.ndarray:
    """The sorted reference: keep a block iff the mass ranked strictly above it (larger mass;
    equal masses rank by lower column) is ``< (1 - eps) T``; diagonal blocks always kept."""
    one = 1 << EPS_FRAC
    keep = diag & valid
    for r in range(m.shape[0]):
        cols = [c for c in range(m.shape[1]) if valid[r, c]]
        total = sum(int(m[r, c]) for c in cols)
        above = 0
        for c in sorted(cols, key=lambda c: -int(m[r, c])):
            if m[r, c] > 0 and above * one < (one - eps_q) * total:
                keep[r, c] = True
            above += int(m[r, c])
    return keep
