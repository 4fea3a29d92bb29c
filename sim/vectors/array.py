"""Stimulus and expected tile results for :class:`hw.systolic.SystolicArray`, from ``golden/``.

A head goes through the golden model (``golden.model.attention_head_int``);
``sim/cycle_model.tile_plan`` lists the tiles its keep mask needs; each tile becomes operand beats
(one per depth step) and an expected R x C result:

* score tile: ``(X << F) + (C if exact else 0)`` with X, C from the golden model
  (``golden.score.cross_terms`` / ``ff_terms``); the generator also checks that
  ``(A << 2F) + result`` equals the golden final scores on the kept entries;
* dense score tile (``dense``: pruning and head pruning off, as the top runs it, operands
  ``(q_I, k_q, q_F, k_q)`` or ``(q_I, k_q, q_F, k_I << F)``): the whole golden score
  ``(A << 2F) + (X << F) (+ C)``, checked equal to the golden scores on the kept entries;
* P x V tile: ``golden.pv.pv`` of the tile's probabilities and V rows over the tile's keys;
  the generator checks that adding the tiles up gives the golden accumulator of the whole head.

Rows, keys and columns beyond the matrices are zero operands (results there are 0 and ignored).
"""

from dataclasses import dataclass

import numpy as np

from golden import model, pv
from golden.approx import key_compensation
from golden.intmath import split_int_frac
from hw.config import HDPConfig
from hw.systolic import op_layout, res_layout
from sim.cycle_model import Tile, tile_plan

__all__ = ["ArrayWorkload", "head_workload", "random_head", "pack_beats", "unpack_results",
           "expected_rows", "compare"]


@dataclass
class ArrayWorkload:
    name: str
    tiles: list[Tile]
    beats: list[list[dict]]      # per tile, its op beats (field values)
    expected: list[np.ndarray]   # per tile, (R, C) int64
    head: model.HeadResult


def _pad(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), np.int64)
    out[:min(rows, x.shape[0]), :min(cols, x.shape[1])] = x[:rows, :cols]
    return out


def head_workload(cfg: HDPConfig, name: str, q_q, k_q, v_q, valid_len: int | None = None,
                  passes: tuple[str, ...] = ("score", "pv"),
                  dense: bool | None = None) -> ArrayWorkload:
    """Tiles, beats and expected results of one head under ``cfg`` (its pruning and approx).

    ``dense``: score tiles with the dense operands (the full score, no integer pass); default
    as the top decides: ``prune_mode == "off"`` and no head pruning."""
    res = model.attention_head_int(q_q, k_q, v_q, cfg, valid_len)
    n, d = res.q_q.shape
    vl = n if valid_len is None else valid_len
    R, C, F = cfg.array_rows, cfg.array_cols, cfg.qk_frac
    exact = cfg.approx == "exact"
    qi, qf = split_int_frac(res.q_q, F)
    ki, kf = split_int_frac(res.k_q, F)
    if dense is None:
        dense = cfg.prune_mode == "off" and not cfg.head_prune
    kb0 = res.k_q if dense else kf
    kb1 = res.k_q if exact else (ki << F)
    fine = (res.x << F) + (res.c if exact else 0)
    # comp: the softmax stage adds each key's compensation to the array's drop_ff score
    comp = key_compensation(kf, cfg)[None, :] if cfg.approx == "comp" else 0
    if dense:
        fine = fine + (res.a << (2 * F))
        # the array's result (plus comp) is the golden final score on every kept entry
        assert np.array_equal((fine + comp)[res.entry_keep], res.scores[res.entry_keep])
    else:
        # the array's result plus the reused A (plus comp) is the golden final score
        assert np.array_equal(((res.a << (2 * F)) + fine + comp)[res.entry_keep],
                              res.scores[res.entry_keep])
    tiles = tile_plan(cfg, res.block_keep, n, vl, passes)
    beats, expected = [], []
    acc = np.zeros((n, d), np.int64)
    for t in tiles:
        rows = range(t.ti * R, t.ti * R + R)
        tag = 0   # set per tile by pack_beats
        tb = []
        if t.kind == "score":
            cols = range(t.tj * C, t.tj * C + C)
            for s in range(d):
                tb.append({
                    "a0": [int(qi[i, s]) if i < n else 0 for i in rows],
                    "a1": [int(qf[i, s]) if i < n else 0 for i in rows],
                    "b0": [int(kb0[j, s]) if j < n else 0 for j in cols],
                    "b1": [int(kb1[j, s]) if j < n else 0 for j in cols],
                    "last": 0, "tag": tag})
            expected.append(_pad(fine[t.ti * R:, t.tj * C:], R, C))
        else:
            cols = range(t.tj * C, t.tj * C + C)
            for j in t.keys:
                tb.append({
                    "a0": [0] * R, "b0": [0] * C,
                    "a1": [int(res.probs[i, j]) if i < n else 0 for i in rows],
                    "b1": [int(res.v_q[j, c]) if c < d else 0 for c in cols],
                    "last": 0, "tag": tag})
            keys = np.array(t.keys, np.int64)
            r_lo, r_hi = t.ti * R, min(n, t.ti * R + R)
            c_lo, c_hi = t.tj * C, min(d, t.tj * C + C)
            part = pv.pv(res.probs[r_lo:r_hi][:, keys], res.v_q[keys][:, c_lo:c_hi])
            acc[r_lo:r_hi, c_lo:c_hi] += part
            expected.append(_pad(part, R, C))
        tb[-1]["last"] = 1
        beats.append(tb)
    if "pv" in passes and res.head_keep:
        # skipping keys of pruned blocks is exact: the tiles add up to the golden P x V
        assert np.array_equal(acc, res.acc), "P x V tiles do not add up to golden"
    return ArrayWorkload(name, tiles, beats, expected, res)


def random_head(cfg: HDPConfig, seed: int, n: int | None = None):
    """Seeded random quantized Q, K, V of one head (n rows, default seq_len)."""
    rng = np.random.default_rng(seed)
    n = cfg.seq_len if n is None else n
    lo, hi = -(1 << (cfg.qk_bits - 1)), 1 << (cfg.qk_bits - 1)
    vlo, vhi = -(1 << (cfg.v_bits - 1)), 1 << (cfg.v_bits - 1)
    return (rng.integers(lo, hi, (n, cfg.head_dim)), rng.integers(lo, hi, (n, cfg.head_dim)),
            rng.integers(vlo, vhi, (n, cfg.head_dim)))


def pack_beats(cfg: HDPConfig, w: ArrayWorkload, tag_width: int | None = None) -> list[int]:
    """All op beats of the workload, in issue order, packed with the RTL layout; tag = tile
    index modulo 2**tag_width."""
    lay = op_layout(cfg, tag_width)
    tmask = (1 << lay["tag"].shape.width) - 1
    out = []
    for t_idx, tb in enumerate(w.beats):
        for b in tb:
            out.append(lay.const({**b, "tag": t_idx & tmask}).as_bits())
    return out


def unpack_results(cfg: HDPConfig, beats: list[int], tag_width: int | None = None) -> list[dict]:
    lay = res_layout(cfg, tag_width)
    out = []
    for b in beats:
        c = lay.from_bits(b)
        out.append({"acc": [int(c.acc[i]) for i in range(cfg.array_cols)], "row": int(c.row),
                    "last": int(c.last), "tag": int(c.tag)})
    return out


def expected_rows(cfg: HDPConfig, w: ArrayWorkload, tag_width: int | None = None) -> list[dict]:
    """The result beats the array must produce, in order."""
    lay = res_layout(cfg, tag_width)
    tmask = (1 << lay["tag"].shape.width) - 1
    R = cfg.array_rows
    return [{"acc": [int(x) for x in e[r]], "row": r, "last": int(r == R - 1), "tag": t & tmask}
            for t, e in enumerate(w.expected) for r in range(R)]


def compare(got: list[dict], exp: list[dict]) -> str | None:
    """None when equal, else a description of the first difference."""
    if len(got) != len(exp):
        n = min(len(got), len(exp))
        for i in range(n):
            if got[i] != exp[i]:
                return f"{len(got)} rows for {len(exp)}; first difference at row beat {i}: " \
                       f"expected {exp[i]}, got {got[i]}"
        return f"{len(got)} result rows for {len(exp)} expected"
    for i, (g, e) in enumerate(zip(got, exp)):
        if g != e:
            return f"first difference at result beat {i} (row {e['row']} of tile tag {e['tag']}): " \
                   f"expected {e}, got {g}"
    return None
