"""The probability-mass block rule (pruner mode ``mass``): keep the fewest blocks whose
estimated softmax mass reaches ``1 - eps``.  RTL twin: :class:`hw.mass_pruner.MassPruner`.

A fixed per-row budget (top-k) ignores how concentrated a row's softmax is; this rule asks
instead how much estimated probability each block carries.  Integer, sort free, no division:

1. Per key ``j``: ``K_j = sum_d k_I[j, d]``.  Estimated score
   ``S^_ij = (2 * A_ij + K_j) << (2F - 1)``, in the units of the final score ``2^2F A + ...``
   (the ``K_j`` term adds the expected cross term ``X`` for a query fraction of one half;
   a term constant along a row would cancel in the softmax, a per-key one does not).
2. ``e`` = the final softmax's base-2 exponents (:func:`golden.softmax.softmax_exponents`)
   of ``S^`` over each row's valid keys (the row's largest gives exactly ``2^W``).
3. Block mass ``M(r, c)``: per row, the block's exponents summed and scaled by one
   reciprocal of the row's exponent sum read from a 64-entry table (:func:`row_recip`,
   ``P = prob_frac`` fraction bits, rounded half up), summed over the block's rows; ``T_r = sum_c M(r, c)``
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
from .softmax import softmax_exponents

__all__ = ["EPS_FRAC", "N_BUCKETS", "RECIP_BITS", "eps_q_of", "estimated_scores", "row_recip",
           "block_mass", "mass_key", "mass_buckets", "mass_keep", "mass_keep_sorted"]

#: Fraction bits of the ``eps`` register.
EPS_FRAC = 8
#: Buckets per row: half octaves below the row's largest block mass; the last holds the rest.
N_BUCKETS = 32
#: Leading bits of a row's exponent sum that index the reciprocal table (``RB``).
RECIP_BITS = 6


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


def row_recip(total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: ``(R, sh)`` with ``R = floor(2^(2 RB + 1) / u)``, ``u`` = the ``RB + 1``
    leading bits of ``total`` (``total >> (msb - RB)``, or shifted left when shorter) and
    ``sh = msb(total) + RB + 1``, so that ``x * R >> (sh - P)`` approximates
    ``x * 2^P / total`` from above (relative error below ``2^-RB``).  ``R = 0`` for an empty
    row (``total = 0``)."""
    total = np.asarray(total, np.int64)
    msb = np.frexp(np.maximum(total, 1).astype(np.float64))[1].astype(np.int64) - 1
    u = np.where(msb >= RECIP_BITS, total >> np.maximum(msb - RECIP_BITS, 0),
                 total << np.maximum(RECIP_BITS - msb, 0))
    r = np.where(total > 0, (1 << (2 * RECIP_BITS + 1)) // np.maximum(u, 1), 0)
    return r, msb + RECIP_BITS + 1


def block_mass(s_hat: np.ndarray, mask: np.ndarray, cfg) -> np.ndarray:
    """``M`` (int64, (block rows, block columns)): each block's estimated probability mass
    with ``P = prob_frac`` fraction bits.

    ``e`` = the final softmax's exponents (:func:`golden.softmax.softmax_exponents`) of
    ``s_hat`` over each row's valid entries (``mask``); per row ``i`` and block column
    ``c``, ``E[i, c]`` = the sum of ``e`` over the block's keys; with the row's
    :func:`row_recip` ``(R_i, sh_i)``, the row's share ``E[i, c] * R_i / 2^(sh_i - P)``
    rounded half up (a left shift when ``sh_i < P``); ``M`` sums the shares of the block's
    rows.  One reciprocal per row from a ``2^RB``-entry table, no division."""
    e = softmax_exponents(s_hat, mask, cfg)
    n_c = -(-e.shape[1] // cfg.block_cols)
    pad = n_c * cfg.block_cols - e.shape[1]
    ec = np.pad(e, ((0, 0), (0, pad))).reshape(e.shape[0], n_c, cfg.block_cols).sum(axis=2)
    r, sh = row_recip(e.sum(axis=1))
    d = sh - cfg.prob_frac
    prod = ec * r[:, None]
    half = np.where(d > 0, 1 << np.maximum(d - 1, 0), 0)[:, None]
    share = np.where(d[:, None] >= 0, (prod + half) >> np.maximum(d, 0)[:, None],
                     prod << np.maximum(-d, 0)[:, None])
    n_r = -(-e.shape[0] // cfg.block_rows)
    pad = n_r * cfg.block_rows - e.shape[0]
    return np.pad(share, ((0, pad), (0, 0))).reshape(n_r, cfg.block_rows, n_c).sum(axis=1)


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
