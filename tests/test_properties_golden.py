"""Property-based tests of the golden model's integer rules (:mod:`golden.intmath`,
:mod:`golden.score`, :mod:`golden.pruner`), each against its definition in exact arithmetic
(Python integers and :class:`fractions.Fraction`); and the softmax's reciprocal and probabilities
(:mod:`golden.softmax`) and P x V (:mod:`golden.pv`) against their exact definitions and inside
the widths :class:`hw.config.HDPConfig` derives from ``prob_frac``.

Examples are derandomized (no example database), so a run is reproducible.
"""

import math
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from golden import pruner, pv, score, softmax
from golden.intmath import (
    best_frac_bits,
    quantize,
    saturate,
    shift_right_floor,
    shift_round_half_up,
    split_int_frac,
)
from hw.config import HDPConfig


def SETTINGS(n: int):  # noqa: N802 - reads like hypothesis' own decorator
    return settings(deadline=None, derandomize=True, database=None, max_examples=n,
                    suppress_health_check=[HealthCheck.too_slow])


BITS = st.integers(2, 16)


def _int_arrays(lo=-(2**40), hi=2**40, max_side=6):
    return hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=max_side),
                      elements=st.integers(lo, hi))


# ---------------------------------------------------------------------------- quantize
@SETTINGS(300)
@given(st.floats(-1e6, 1e6, allow_nan=False), BITS, st.data())
def test_quantize_is_clamped_round_half_even(x, bits, data):
    frac = data.draw(st.integers(0, bits - 1))
    q = int(quantize(np.array([x]), bits, frac)[0])
    exact = Fraction(x) * 2**frac
    rounded = round(exact)  # Python rounds a Fraction half to even
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    assert q == min(max(rounded, lo), hi)
    assert lo <= q <= hi
    if lo <= rounded <= hi:
        assert abs(Fraction(q) - exact) <= Fraction(1, 2)


@SETTINGS(200)
@given(st.integers(-(2**14), 2**14), BITS, st.data())
def test_quantize_ties_go_to_even(m, bits, data):
    frac = data.draw(st.integers(0, bits - 1))
    x = (m + 0.5) / 2**frac  # exactly halfway between m and m + 1 (in LSBs)
    q = int(quantize(np.array([x]), bits, frac)[0])
    want = m if m % 2 == 0 else m + 1
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    assert q == min(max(want, lo), hi)


@SETTINGS(200)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=2, max_size=20), BITS, st.data())
def test_quantize_is_monotonic(xs, bits, data):
    frac = data.draw(st.integers(0, bits - 1))
    xs = sorted(xs)
    q = quantize(np.array(xs), bits, frac)
    assert q.dtype == np.int64 and np.all(np.diff(q) >= 0)


@SETTINGS(50)
@given(st.sampled_from([np.nan, np.inf, -np.inf]), BITS)
def test_quantize_rejects_nonfinite(bad, bits):
    try:
        quantize(np.array([0.0, bad]), bits, 0)
    except ValueError as exc:
        assert "NaN or infinite" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("quantized a non-finite value")


@SETTINGS(200)
@given(hnp.arrays(np.float64, st.integers(0, 30), elements=st.floats(-300, 300)), BITS)
def test_best_frac_bits_is_the_largest_that_does_not_clip(x, bits):
    f = best_frac_bits(x, bits)
    assert 0 <= f <= bits - 1

    def clips(frac):
        r = np.rint(x * 2.0**frac)
        return bool(np.any((r < -(1 << (bits - 1))) | (r > (1 << (bits - 1)) - 1)))

    assert f == 0 or not clips(f)  # 0 also when even F = 0 clips
    if f < bits - 1:  # every wider fraction clips
        assert all(clips(g) for g in range(f + 1, bits))


# ---------------------------------------------------------------------------- split, shifts
@SETTINGS(300)
@given(_int_arrays(-(2**20), 2**20), st.integers(0, 15))
def test_split_int_frac_reassembles_with_fraction_in_range(x, frac):
    x_i, x_f = split_int_frac(x, frac)
    assert np.array_equal(x_i * 2**frac + x_f, x)
    assert np.all(x_f >= 0) and np.all(x_f < 2**frac)
    assert [int(v) for v in x_i.ravel()] == [int(v) // 2**frac for v in x.ravel()]  # floor


@SETTINGS(300)
@given(_int_arrays(), st.integers(0, 20))
def test_shift_right_floor_is_floor_division(x, sh):
    got = shift_right_floor(x, sh)
    assert [int(v) for v in got.ravel()] == [math.floor(Fraction(int(v), 2**sh)) for v in x.ravel()]


@SETTINGS(300)
@given(_int_arrays(), st.integers(-10, 20))
def test_shift_round_half_up(x, sh):
    got = [int(v) for v in shift_round_half_up(x, sh).ravel()]
    if sh <= 0:
        assert got == [int(v) * 2**-sh for v in x.ravel()]
    else:
        assert got == [math.floor(Fraction(int(v), 2**sh) + Fraction(1, 2)) for v in x.ravel()]


@SETTINGS(100)
@given(st.integers(-(2**14), 2**14), st.integers(1, 12))
def test_shift_round_half_up_ties_go_up(m, sh):
    x = m * 2**sh + 2 ** (sh - 1)  # exactly m + 1/2 after the shift
    assert int(shift_round_half_up(np.array([x]), sh)[0]) == m + 1


@SETTINGS(300)
@given(_int_arrays(), st.integers(2, 40))
def test_saturate_clamps_and_keeps_in_range_values(x, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    got = saturate(x, bits)
    assert [int(v) for v in got.ravel()] == [min(max(int(v), lo), hi) for v in x.ravel()]
    inside = (x >= lo) & (x <= hi)
    assert np.array_equal(got[inside], x[inside])


# ---------------------------------------------------------------------------- score
@st.composite
def qk_ints(draw):
    bits = draw(st.integers(2, 12))
    frac = draw(st.integers(0, bits - 1))
    n, m, d = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 8))
    el = st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    q = draw(hnp.arrays(np.int64, (n, d), elements=el))
    k = draw(hnp.arrays(np.int64, (m, d), elements=el))
    return q, k, frac


@SETTINGS(300)
@given(qk_ints())
def test_score_decomposition(case):
    """q . k = 2**(2F) A + 2**F X + C, with C >= 0 and the dropped term of drop_ff."""
    q, k, f = case
    qi, qf = split_int_frac(q, f)
    ki, kf = split_int_frac(k, f)
    a = score.integer_scores(qi, ki)
    x = score.cross_terms(qi, qf, ki, kf)
    c = score.ff_terms(qf, kf)
    assert np.array_equal(2 ** (2 * f) * a + 2**f * x + c, q @ k.T)
    assert np.all(c >= 0) and np.all(c <= q.shape[1] * (2**f - 1) ** 2)


# ---------------------------------------------------------------------------- pruning
@st.composite
def block_rows_case(draw):
    """Importances, validity and diagonal of a block grid, as the model builds them."""
    br, bc = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    n = draw(st.integers(max(br, bc), 16))
    valid_len = draw(st.integers(1, n))
    causal = draw(st.booleans())
    cfg = HDPConfig(seq_len=16, head_dim=4, block_rows=br, block_cols=bc)
    mask = pruner.entry_mask(n, valid_len, causal)
    # few distinct values so that ties are common
    a = draw(hnp.arrays(np.int64, (n, n), elements=st.integers(-3, 3)))
    crit = draw(st.sampled_from(["abs_sum", "sum", "max"]))
    cfg = cfg.replace(criterion=crit)
    imp, valid = pruner.block_importance(a, mask, cfg)
    diag = pruner.diagonal_blocks(n, valid_len, cfg)
    return imp, valid, diag, cfg


@SETTINGS(300)
@given(block_rows_case(), st.integers(0, 511))
def test_topk_keeps_min_k_valid_with_the_diagonal_always(case, k_frac_q):
    imp, valid, diag, _ = case
    keep = pruner.topk_keep(imp, valid, diag, k_frac_q)
    assert not np.any(keep & ~valid)
    assert np.all(keep[diag & valid])  # diagonal always kept
    assert np.all((diag & valid) == diag)  # a diagonal block holds its own valid entry
    for r in range(imp.shape[0]):
        n_valid, n_diag = int(valid[r].sum()), int(diag[r].sum())
        k_row = -(-k_frac_q * n_valid // 256)   # ceil(k_frac * n_valid)
        assert int(keep[r].sum()) == max(n_diag, min(k_row, n_valid))
        if n_diag <= k_row:
            assert int(keep[r].sum()) == min(k_row, n_valid)
        # every kept non-diagonal block beats every dropped valid block (ties: lower column)
        kept = [c for c in range(imp.shape[1]) if keep[r, c] and not diag[r, c]]
        dropped = [c for c in range(imp.shape[1]) if valid[r, c] and not keep[r, c]]
        for c in kept:
            for e in dropped:
                assert imp[r, c] > imp[r, e] or (imp[r, c] == imp[r, e] and c < e)


@SETTINGS(300)
@given(block_rows_case(), st.integers(1, 8), st.data())
def test_threshold_rule_equals_its_float_definition(case, rho_frac, data):
    """Kept iff diagonal or I >= rho * max + (1 - rho) * mean over the row's valid blocks,
    with rho = rho_q / 2**rho_frac (exact: Fraction, and float where no rounding occurs)."""
    imp, valid, diag, _ = case
    rho_q = data.draw(st.integers(0, 1 << rho_frac))
    keep = pruner.threshold_keep(imp, valid, diag, rho_q, rho_frac)
    rho = Fraction(rho_q, 1 << rho_frac)
    rho_f = rho_q / (1 << rho_frac)
    for r in range(imp.shape[0]):
        vals = [int(imp[r, c]) for c in range(imp.shape[1]) if valid[r, c]]
        for c in range(imp.shape[1]):
            if not valid[r, c]:
                assert not keep[r, c]
                continue
            t = rho * max(vals) + (1 - rho) * Fraction(sum(vals), len(vals))
            assert keep[r, c] == (bool(diag[r, c]) or imp[r, c] >= t)
            # small integers and a dyadic rho: the float products and sums are exact
            t_f = rho_f * max(vals) * len(vals) + (1 - rho_f) * sum(vals)
            assert keep[r, c] == (bool(diag[r, c]) or float(imp[r, c]) * len(vals) >= t_f)


@SETTINGS(200)
@given(block_rows_case())
def test_prune_off_keeps_every_valid_block(case):
    imp, valid, diag, cfg = case
    assert np.array_equal(pruner.block_keep(imp, valid, diag, cfg.replace(prune_mode="off")), valid)


# ---------------------------------------------------------------------------- softmax and P x V
@st.composite
def softmax_rows_case(draw):
    """A configuration with any ``prob_frac`` (the default 12 and the limits drawn often), a
    row length up to 512, and one row of kept / dropped scores spread over a few exponent
    steps (so that small probabilities round both to 0 and to 1 LSB)."""
    prob_frac = draw(st.one_of(st.sampled_from([1, 8, 12, 16]), st.integers(1, 16)))
    seq_len = draw(st.sampled_from([2, 7, 128, 500, 512]))
    n = draw(st.integers(1, seq_len))
    exp_bits = draw(st.sampled_from([12, 16, 24]))
    cfg = HDPConfig(seq_len=seq_len, prob_frac=prob_frac, exp_bits=exp_bits)
    spread = draw(st.sampled_from([0, 16, 256, 4096]))
    s = draw(hnp.arrays(np.int64, (1, n), elements=st.integers(-spread * 8, 0)))
    keep = draw(hnp.arrays(np.bool_, (1, n)))
    return cfg, s, keep


@SETTINGS(300)
@given(softmax_rows_case())
def test_softmax_reciprocal_probabilities_and_pv_fit_their_widths(case):
    """``R = floor(2**(W+P+G) / sum)`` fits ``recip_width``; ``p = round(e R / 2**(W+G))`` is
    exactly that rounding, lies in ``[0, 2**P]`` (``prob_width`` bits) and a row sums to
    ``2**P`` within half an LSB per kept entry (at most ``prob_sum_max``); P x V of extreme V
    stays in ``pv_range`` and requantizes into ``out_range``."""
    cfg, s, keep = case
    W, P, G = cfg.exp_bits, cfg.prob_frac, cfg.recip_guard
    e = softmax.softmax_exponents(s, keep, cfg)
    p = softmax.softmax_rows(s, keep, cfg)
    total = int(e.sum())
    n_kept = int(keep.sum())
    if n_kept == 0:
        assert total == 0 and not p.any()
        return
    assert (1 << W) <= total < (1 << cfg.exp_sum_width)
    r = (1 << (W + P + G)) // total
    assert r < 1 << cfg.recip_width and cfg.recip_shift == W + P + G
    for ej, pj in zip(e[0].tolist(), p[0].tolist()):
        assert ej * r < 1 << (cfg.exp_value_width + cfg.recip_width)
        assert pj == math.floor(Fraction(ej * r, 1 << (W + G)) + Fraction(1, 2))
        assert 0 <= pj <= 1 << P < 1 << cfg.prob_width
    assert abs(int(p.sum()) - (1 << P)) <= Fraction(n_kept, 2)
    assert int(p.sum()) <= cfg.prob_sum_max
    lo, hi = cfg.v_range
    for v in (lo, hi):
        acc = pv.pv(p, np.full((s.shape[1], 1), v))
        assert cfg.pv_range[0] <= int(acc.min()) and int(acc.max()) <= cfg.pv_range[1]
        assert -(1 << (cfg.pv_width - 1)) <= int(acc.min()) <= int(acc.max()) < 1 << (cfg.pv_width - 1)
        out = pv.requantize(acc, cfg)
        assert cfg.out_range[0] <= int(out.min()) and int(out.max()) <= cfg.out_range[1]
