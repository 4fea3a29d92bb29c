"""Stimulus and expected output for :class:`hw.mass_pruner.MassPruner`, computed by ``golden/``.

One generator for the Amaranth-simulator tests and the cocotb bench.  A :class:`MassHead`
is one head: its settings (``valid_len``, ``causal``, ``eps_q``), the ``k_in`` rows (the
quantized K rows, ``valid_len`` of them), the ``blk_in`` beats (the integer scores ``A`` of
every block, as the score unit sends them: row-major, block-rows ``< ceil(L/b_r)``,
columns ``< ceil(L/b_c)``, 0 at padding positions) and the expected ``mask_out`` beats from
:func:`golden.mass_pruner.mass_keep` of :func:`golden.mass_pruner.block_mass`.
"""

from dataclasses import dataclass

import numpy as np

from golden import mass_pruner, pruner, score
from golden.intmath import split_int_frac
from golden.model import quantize_qkv
from hw.config import HDPConfig

from .pruner import pack_mask

__all__ = ["MassHead", "make_head", "random_head", "directed_heads", "fixture_head",
           "pack_k_row", "pack_mask"]


@dataclass
class MassHead:
    valid_len: int
    causal: bool
    eps_q: int
    k_rows: list[list[int]]      # quantized K rows (valid_len x head_dim)
    beats: list[dict]            # blk_in beats (field dicts)
    masks: list[dict]            # expected mask_out beats
    mass: np.ndarray             # golden block masses (for messages)

    @property
    def n_blocks(self) -> int:
        return len(self.beats)


def make_head(cfg: HDPConfig, q_q: np.ndarray, k_q: np.ndarray, valid_len: int, causal: bool,
              eps_q: int) -> MassHead:
    """A head from quantized Q and K of shape ``(seq_len, head_dim)`` (rows ``>= valid_len``
    are ignored: zero in the score unit's padding)."""
    n, L = cfg.seq_len, int(valid_len)
    q_q = np.array(q_q, np.int64)
    k_q = np.array(k_q, np.int64)
    q_q[L:] = 0
    k_q[L:] = 0
    qi, _ = split_int_frac(q_q, cfg.qk_frac)
    ki, _ = split_int_frac(k_q, cfg.qk_frac)
    a = score.integer_scores(qi, ki)
    mask = pruner.entry_mask(n, L, causal)
    _, bvalid = pruner.block_importance(a, mask, cfg.replace(causal=causal))
    diag = pruner.diagonal_blocks(n, L, cfg)
    m = mass_pruner.block_mass(mass_pruner.estimated_scores(a, k_q, cfg), mask, cfg)
    keep = mass_pruner.mass_keep(m, bvalid, diag, int(eps_q))
    br, bc = cfg.block_rows, cfg.block_cols
    nbr, nbc = -(-L // br), -(-L // bc)
    beats, masks = [], []
    for r in range(nbr):
        for c in range(nbc):
            blk = [int(a[i, j]) if i < n and j < n and i < L and j < L else 0
                   for i in range(r * br, r * br + br) for j in range(c * bc, c * bc + bc)]
            beats.append({"a": blk, "imp": 0, "valid": int(bvalid[r, c]), "row": r, "col": c,
                          "last_col": int(c == nbc - 1), "last": int(r == nbr - 1 and c == nbc - 1)})
        masks.append({"mask": sum(1 << c for c in range(nbc) if keep[r, c]), "row": r,
                      "last": int(r == nbr - 1)})
    return MassHead(L, bool(causal), int(eps_q), k_q[:L].tolist(), beats, masks, m[:nbr, :nbc])


def _lims(cfg):
    return -(1 << (cfg.qk_bits - 1)), (1 << (cfg.qk_bits - 1)) - 1


def random_head(cfg: HDPConfig, rng: np.random.Generator, valid_len: int | None = None,
                causal: bool | None = None, eps_q: int | None = None, spread: int = 1) -> MassHead:
    """Random Q and K (``spread``: divides the range, to vary how peaked rows are)."""
    lo, hi = _lims(cfg)
    n, d = cfg.seq_len, cfg.head_dim
    L = int(rng.integers(1, n + 1)) if valid_len is None else valid_len
    q = rng.integers(lo // spread, hi // spread + 1, (n, d))
    k = rng.integers(lo // spread, hi // spread + 1, (n, d))
    causal = bool(rng.integers(2)) if causal is None else causal
    eps_q = int(rng.choice([0, 1, 13, 25, 64, 200, 255])) if eps_q is None else eps_q
    return make_head(cfg, q, k, L, causal, eps_q)


def directed_heads(cfg: HDPConfig, max_len: int | None = None) -> list[MassHead]:
    """Extremes: every Q and K at the most negative or largest code (the widest scores and
    key sums), all equal (ties everywhere), one peaked key, length 1 and ragged lengths,
    causal, and eps at 0 and 255."""
    lo, hi = _lims(cfg)
    n, d = cfg.seq_len, cfg.head_dim
    top = n if max_len is None else min(n, max_len)
    heads = []
    for L in sorted({1, top, max(1, top - 1), max(1, (top + 1) // 2)}):
        for qv, kv in ((lo, lo), (hi, lo), (lo, hi), (hi, hi), (0, 0)):
            heads.append(make_head(cfg, np.full((n, d), qv), np.full((n, d), kv), L, False, 25))
    peak = np.zeros((n, d), np.int64)
    peak[top // 2] = hi
    q = np.full((n, d), hi)
    for causal in (False, True):
        for eps_q in (0, 25, 255):
            heads.append(make_head(cfg, q, peak, top, causal, eps_q))
    alt = np.where(np.arange(n)[:, None] % 2 == 0, lo, hi) * np.ones((1, d), np.int64)
    heads.append(make_head(cfg, alt, alt[::-1].copy(), top, True, 1))
    return heads


def fixture_head(cfg: HDPConfig, data, head: int, eps_q: int, valid_len: int | None = None,
                 causal: bool = False) -> MassHead:
    """A real head of a bundled capture (``q``, ``k``, ``v`` float arrays), quantized the
    way golden does it, cut to the configuration's length."""
    n = cfg.seq_len
    L = min(int(data["valid_len"]) if valid_len is None else valid_len, n)
    q, k, v = (np.zeros((n, cfg.head_dim)) for _ in range(3))
    for dst, key in ((q, "q"), (k, "k"), (v, "v")):
        src = np.asarray(data[key][head], np.float64)[:n, :cfg.head_dim]
        dst[:src.shape[0], :src.shape[1]] = src
    q_q, k_q, _ = quantize_qkv(q, k, v, cfg)
    return make_head(cfg, q_q, k_q, L, causal, eps_q)


def pack_k_row(cfg: HDPConfig, row) -> int:
    """A K row as the packed bits of ``qk_row_layout``."""
    w = cfg.qk_bits
    return sum((int(x) & ((1 << w) - 1)) << (w * e) for e, x in enumerate(row))
