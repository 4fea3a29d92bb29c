"""Cycle model of the systolic array (``hw/systolic.py``) fed tiles back to back.

:func:`tile_plan` lists, from a head's block keep mask, the tiles a head needs, and only those
(a pruned head gives none): the stimulus of the array's own tests and benches and the tiles of
``bench/cycles.py``'s array-alone comparison.  (The top issues its tiles from the score and P x V
stages, modelled by ``sim/top_cycles.py``.)  :func:`predict_cycles` replays the array's
issue rules (one depth step per cycle, last beats at least ``2R - 1`` cycles apart, a tile
starts only with credit for its R result rows) with an ideal operand feeder and an always-ready
result sink, and returns the cycles from the first accepted beat to the last result row
(inclusive).  The RTL test checks that the measured count equals this prediction.

Mapping of blocks to tiles (R = array_rows, C = array_cols):

* tile-row ti: queries ``[ti R, ti R + R)``; its kept columns are the block columns kept by
  any block-row overlapping it.  Tile-rows wholly at or beyond ``valid_len`` are never issued.
* score tile (ti, tj): tile-row ti x keys ``[tj C, tj C + C)``, depth ``head_dim``; issued
  when one of its block columns is kept in the tile-row.  With ``b_r = R`` and ``b_c = C`` a tile
  is a block and a pruned block is a tile never issued.
* P x V tile (ti, td): queries of tile-row ti x output columns ``[td C, td C + C)``; its depth
  is the keys of the kept blocks of any block-row overlapping the tile-row (below
  ``valid_len``), in increasing order.  For every other key the tile's probabilities are 0.
"""

from dataclasses import dataclass, field

import numpy as np

from hw.config import HDPConfig
from hw.systolic import ARRAY_LATENCY_EXTRA, array_latency

__all__ = ["Tile", "tile_plan", "tile_row_cols", "predict_cycles",
           "ideal_cycles", "utilization",
           "ARRAY_LATENCY_EXTRA"]

# ARRAY_LATENCY_EXTRA (res_out latency beyond ``array_cols``) is the array's own figure,
# re-exported: ``predict_cycles`` reads ``hw.systolic.array_latency``.


@dataclass
class Tile:
    kind: str                 # "score" or "pv"
    ti: int                   # tile-row (queries ti*R ...)
    tj: int                   # key tile (score) or output-column tile (pv)
    keys: list[int] = field(default_factory=list)   # depth indices for pv

    def depth(self, cfg: HDPConfig) -> int:
        return cfg.head_dim if self.kind == "score" else len(self.keys)


def _overlap_blocks(lo: int, hi: int, b: int) -> range:
    """Block indices of size ``b`` overlapping positions [lo, hi)."""
    return range(lo // b, (hi - 1) // b + 1)


def tile_row_cols(cfg: HDPConfig, block_keep: np.ndarray, n: int, ti: int) -> np.ndarray:
    """Block columns kept by any block-row overlapping tile-row ``ti`` (bool, (nbc,))."""
    R, br = cfg.array_rows, cfg.block_rows
    bk = np.asarray(block_keep, bool)
    q_lo, q_hi = ti * R, min(n, ti * R + R)
    brs = [r for r in _overlap_blocks(q_lo, q_hi, br) if r < bk.shape[0]]
    return bk[brs].any(axis=0) if brs else np.zeros(bk.shape[1], bool)


def tile_plan(cfg: HDPConfig, block_keep: np.ndarray, n: int, valid_len: int | None = None,
              passes: tuple[str, ...] = ("score", "pv")) -> list[Tile]:
    """Tiles issued for one head with keep mask ``block_keep`` ((nbr, nbc) bool over an n x n
    score matrix), tile-row by tile-row (rows with a query below ``valid_len``): the row's
    score tiles by increasing key tile, then its P x V tiles by increasing output-column tile."""
    valid_len = n if valid_len is None else valid_len
    R, C, bc = cfg.array_rows, cfg.array_cols, cfg.block_cols
    n_ti, n_tj, n_td = -(-min(n, valid_len) // R), -(-n // C), -(-cfg.head_dim // C)
    tiles: list[Tile] = []
    for ti in range(n_ti):
        kept_cols = tile_row_cols(cfg, block_keep, n, ti)
        keys = [j for j in range(min(n, valid_len)) if kept_cols[j // bc]]
        if "score" in passes:
            for tj in range(n_tj):
                k_lo, k_hi = tj * C, min(n, tj * C + C)
                if any(kept_cols[c] for c in _overlap_blocks(k_lo, k_hi, bc)):
                    tiles.append(Tile("score", ti, tj))
        if "pv" in passes and keys:
            for td in range(n_td):
                tiles.append(Tile("pv", ti, td, keys))
    return tiles


def predict_cycles(cfg: HDPConfig, depths: list[int], fifo_depth: int | None = None) -> int:
    """Cycles from the first accepted beat to the last result row (both inclusive) for tiles of
    these depths fed back to back, replaying ``SystolicArray``'s rules cycle by cycle."""
    from hw.systolic import min_tile_cycles, result_fifo_depth
    if not depths:
        return 0
    R = cfg.array_rows
    gap = min_tile_cycles(cfg)
    lat = array_latency(cfg)
    depth = result_fifo_depth(cfg) if fifo_depth is None else fifo_depth
    credit = depth
    releases: dict[int, int] = {}   # cycle -> rows leaving the FIFO in that cycle
    t = 0
    last_prev = -gap
    last_out = 0
    for k in depths:
        # a tile starts when it has credit for its R rows
        while True:
            if credit >= R:
                break
            credit += releases.pop(t, 0)
            t += 1
        credit -= R
        start = t
        # credit released by rows leaving in cycles [start, ...) is seen one cycle later
        last = max(start + k - 1, last_prev + gap)
        for r in range(R):
            releases[last + lat + 2 * r] = releases.get(last + lat + 2 * r, 0) + 1
        last_out = last + lat + 2 * (R - 1)
        # catch the credit up to the cycle after the last beat
        for c in range(start, last + 1):
            credit += releases.pop(c, 0)
        t = last + 1
        last_prev = last
    return last_out + 1


def ideal_cycles(cfg: HDPConfig, depths: list[int]) -> int:
    """Cycles if every PE did useful work every cycle: depth steps issued."""
    return int(sum(depths))


def utilization(cfg: HDPConfig, tiles: list[Tile], cycles: int, n: int | None = None) -> float:
    """Useful PE-cycles / (R C cycles).  A PE-cycle is useful when its query row and its key
    (score) or output column (P x V) lie inside the n x n / n x d matrices: padding of edge
    tiles and fill/drain cycles are not useful."""
    if cycles == 0:
        return 0.0
    n = cfg.seq_len if n is None else n
    R, C, d = cfg.array_rows, cfg.array_cols, cfg.head_dim
    useful = 0
    for t in tiles:
        rows = min(n, t.ti * R + R) - t.ti * R
        cols = (min(n, t.tj * C + C) if t.kind == "score" else min(d, t.tj * C + C)) - t.tj * C
        useful += rows * cols * t.depth(cfg)
    return useful / (R * C * cycles)
