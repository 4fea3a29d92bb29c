"""Golden twins of ``hw/score_unit.py`` (importances), ``hw/head_detector.py`` and
``hw/block_pruner.py``.

Masking.  Entry ``(i, j)`` is *valid* when ``i < valid_len``, ``j < valid_len`` and, with
causal masking, ``j <= i``.  A block is valid when it holds a valid entry; only valid
entries count in its importance, and invalid blocks are never kept.

Importance ``I(r, c)`` of a block under the criterion: ``abs_sum`` = sum of |A|, ``sum`` =
signed sum of A, ``max`` = signed max of A, all over the block's valid entries.
Head importance ``H`` = sum of |A| over all valid entries, whatever the criterion.

Block pruning per block-row ``r`` (only valid blocks are candidates):

* diagonal blocks ``{i // b_c : i in rows of r, i < valid_len}`` are always kept;
* ``topk``: the row's budget is a fraction of its ``n_valid`` valid blocks,
  ``k_row = ceil(k_frac_q * n_valid / 2**8)`` (:func:`row_budget`, ``k_frac_q = k_frac * 2**8``;
  a causal row counts its blocks up to the diagonal, as they are its valid ones); kept are the
  diagonal blocks plus the ``k_row - n_diag`` other valid blocks of largest ``I``, ties to the
  lower column index; so exactly ``max(n_diag, min(k_row, n_valid))`` kept;
* ``threshold``: block ``c`` is kept when
  ``I * n * 2**P >= rho_q * max * n + (2**P - rho_q) * sum`` over the ``n`` valid blocks
  of the row (exact integers), or when it is diagonal;
* ``off``: every valid block is kept.
"""

import numpy as np

from hw.config import K_FRAC_BITS

__all__ = ["entry_mask", "block_grid", "block_importance", "head_importance", "head_keep",
           "diagonal_blocks", "row_budget", "topk_keep", "threshold_keep", "block_keep", "expand_blocks"]


def entry_mask(n: int, valid_len: int, causal: bool) -> np.ndarray:
    """Bool (n, n): which score entries take part in attention."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    m = (i < valid_len) & (j < valid_len)
    if causal:
        m &= j <= i
    return m


def block_grid(n: int, cfg) -> tuple[int, int]:
    """Block rows and columns covering an n x n score matrix (padded)."""
    return -(-n // cfg.block_rows), -(-n // cfg.block_cols)


def _blocks(x: np.ndarray, cfg, fill) -> np.ndarray:
    """(n, n) -> (nbr, nbc, b_r * b_c), padding with ``fill``."""
    n = x.shape[0]
    nbr, nbc = block_grid(n, cfg)
    br, bc = cfg.block_rows, cfg.block_cols
    p = np.full((nbr * br, nbc * bc), fill, dtype=x.dtype)
    p[:n, :n] = x
    return p.reshape(nbr, br, nbc, bc).transpose(0, 2, 1, 3).reshape(nbr, nbc, br * bc)


def expand_blocks(blocks: np.ndarray, n: int, cfg) -> np.ndarray:
    """(nbr, nbc) -> (n, n): each block's value repeated over its entries, padding cut off."""
    e = np.repeat(np.repeat(blocks, cfg.block_rows, axis=0), cfg.block_cols, axis=1)
    return e[:n, :n]


def block_importance(a: np.ndarray, mask: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Importance ``I`` (int64, (nbr, nbc)) and block validity (bool) under ``cfg.criterion``.

    Invalid blocks get importance 0."""
    a = np.asarray(a, np.int64)
    mb = _blocks(mask, cfg, False)
    valid = mb.any(axis=2)
    ab = _blocks(a, cfg, 0)
    if cfg.criterion == "abs_sum":
        imp = np.where(mb, np.abs(ab), 0).sum(axis=2)
    elif cfg.criterion == "sum":
        imp = np.where(mb, ab, 0).sum(axis=2)
    elif cfg.criterion == "max":
        lo = np.iinfo(np.int64).min
        imp = np.where(mb, ab, lo).max(axis=2)
        imp = np.where(valid, imp, 0)
    else:  # pragma: no cover - HDPConfig validates
        raise ValueError(f"criterion {cfg.criterion!r}")
    return imp.astype(np.int64), valid


def head_importance(a: np.ndarray, mask: np.ndarray) -> int:
    """``H = sum |A|`` over the valid entries (a Python int)."""
    return int(np.where(mask, np.abs(np.asarray(a, np.int64)), 0).sum())


def head_keep(h: int, cfg) -> bool:
    """The head is kept unless head pruning is on and ``H < tau_head``."""
    return (not cfg.head_prune) or h >= cfg.tau_head


def diagonal_blocks(n: int, valid_len: int, cfg) -> np.ndarray:
    """Bool (nbr, nbc): the blocks holding some valid query's own key."""
    nbr, nbc = block_grid(n, cfg)
    d = np.zeros((nbr, nbc), dtype=bool)
    i = np.arange(min(n, valid_len))
    d[i // cfg.block_rows, i // cfg.block_cols] = True
    return d


def row_budget(k_frac_q: int, n_valid: int) -> int:
    """Top-k budget of a block-row with ``n_valid`` valid blocks, the diagonal included:
    ``ceil(k_frac_q * n_valid / 2**K_FRAC_BITS)`` (``k_frac_q = k_frac * 2**K_FRAC_BITS``;
    0 gives 0, which keeps only the diagonal; codes above ``2**K_FRAC_BITS`` keep every valid
    block)."""
    return -(-int(k_frac_q) * int(n_valid) // (1 << K_FRAC_BITS))


def topk_keep(imp: np.ndarray, valid: np.ndarray, diag: np.ndarray, k_frac_q: int) -> np.ndarray:
    """Top-k per block-row with the budget :func:`row_budget` (see the module docstring); ties
    keep the lower column."""
    keep = diag & valid
    for r in range(imp.shape[0]):
        budget = row_budget(k_frac_q, int(valid[r].sum())) - int(keep[r].sum())
        if budget <= 0:
            continue
        cand = [c for c in range(imp.shape[1]) if valid[r, c] and not keep[r, c]]
        # stable sort on -I keeps the lower column first among equals
        cand.sort(key=lambda c: -int(imp[r, c]))
        for c in cand[:budget]:
            keep[r, c] = True
    return keep


def threshold_keep(imp: np.ndarray, valid: np.ndarray, diag: np.ndarray, rho_q: int,
                   rho_frac: int) -> np.ndarray:
    """Threshold rule per block-row, division free (see the module docstring)."""
    one = 1 << rho_frac
    keep = diag & valid
    for r in range(imp.shape[0]):
        cols = np.nonzero(valid[r])[0]
        if cols.size == 0:
            continue
        vals = [int(imp[r, c]) for c in cols]
        n, s, mx = len(vals), sum(vals), max(vals)
        rhs = rho_q * mx * n + (one - rho_q) * s
        for c, v in zip(cols, vals):
            if v * n * one >= rhs:
                keep[r, c] = True
    return keep


def block_keep(imp, valid, diag, cfg) -> np.ndarray:
    """The block keep mask under ``cfg.prune_mode`` (``off``, ``topk``, ``threshold``; the
    ``mass`` mode ranks blocks by estimated probability, not importance:
    :func:`golden.mass_pruner.mass_keep`)."""
    if cfg.prune_mode == "mass":
        raise ValueError("prune_mode 'mass' keeps blocks by estimated mass, not importance: "
                         "use golden.mass_pruner.mass_keep")
    if cfg.prune_mode == "off":
        return valid.copy()
    if cfg.prune_mode == "topk":
        return topk_keep(imp, valid, diag, cfg.k_frac_q)
    return threshold_keep(imp, valid, diag, cfg.rho_q, cfg.rho_frac)
