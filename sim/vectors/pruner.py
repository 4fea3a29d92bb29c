"""Stimulus and expected output for :class:`hw.block_pruner.BlockPruner`, computed by ``golden/``.

One generator, two drivers: the Amaranth-simulator tests (``tests/test_block_pruner.py``) and
the cocotb bench (``sim/benches/bench_pruner.py``) call the same functions with a configuration
and a seed and compare the unit's whole output against the expected beats.

A :class:`PrunerHead` is one head: its run-time settings (``mode``, ``k_frac_q``, ``rho_q``,
``valid_len``), the ``imp_in`` beats (row-major, block-rows ``< ceil(L/b_r)``, columns
``< ceil(L/b_c)``) and the expected ``mask_out`` beats, from
:func:`golden.pruner.diagonal_blocks` and :func:`golden.pruner.topk_keep` /
:func:`golden.pruner.threshold_keep` / the valid blocks (``off``), i.e. what
:func:`golden.pruner.block_keep` computes for the same settings.  Importances come from golden
(:func:`golden.pruner.block_importance` of random or real integer scores ``A``) or are drawn
directly inside :attr:`HDPConfig.importance_range` (0 for invalid blocks, as golden has it).

Run-time codes beyond :class:`HDPConfig`'s ranges follow the unit's documented behaviour:
``k_frac_q = 0`` keeps only the diagonal and codes above ``2**8`` every valid block (golden
``topk_keep`` does the same), ``rho_q > 2**P``
is treated as ``2**P``, mode code 3 as ``off``.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from golden import pruner, score
from golden.intmath import split_int_frac
from golden.model import quantize_qkv
from hw.block_pruner import MODE_OFF, MODE_THRESHOLD, MODE_TOPK, imp_layout, mask_layout
from hw.config import K_FRAC_BITS, HDPConfig

__all__ = ["PrunerHead", "PrunerCase", "make_head", "expected_keep", "block_validity", "directed_cases",
           "random_case", "fixture_case", "standard_cases", "pack_beat", "pack_mask",
           "unpack_mask", "first_mismatch", "MODE_OFF", "MODE_TOPK", "MODE_THRESHOLD"]


@dataclass
class PrunerHead:
    """One head: run-time settings, stimulus beats and expected mask beats."""
    mode: int
    k_frac_q: int
    rho_q: int
    valid_len: int
    causal: bool
    imp: np.ndarray          # (ceil(L/b_r), ceil(L/b_c)) importances streamed
    valid: np.ndarray        # block validity streamed
    beats: list[dict]        # imp_in beats (field dicts), row-major
    masks: list[dict]        # expected mask_out beats (field dicts), one per block-row

    @property
    def n_blocks(self) -> int:
        return len(self.beats)


@dataclass
class PrunerCase:
    """A named run of heads (settings may differ from head to head)."""
    name: str
    heads: list[PrunerHead] = field(default_factory=list)

    @property
    def n_blocks(self) -> int:
        return sum(h.n_blocks for h in self.heads)

    @property
    def n_rows(self) -> int:
        return sum(len(h.masks) for h in self.heads)


def expected_keep(cfg: HDPConfig, imp: np.ndarray, valid: np.ndarray, valid_len: int,
                  mode: int, k_frac_q: int, rho_q: int) -> np.ndarray:
    """Golden keep mask (bool, shape of ``imp``) for one head's run-time settings."""
    n = int(valid_len)
    diag = pruner.diagonal_blocks(n, n, cfg)
    if diag.shape != imp.shape:
        raise ValueError(f"importances must have shape {diag.shape} for valid_len {n}, "
                         f"not {imp.shape}")
    if mode == MODE_TOPK:
        return pruner.topk_keep(imp, valid, diag, int(k_frac_q))
    if mode == MODE_THRESHOLD:
        return pruner.threshold_keep(imp, valid, diag, min(int(rho_q), 1 << cfg.rho_frac),
                                     cfg.rho_frac)
    return valid.copy()


def make_head(cfg: HDPConfig, imp: np.ndarray, valid: np.ndarray, valid_len: int, causal: bool,
              mode: int, k_frac_q: int | None = None, rho_q: int | None = None,
              rows: "list[int] | None" = None) -> PrunerHead:
    """A head from block importances and validity of shape ``block_grid(valid_len)``.

    ``rows`` streams only those block-rows (in order; ``last`` on the final one): the unit
    treats every block-row on its own, so a few rows of a full-length head test the widest
    rows without simulating all of them."""
    k_frac_q = cfg.k_frac_q if k_frac_q is None else int(k_frac_q)
    rho_q = cfg.rho_q if rho_q is None else int(rho_q)
    imp = np.asarray(imp, np.int64)
    valid = np.asarray(valid, bool)
    lo, hi = cfg.importance_range
    if imp.size and (imp.min() < lo or imp.max() > hi):
        raise ValueError(f"importances must lie in importance_range [{lo}, {hi}]")
    keep = expected_keep(cfg, imp, valid, valid_len, mode, k_frac_q, rho_q)
    nbr, nbc = imp.shape
    rows = list(range(nbr)) if rows is None else [int(r) for r in rows]
    if not rows or any(not 0 <= r < nbr for r in rows):
        raise ValueError(f"rows must be a non-empty list of block-rows in [0, {nbr}), not {rows}")
    beats, masks = [], []
    for r in rows:
        end = r == rows[-1]
        for c in range(nbc):
            beats.append({"imp": int(imp[r, c]), "valid": int(valid[r, c]), "row": r, "col": c,
                          "last_col": int(c == nbc - 1), "last": int(end and c == nbc - 1)})
        masks.append({"mask": sum(1 << c for c in range(nbc) if keep[r, c]), "row": r,
                      "last": int(end)})
    return PrunerHead(int(mode), k_frac_q, rho_q, int(valid_len), bool(causal), imp, valid, beats,
                      masks)


def block_validity(cfg: HDPConfig, valid_len: int, causal: bool) -> np.ndarray:
    """Golden block validity (bool, ``block_grid(valid_len)``) for ``valid_len`` and causal."""
    mask = pruner.entry_mask(valid_len, valid_len, causal)
    return pruner.block_importance(np.zeros((valid_len, valid_len), np.int64), mask, cfg)[1]


def _direct(cfg, valid_len, causal, fill: Callable[[tuple[int, int]], np.ndarray],
            **settings) -> PrunerHead:
    """A head whose valid blocks get importances ``fill(shape)`` (invalid blocks get 0)."""
    valid = block_validity(cfg, valid_len, causal)
    imp = np.where(valid, np.asarray(fill(valid.shape), np.int64), 0)
    return make_head(cfg, imp, valid, valid_len, causal, **settings)


def _from_scores(cfg, a: np.ndarray, causal: bool, **settings) -> PrunerHead:
    """A head whose importances golden computes from integer scores ``A`` (L x L)."""
    n = a.shape[0]
    imp, valid = pruner.block_importance(a, pruner.entry_mask(n, n, causal), cfg)
    return make_head(cfg, imp, valid, n, causal, **settings)


def _ragged_len(cfg: HDPConfig, top: int) -> int:
    """The largest L <= top that is a multiple of neither b_r nor b_c (else top)."""
    return next((n for n in range(top, 0, -1) if n % cfg.block_rows and n % cfg.block_cols), top)


def directed_cases(cfg: HDPConfig, seed: int = 0, *, max_len: int | None = None
                   ) -> list[PrunerCase]:
    """Named edge cases; ``max_len`` caps ``valid_len`` (for slow simulators on big presets)
    except in the ``extreme_*`` cases, which need every block column."""
    rng = np.random.default_rng(seed)
    lo, hi = cfg.importance_range
    one = 1 << cfg.rho_frac
    full_n = cfg.seq_len
    cap = cfg.seq_len if max_len is None else min(cfg.seq_len, max_len)
    ragged = _ragged_len(cfg, cap)
    mid = (lo + hi) // 2
    T, H, O = MODE_TOPK, MODE_THRESHOLD, MODE_OFF

    def const(v):
        return lambda shape: np.full(shape, v, np.int64)

    def rnd(a=lo, b=hi):
        return lambda shape: rng.integers(a, b + 1, size=shape)

    def case(name, heads):
        return PrunerCase(name, list(heads))

    L = cap
    full = 1 << K_FRAC_BITS          # k_frac = 1: every valid block
    kb_half = full // 2
    cases = [
        case("all_equal", [_direct(cfg, L, False, const(mid), mode=T, k_frac_q=k)
                           for k in (1, kb_half, full)]
             + [_direct(cfg, L, False, const(mid), mode=H, rho_q=r) for r in (0, one // 2, one)]),
        # k-th and (k+1)-th largest are equal: the lower column must win
        case("ties_at_kth_place", [_direct(cfg, L, c, _ties_fill(rng, lo, hi), mode=T,
                                           k_frac_q=k)
                                   for c in (False, True) for k in (1, full // 4, 3 * full // 8,
                                                                    kb_half, 3 * full // 4)]),
        case("all_below_threshold_except_max",
             [_direct(cfg, L, c, _one_peak(rng, lo, hi), mode=H, rho_q=r)
              for c in (False, True) for r in (one, one - 1, (3 * one) // 4)]),
        case("k_frac_smallest", [_direct(cfg, L, c, rnd(), mode=T, k_frac_q=1)
                                 for c in (False, True)]),
        case("k_frac_1_keeps_all_valid", [_direct(cfg, L, c, rnd(), mode=T, k_frac_q=full)
                                          for c in (False, True)]),
        case("k_frac_0_keeps_diagonal_only", [_direct(cfg, L, False, rnd(), mode=T, k_frac_q=0)]),
        case("k_frac_above_1", [_direct(cfg, L, False, rnd(), mode=T,
                                        k_frac_q=(1 << cfg.k_frac_width) - 1)]),
        case("k_frac_odd_codes", [_direct(cfg, L, c, rnd(), mode=T, k_frac_q=k)
                                  for c in (False, True) for k in (3, full // 3, full - 1)]),
        case("valid_len_1", [_direct(cfg, 1, c, rnd(), mode=md)
                             for c in (False, True) for md in (O, T, H)]),
        case("valid_len_ragged", [_direct(cfg, ragged, False, rnd(), mode=md)
                                  for md in (O, T, H)]),
        case("causal_invalid_above_diagonal", [_direct(cfg, L, True, rnd(), mode=md,
                                                       k_frac_q=k)
                                               for md in (O, T, H) for k in (1, kb_half, full)]),
        case("causal_ragged", [_direct(cfg, ragged, True, rnd(), mode=md) for md in (T, H)]),
        case("rho_0_mean", [_direct(cfg, L, c, rnd(), mode=H, rho_q=0) for c in (False, True)]),
        case("rho_1_max", [_direct(cfg, L, c, rnd(), mode=H, rho_q=one) for c in (False, True)]),
        case("rho_above_1_clamped", [_direct(cfg, L, False, rnd(), mode=H,
                                             rho_q=(2 << cfg.rho_frac) - 1)]),
        case("mode_off_and_code_3", [_direct(cfg, L, c, rnd(), mode=md)
                                     for c in (False, True) for md in (O, 3)]),
        case("narrow_values_many_ties", [_direct(cfg, L, c, rnd(mid - 1, mid + 1), mode=md,
                                                 k_frac_q=k, rho_q=r)
                                         for c in (False, True) for md in (T, H)
                                         for k, r in ((full // 4, one // 3), (kb_half, one // 2))]),
    ]
    if lo < 0:
        neg_hi = min(-1, hi)
        cases.append(case("negative_importances", [
            _direct(cfg, L, c, rnd(lo, neg_hi), mode=md, k_frac_q=k, rho_q=r)
            for c in (False, True) for md in (T, H) for k, r in ((kb_half, one // 2), (1, one))]))
    # extremes at the importance width with every block column valid (n = n_block_cols); the
    # first and the last block-row of a full-length head
    nbr_all = cfg.n_block_rows
    sel = sorted({0, nbr_all - 1})
    ext = []
    for v in ([hi], [lo], [lo, hi]):
        for md, r in ((H, 0), (H, one), (H, one // 2 + 1), (T, 0)):
            ext.append(_direct(cfg, full_n, False, _choice(rng, v), mode=md, rho_q=r,
                               k_frac_q=kb_half, rows=sel))
    # one block at lo, every other at hi (and the reverse): largest |lhs - rhs|
    for a, b in ((lo, hi), (hi, lo)):
        for r in (0, one, 1):
            ext.append(_direct(cfg, full_n, False, _single(a, b), mode=H, rho_q=r, rows=sel))
    cases.append(case("extreme_importance_width", ext))
    return cases


def _choice(rng, values):
    return lambda shape: rng.choice(values, size=shape)


def _single(a, b):
    def fill(shape):
        x = np.full(shape, b, np.int64)
        x[:, -1] = a
        return x
    return fill


def _ties_fill(rng, lo, hi):
    """Rows of a few distinct values with many repeats, so the k-th place is usually a tie."""
    def fill(shape):
        vals = rng.integers(lo, hi + 1, size=3)
        return rng.choice(vals, size=shape)
    return fill


def _one_peak(rng, lo, hi):
    """One block per row at ``hi``, every other block far below it."""
    def fill(shape):
        x = rng.integers(lo, lo + max(1, (hi - lo) // 8) + 1, size=shape)
        x[np.arange(shape[0]), rng.integers(0, shape[1], size=shape[0])] = hi
        return x
    return fill


def random_case(cfg: HDPConfig, seed: int, n_heads: int = 4, max_len: int | None = None
                ) -> PrunerCase:
    """``n_heads`` heads with random settings (mode, k_frac_q, rho_q, valid_len, causal); half of
    them take importances from random integer scores through golden, half draw importances
    directly (full range or a narrow one, for ties)."""
    rng = np.random.default_rng(seed)
    top = cfg.seq_len if max_len is None else min(cfg.seq_len, max_len)
    lo, hi = cfg.importance_range
    alo, ahi = cfg.a_range
    one = 1 << cfg.rho_frac
    heads = []
    for h in range(n_heads):
        n = int(rng.integers(1, top + 1))
        causal = bool(rng.integers(0, 2))
        settings = {"mode": int(rng.integers(0, 3)),
                    "k_frac_q": int(rng.integers(1, (1 << K_FRAC_BITS) + 1)),
                    "rho_q": int(rng.integers(0, one + 1))}
        kind = h % 3
        if kind == 0:
            a = rng.integers(alo, ahi + 1, size=(n, n))
            heads.append(_from_scores(cfg, a, causal, **settings))
        elif kind == 1:
            heads.append(_direct(cfg, n, causal, lambda s: rng.integers(lo, hi + 1, size=s),
                                 **settings))
        else:
            c = int(rng.integers(lo, hi + 1))
            a, b = max(lo, c - 2), min(hi, c + 2)
            heads.append(_direct(cfg, n, causal, lambda s, a=a, b=b: rng.integers(a, b + 1, size=s),
                                 **settings))
    return PrunerCase(f"random_seed{seed}", heads)


def fixture_case(cfg: HDPConfig, name: str = "long", heads=(0, 37, 71)) -> PrunerCase | None:
    """Real all-MiniLM-L6-v2 heads: golden computes ``A`` from the quantized Q, K of the bundled
    capture and then the importances; each head runs in every mode (causal off, then topk with
    causal on).  None when the fixture is missing or does not fit ``cfg``."""
    from sim.fixtures import fixture_for
    fx = fixture_for(cfg, name)
    if fx is None:
        return None
    n = fx["valid_len"]
    one = 1 << cfg.rho_frac
    out = []
    for h in heads:
        q_q, k_q, _ = quantize_qkv(fx["q"][h], fx["k"][h], fx["v"][h], cfg)
        qi, _ = split_int_frac(q_q[:n], cfg.qk_frac)
        ki, _ = split_int_frac(k_q[:n], cfg.qk_frac)
        a = score.integer_scores(qi, ki)
        half = 1 << (K_FRAC_BITS - 1)
        for md, causal, k, r in ((MODE_TOPK, False, half, one // 2),
                                 (MODE_THRESHOLD, False, half, one // 2),
                                 (MODE_OFF, False, half, one // 2),
                                 (MODE_TOPK, True, half // 2, one // 4),
                                 (MODE_THRESHOLD, True, half, (3 * one) // 4)):
            out.append(_from_scores(cfg, a, causal, mode=md, k_frac_q=k, rho_q=r))
    return PrunerCase(f"minilm_{name}_heads{'_'.join(map(str, heads))}", out)


def standard_cases(cfg: HDPConfig, seed: int, *, max_len: int | None = None, n_random: int = 3,
                   fixture: bool = True) -> list[PrunerCase]:
    """Directed cases, ``n_random`` random cases and (when it fits) the MiniLM fixture."""
    cases = directed_cases(cfg, seed, max_len=max_len)
    cases += [random_case(cfg, seed * 1000 + i, max_len=max_len) for i in range(n_random)]
    if fixture:
        fx = fixture_case(cfg)
        if fx is not None:
            cases.append(fx)
    return cases


# ---------------------------------------------------------------------------- packing
def pack_beat(cfg: HDPConfig, beat: dict) -> int:
    """An ``imp_in`` payload as an integer, packed with :func:`hw.block_pruner.imp_layout`."""
    return imp_layout(cfg).const(beat).as_bits()


def pack_mask(cfg: HDPConfig, mask: dict) -> int:
    return mask_layout(cfg).const(mask).as_bits()


def unpack_mask(cfg: HDPConfig, bits: int) -> dict:
    v = mask_layout(cfg).from_bits(bits)
    return {"mask": int(v.mask), "row": int(v.row), "last": int(v.last)}


def first_mismatch(cfg: HDPConfig, case_name: str, seed: int, expected: list[int],
                   actual: list[int], heads: list[PrunerHead] | None = None) -> str | None:
    """None when ``actual == expected`` (packed mask beats), else a one-line report naming
    config, case, seed, the first differing beat index (and its head/row) and both values."""
    if list(actual) == list(expected):
        return None
    where = ""
    n = next((i for i, (e, a) in enumerate(zip(expected, actual)) if e != a),
             min(len(expected), len(actual)))
    if heads is not None:
        k = n
        for hi_, h in enumerate(heads):
            if k < len(h.masks):
                where = (f" (head {hi_}, block-row {k}, mode {h.mode}, k_frac_q {h.k_frac_q}, "
                         f"rho_q {h.rho_q}, valid_len {h.valid_len}, causal {h.causal})")
                break
            k -= len(h.masks)
    if n >= len(actual) or n >= len(expected):
        return (f"config {cfg.to_dict()} case {case_name} seed {seed}: {len(actual)} mask beats, "
                f"expected {len(expected)}; first missing/extra index {n}{where}")
    exp = unpack_mask(cfg, expected[n])
    act = unpack_mask(cfg, actual[n])
    return (f"config {cfg.to_dict()} case {case_name} seed {seed}: first mismatch at mask beat "
            f"{n}{where}: expected {exp} (mask {exp['mask']:#b}), actual {act} "
            f"(mask {act['mask']:#b})")
