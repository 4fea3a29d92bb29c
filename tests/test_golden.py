"""The golden model: hand-computed cases for every function, and properties on seeded random data.

Hand cases state their arithmetic in comments so a reader can check them without running code.
Random properties run over the ``tiny``, ``odd`` and ``default`` presets; a failure message names
the preset, the seed and the first differing index.
"""

import copy
import math
from fractions import Fraction

import numpy as np
import pytest

from golden import approx, intmath, model, pruner, pv, reference, score, softmax, tables
from hw.presets import preset

TINY = preset("tiny")      # N 8, d 4, F 4, 2x2 blocks, E 5, W 12, P 8, out_frac 6
ODD = preset("odd")        # N 13, d 5, F 3, 3x2 blocks, threshold, causal
PRESETS = ["tiny", "odd", "default"]
SEEDS = [0, 1, 2]


# ============================================================================ intmath
def test_quantize_rounds_half_even_and_clamps():
    # at F = 4 one LSB is 1/16 = 0.0625
    x = [0.03125, 0.09375, -0.03125, -0.09375, 0.0625, 100.0, -100.0, 7.9375, -8.0]
    #    0.5->0   1.5->2    -0.5->0   -1.5->-2  1       clamp    clamp   127      -128
    assert intmath.quantize(np.array(x), 8, 4).tolist() == [0, 2, 0, -2, 1, 127, -128, 127, -128]
    assert intmath.quantize(np.array([3.5, 2.5]), 4, 0).tolist() == [4, 2]
    assert intmath.quantize(np.array([1.0]), 8, 4).dtype == np.int64


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="cannot quantize NaN or infinite values"):
        intmath.quantize(np.array([0.0, bad]), 8, 4)


def test_best_frac_bits():
    assert intmath.best_frac_bits(np.array([7.9]), 8) == 4     # 7.9*16 = 126.4 -> 126 fits; *32 clips
    assert intmath.best_frac_bits(np.array([-8.0]), 8) == 4    # -128 fits exactly
    assert intmath.best_frac_bits(np.array([8.0]), 8) == 3     # 128 clips at F=4
    assert intmath.best_frac_bits(np.array([0.1, -0.2]), 8) == 7  # 0.2*128 = 25.6: F = B-1
    assert intmath.best_frac_bits(np.array([1000.0]), 8) == 0  # even F = 0 clips
    assert intmath.best_frac_bits(np.array([]), 8) == 7


def test_split_int_frac():
    xq = np.array([-17, -16, -1, 0, 1, 15, 16, 17])
    xi, xf = intmath.split_int_frac(xq, 4)
    assert xi.tolist() == [-2, -1, -1, 0, 0, 0, 1, 1]
    assert xf.tolist() == [15, 0, 15, 0, 1, 15, 0, 1]
    allq = np.arange(-128, 128)
    xi, xf = intmath.split_int_frac(allq, 4)
    assert np.array_equal(xi * 16 + xf, allq) and xf.min() == 0 and xf.max() == 15
    assert xi.min() == -8 and xi.max() == 7


def test_shifts_and_saturate():
    assert intmath.shift_right_floor(np.array([-5, 5, -4]), 1).tolist() == [-3, 2, -2]
    # round half up: 2.5 -> 3, -2.5 -> -2, 0.75 -> 1, -0.75 -> -1, 1.5 -> 2, -1.25 -> -1
    assert intmath.shift_round_half_up(np.array([5, -5]), 1).tolist() == [3, -2]
    assert intmath.shift_round_half_up(np.array([3, -3, 6, -5]), 2).tolist() == [1, -1, 2, -1]
    assert intmath.shift_round_half_up(np.array([3, -3]), 0).tolist() == [3, -3]
    assert intmath.shift_round_half_up(np.array([3, -3]), -2).tolist() == [12, -12]
    assert intmath.saturate(np.array([200, -200, 5, 127, -128]), 8).tolist() == [127, -128, 5, 127, -128]


# ============================================================================ tables
def test_softmax_constants_tiny_by_hand():
    k = tables.softmax_constants(TINY)
    # log2(e) / sqrt(4) * 2**(16 + 5 - 8) = 0.7213475 * 8192 = 5909.28 -> 5909
    assert k.scale == 5909 and k.scale_shift == 16
    # smallest delta with t >= (W + 1) << E = 13 * 32 = 416: ceil(416 * 65536 / 5909) = 4614
    assert k.delta_max == 4614
    assert (4614 * 5909) >> 16 >= 416 > (4613 * 5909) >> 16
    # exp_lut[f] = round(2**(12 - f/32)): f=0 -> 4096, f=16 -> round(2896.31) = 2896
    assert len(k.exp_lut) == 32 and k.exp_lut[0] == 4096 and k.exp_lut[16] == 2896
    assert all(a > b for a, b in zip(k.exp_lut, k.exp_lut[1:]))
    assert k.delta_width == 13 and k.scale_width == 13 and k.t_width == 9


def test_softmax_constants_reject_zero_scale():
    # the configuration refuses it first; the table generator keeps its own check for
    # objects that bypass validation
    with pytest.raises(ValueError, match="exp_frac must be >= "):
        TINY.replace(qk_bits=16, qk_frac=15, head_dim=1024, exp_frac=0)
    ok = TINY.replace(qk_bits=16, qk_frac=10, head_dim=1024, exp_frac=9)
    bad = copy.copy(ok)
    object.__setattr__(bad, "exp_frac", 0)
    with pytest.raises(ValueError, match="exp_frac = 0 is too small for qk_frac = 10"):
        tables.softmax_constants(bad)


# ============================================================================ score and approx
# d = 2, F = 4.  q = [20, -3]: 20 = 1*16 + 4 -> (I 1, F 4); -3 = -1*16 + 13 -> (I -1, F 13)
#                k = [-17, 33]: -17 = -2*16 + 15 -> (I -2, F 15); 33 = 2*16 + 1 -> (I 2, F 1)
Q1, K1 = np.array([[20, -3]]), np.array([[-17, 33]])


def test_integer_cross_ff_terms_by_hand():
    qi, qf = intmath.split_int_frac(Q1, 4)
    ki, kf = intmath.split_int_frac(K1, 4)
    assert score.integer_scores(qi, ki).tolist() == [[1 * -2 + -1 * 2]]            # -4
    assert score.cross_terms(qi, qf, ki, kf).tolist() == [[1 * 15 + 4 * -2 + -1 * 1 + 13 * 2]]  # 32
    assert score.ff_terms(qf, kf).tolist() == [[4 * 15 + 13 * 1]]                  # 73
    # 256 * -4 + 16 * 32 + 73 = -439 = 20 * -17 + -3 * 33
    assert (Q1 @ K1.T).tolist() == [[-439]]


def test_approx_scores_by_hand():
    cfg = TINY.replace(head_dim=2)
    assert approx.approx_scores([[-4]], [[32]], [[73]], cfg).tolist() == [[-512]]  # -1024 + 512
    assert approx.approx_scores([[-4]], [[32]], [[73]], cfg.replace(approx="exact")).tolist() == [[-439]]
    # comp adds each key's ((2^F - 1) * sum_d k_F) >> 1 to drop_ff (here F = 2)
    cfg = cfg.replace(qk_frac=2)
    comp = approx.key_compensation(np.array([[3, 2], [0, 1], [3, 3]]), cfg)
    assert comp.tolist() == [(3 * 5) >> 1, (3 * 1) >> 1, (3 * 6) >> 1] == [7, 1, 9]
    s = approx.approx_scores([[-4, 0, 1]], [[32, 0, 2]], [[73, 5, 5]], cfg.replace(approx="comp"),
                             comp)
    # -4 << 4 + 32 << 2 = 64, 0, 16 + 8; plus 7, 1, 9
    assert s.tolist() == [[-64 + 128 + 7, 0 + 1, 16 + 8 + 9]]
    with pytest.raises(ValueError, match="comp"):
        approx.approx_scores([[1]], [[1]], [[1]], cfg.replace(approx="comp"))


def test_comp_recovers_most_of_drop_ff_on_real_heads():
    """On real MiniLM heads the compensated score is nearer the exact score than drop_ff (the
    mean error of drop_ff is the mean C; comp removes most of it)."""
    from sim.fixtures import load_fixture
    fx = load_fixture("long")
    n = fx["q"].shape[1]
    base = preset("default").replace(seq_len=n, prune_mode="off")
    err = {"drop_ff": [], "comp": []}
    for h in range(0, fx["q"].shape[0], 7):
        q, k, v = fx["q"][h], fx["k"][h], fx["v"][h]
        ex = model.attention_head(q, k, v, base.replace(approx="exact"))
        for mode in err:
            r = model.attention_head(q, k, v, base.replace(approx=mode))
            err[mode].append(np.abs(r.scores - ex.scores)[ex.entry_keep].mean())
    assert np.mean(err["comp"]) < 0.5 * np.mean(err["drop_ff"]), err


# ============================================================================ pruner
def test_entry_mask():
    assert pruner.entry_mask(3, 2, False).astype(int).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    assert pruner.entry_mask(3, 2, True).astype(int).tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert pruner.entry_mask(2, 2, True).astype(int).tolist() == [[1, 0], [1, 1]]


def test_block_grid_and_expand():
    assert pruner.block_grid(5, TINY) == (3, 3)
    assert pruner.block_grid(13, ODD) == (5, 7)
    e = pruner.expand_blocks(np.array([[1, 0], [0, 1]], bool), 3, TINY)
    assert e.astype(int).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


A3 = np.array([[1, -5, 2], [3, 4, -1], [-2, 0, 7]])


@pytest.mark.parametrize("criterion,expected", [
    # blocks (2x2, N = 3): (0,0) = [1,-5,3,4]; (0,1) = [2,-1]; (1,0) = [-2,0]; (1,1) = [7]
    ("abs_sum", [[13, 3], [2, 7]]),
    ("sum", [[3, 1], [-2, 7]]),
    ("max", [[4, 2], [0, 7]]),
])
def test_block_importance_by_hand(criterion, expected):
    cfg = TINY.replace(criterion=criterion)
    imp, valid = pruner.block_importance(A3, pruner.entry_mask(3, 3, False), cfg)
    assert imp.tolist() == expected and valid.all()
    # valid_len = 2: only block (0, 0) is valid; the others read 0
    imp, valid = pruner.block_importance(A3, pruner.entry_mask(3, 2, False), cfg)
    assert valid.tolist() == [[True, False], [False, False]]
    assert imp.tolist() == [[expected[0][0], 0], [0, 0]]


def test_block_importance_causal_and_negative_max():
    cfg = TINY.replace(criterion="max")
    a = np.array([[-3, 9], [-1, -7]])
    # causal masks (0, 1) = 9: the block's valid entries are -3, -1, -7 -> signed max -1
    imp, valid = pruner.block_importance(a, pruner.entry_mask(2, 2, True), cfg)
    assert imp.tolist() == [[-1]] and valid.tolist() == [[True]]
    imp, _ = pruner.block_importance(a, pruner.entry_mask(2, 2, True), cfg.replace(criterion="abs_sum"))
    assert imp.tolist() == [[11]]


def test_head_importance_and_keep():
    assert pruner.head_importance(A3, pruner.entry_mask(3, 3, False)) == 25  # 1+5+2+3+4+1+2+0+7
    assert pruner.head_importance(A3, pruner.entry_mask(3, 2, False)) == 13  # 1+5+3+4
    assert pruner.head_importance(A3, pruner.entry_mask(3, 3, True)) == 1 + 3 + 4 + 2 + 0 + 7
    assert pruner.head_keep(0, TINY.replace(tau_head=100))  # head pruning off: always kept
    on = TINY.replace(head_prune=True, tau_head=25)
    assert pruner.head_keep(25, on) and not pruner.head_keep(24, on)  # kept when H >= tau


def test_diagonal_blocks_by_hand():
    # odd: 3x2 blocks; query i's own key sits in block (i // 3, i // 2)
    d = pruner.diagonal_blocks(7, 7, ODD)
    want = {(0, 0), (0, 1), (1, 1), (1, 2), (2, 3)}  # i = 0..6
    assert {tuple(x) for x in np.argwhere(d)} == want
    d = pruner.diagonal_blocks(7, 4, ODD)  # only i < 4
    assert {tuple(x) for x in np.argwhere(d)} == {(0, 0), (0, 1), (1, 1)}
    assert pruner.diagonal_blocks(4, 4, TINY).astype(int).tolist() == [[1, 0], [0, 1]]


def test_row_budget_is_the_rounded_up_fraction_of_valid_blocks():
    assert pruner.row_budget(192, 64) == 48       # 0.75 of 64
    assert pruner.row_budget(192, 15) == 12       # ceil(11.25)
    assert pruner.row_budget(192, 1) == 1
    assert pruner.row_budget(1, 256) == 1 and pruner.row_budget(1, 257) == 2
    assert pruner.row_budget(256, 7) == 7 and pruner.row_budget(511, 7) == 14
    assert pruner.row_budget(0, 7) == 0 and pruner.row_budget(192, 0) == 0
    for q in range(0, 300, 7):
        for n in range(0, 70):
            assert pruner.row_budget(q, n) == math.ceil(q * n / 256)


def test_topk_by_hand_ties_and_diagonal():
    imp = np.array([[5, 9, 9, 1, 9]])
    valid = np.ones((1, 5), bool)
    diag = np.array([[True, False, False, False, False]])
    # 5 valid blocks; k_frac_q = 128: ceil(2.5) = 3: diagonal + the two largest others; three
    # 9s tie -> lower columns 1, 2
    assert pruner.topk_keep(imp, valid, diag, 128).astype(int).tolist() == [[1, 1, 1, 0, 0]]
    assert pruner.topk_keep(imp, valid, diag, 103).astype(int).tolist() == [[1, 1, 1, 0, 0]]
    assert pruner.topk_keep(imp, valid, diag, 102).astype(int).tolist() == [[1, 1, 0, 0, 0]]
    assert pruner.topk_keep(imp, valid, diag, 1).astype(int).tolist() == [[1, 0, 0, 0, 0]]
    assert pruner.topk_keep(imp, valid, diag, 256).astype(int).tolist() == [[1, 1, 1, 1, 1]]
    # invalid blocks are never kept and do not count: 3 valid, ceil(3 * 0.75) = 3 keeps them all
    valid2 = np.array([[True, True, False, True, False]])
    assert pruner.topk_keep(imp, valid2, diag, 192).astype(int).tolist() == [[1, 1, 0, 1, 0]]
    # ... and ceil(3 * 0.5) = 2: the diagonal and the 9
    assert pruner.topk_keep(imp, valid2, diag, 128).astype(int).tolist() == [[1, 1, 0, 0, 0]]
    # two diagonal blocks with a budget of 1: both kept
    diag2 = np.array([[True, False, False, True, False]])
    assert pruner.topk_keep(imp, valid, diag2, 1).astype(int).tolist() == [[1, 0, 0, 1, 0]]
    # diagonal counts against the budget: ceil(5 * 0.5) = 3 adds only the first 9
    assert pruner.topk_keep(imp, valid, diag2, 128).astype(int).tolist() == [[1, 1, 0, 1, 0]]
    # rows have their own budgets: a causal-like row with 2 valid blocks keeps ceil(2 * 0.75) = 2
    imp3 = np.array([[5, 9, 9, 1, 9], [3, 4, 0, 0, 0]])
    valid3 = np.array([[True] * 5, [True, True, False, False, False]])
    diag3 = np.array([[True, False, False, False, False], [False, True, False, False, False]])
    assert pruner.topk_keep(imp3, valid3, diag3, 192).astype(int).tolist() == \
        [[1, 1, 1, 0, 1], [1, 1, 0, 0, 0]]


def test_threshold_by_hand():
    imp = np.array([[10, 2, 6, 0]])
    valid = np.ones((1, 4), bool)
    nod = np.zeros((1, 4), bool)
    P = 8
    # max 10, mean 4.5: rho 0.5 -> 7.25 keeps only 10; rho 0 -> 4.5 keeps 10, 6; rho 1 -> 10 only
    assert pruner.threshold_keep(imp, valid, nod, 128, P).astype(int).tolist() == [[1, 0, 0, 0]]
    assert pruner.threshold_keep(imp, valid, nod, 0, P).astype(int).tolist() == [[1, 0, 1, 0]]
    assert pruner.threshold_keep(imp, valid, nod, 256, P).astype(int).tolist() == [[1, 0, 0, 0]]
    # equality keeps: [4, 2, 0] with rho 0 -> threshold = mean = 2 -> keeps 4 and 2
    eq = np.array([[4, 2, 0]])
    assert pruner.threshold_keep(eq, np.ones((1, 3), bool), np.zeros((1, 3), bool), 0, P) \
        .astype(int).tolist() == [[1, 1, 0]]
    # signed importances: [-4, -2, -6], rho 0.5: max -2, mean -4 -> threshold -3 keeps -2
    neg = np.array([[-4, -2, -6]])
    assert pruner.threshold_keep(neg, np.ones((1, 3), bool), np.zeros((1, 3), bool), 128, P) \
        .astype(int).tolist() == [[0, 1, 0]]
    # the diagonal is kept whatever its importance; invalid blocks neither count nor are kept
    dg = np.array([[False, False, False, True]])
    v2 = np.array([[True, True, True, True]])
    assert pruner.threshold_keep(imp, v2, dg, 128, P).astype(int).tolist() == [[1, 0, 0, 1]]
    v3 = np.array([[False, True, True, True]])   # without 10: max 6, mean 8/3, rho .5 -> 4.33
    assert pruner.threshold_keep(imp, v3, nod, 128, P).astype(int).tolist() == [[0, 0, 1, 0]]


def test_block_keep_modes():
    imp = np.array([[3, 1], [0, 5]])
    valid = np.array([[True, True], [False, True]])
    diag = np.array([[True, False], [False, True]])
    assert pruner.block_keep(imp, valid, diag, TINY.replace(prune_mode="off")).tolist() == valid.tolist()
    assert pruner.block_keep(imp, valid, diag, TINY.replace(prune_mode="topk", k_frac=0.5)) \
        .astype(int).tolist() == [[1, 0], [0, 1]]
    assert pruner.block_keep(imp, valid, diag, TINY.replace(prune_mode="threshold", rho=0.0)) \
        .astype(int).tolist() == [[1, 0], [0, 1]]  # row 0: mean 2 -> 3 kept, 1 not


# ============================================================================ softmax
def test_softmax_by_hand_tiny():
    # tiny: W = 12, P = 8, G = clog2(8) + 2 = 5; scale 5909
    keep2 = np.ones((1, 2), bool)
    # equal scores: e = [4096, 4096], sum 8192, R = 2**25 // 8192 = 4096,
    # p = (4096 * 4096 + 2**16) >> 17 = floor(128.5) = 128
    assert softmax.softmax_exponents(np.zeros((1, 2), np.int64), keep2, TINY).tolist() == [[4096, 4096]]
    assert softmax.softmax_rows(np.zeros((1, 2), np.int64), keep2, TINY).tolist() == [[128, 128]]
    # one kept entry: e = 4096, R = 2**25 // 4096 = 8192, p = (2**25 + 2**16) >> 17 = 256 = 1.0
    assert softmax.softmax_rows(np.array([[7, 3]]), np.array([[True, False]]), TINY).tolist() == [[256, 0]]
    # delta 355: t = (355 * 5909) >> 16 = 32 = 1.0 (E = 5) -> e = lut[0] >> 1 = 2048
    # sum 6144, R = 2**25 // 6144 = 5461; p = (4096*5461 + 65536) >> 17 = 171,
    # (2048 * 5461 + 65536) >> 17 = 85.  Float: 2/3 and 1/3 of 256 = 170.7, 85.3
    s = np.array([[355, 0]])
    assert softmax.softmax_exponents(s, keep2, TINY).tolist() == [[4096, 2048]]
    assert softmax.softmax_rows(s, keep2, TINY).tolist() == [[171, 85]]
    # delta 177: t = (177 * 5909) >> 16 = 15 -> e = lut[15] = round(2**(12 - 15/32)) = round(2959.7) = 2960
    assert softmax.softmax_exponents(np.array([[177, 0]]), keep2, TINY).tolist() == [[4096, 2960]]
    # a huge delta is clamped to delta_max and gives exponent 0
    assert softmax.softmax_rows(np.array([[10**9, 0]]), keep2, TINY).tolist() == [[256, 0]]
    # no kept entry: all zero
    assert softmax.softmax_rows(np.array([[1, 2]]), np.zeros((1, 2), bool), TINY).tolist() == [[0, 0]]


# ============================================================================ pv and requantize
def test_pv_and_requantize_by_hand():
    # p = [0.5, 0.5] (P = 8); v rows [1.0, -2.0] and [3.0, 0.0] at v_frac 4
    p = np.array([[128, 128]])
    v = np.array([[16, -32], [48, 0]])
    acc = pv.pv(p, v)
    assert acc.tolist() == [[8192, -4096]]        # 12 fraction bits: 2.0, -1.0
    # out_frac 6 -> out_shift 8 + 4 - 6 = 6: 8192 / 64 = 128 = 2.0; -4096 / 64 = -64 = -1.0
    assert pv.requantize(acc, TINY).tolist() == [[128, -64]]
    # round half up at the shift, then saturate to 12 bits
    assert pv.requantize(np.array([32, -32, 31, 96, 1 << 20, -(1 << 20)]), TINY).tolist() == \
        [1, 0, 0, 2, 2047, -2048]
    # a negative out_shift shifts left: out_frac 15 with P 8 + v_frac 4 = 12
    assert pv.requantize(np.array([3]), TINY.replace(out_bits=20, out_frac=15)).tolist() == [24]


# ============================================================================ model (end to end)
def test_model_single_token_by_hand():
    cfg = TINY.replace(prune_mode="off")
    q = k = np.array([[16, 0, 0, 0]])
    v = np.array([[16, 32, -16, 0]])   # 1.0, 2.0, -1.0, 0.0
    r = model.attention_head_int(q, k, v, cfg)
    assert r.a.tolist() == [[1]] and r.probs.tolist() == [[256]]
    assert r.out_int.tolist() == [[64, 128, -64, 0]]  # out_frac 6
    assert r.stats["kept_entries"] == 1 and r.stats["mac_pv"] == 4 and r.stats["mac_ff"] == 0


def test_model_chain_matches_its_parts():
    rng = np.random.default_rng(7)
    cfg = TINY.replace(approx="exact", prune_mode="topk", k_frac=0.5)
    q, k, v = (rng.integers(-128, 128, (6, 4)) for _ in range(3))
    r = model.attention_head_int(q, k, v, cfg, valid_len=5)
    qi, qf = intmath.split_int_frac(q, 4)
    ki, kf = intmath.split_int_frac(k, 4)
    a = score.integer_scores(qi, ki)
    mask = pruner.entry_mask(6, 5, False)
    imp, valid = pruner.block_importance(a, mask, cfg)
    keep = pruner.topk_keep(imp, valid, pruner.diagonal_blocks(6, 5, cfg), 128)
    ek = pruner.expand_blocks(keep, 6, cfg) & mask
    s = np.where(ek, q @ k.T, 0)
    assert np.array_equal(r.scores, s)
    assert np.array_equal(r.out_int, pv.requantize(pv.pv(softmax.softmax_rows(s, ek, cfg), v), cfg))
    assert not r.out_int[5:].any()  # padding query rows give zeros


def test_attention_many_heads_and_summary():
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(0, 1.5, (3, 8, 4)).astype(np.float32) for _ in range(3))
    res = model.attention(q, k, v, TINY, valid_len=7)
    assert res["out_int"].shape == (3, 8, 4) and res["out"].dtype == np.float32
    assert res["block_keep"].shape == (3, 4, 4) and res["head_keep"].tolist() == [True] * 3
    assert np.array_equal(res["out"], res["out_int"] / np.float32(64))
    st = res["stats"]
    assert st["heads"] == 3 and st["valid_pairs"] == 3 * 49
    assert st["blocks_valid"] == 3 * 16 and st["blocks_kept"] == 3 * 8  # k_frac = 0.5 of 4 per row
    assert st["kept_block_fraction"] == 0.5
    assert st["mac_dense_qk"] == st["mac_integer_pass"] == 3 * 49 * 4
    assert st["mac_fine_vs_dense"] == 2 * st["mac_pv"] / (2 * 3 * 49 * 4)
    # every head kept: the fine pass is exactly the kept share of the valid score entries
    assert st["mac_fine_vs_dense"] == pytest.approx(st["kept_entry_fraction"])
    exact_off = model.attention(q, k, v, TINY.replace(prune_mode="off", approx="exact"), 7)["stats"]
    assert exact_off["mac_fine_vs_dense"] == 1.0  # dense work, not more
    h = model.attention_head(q[1], k[1], v[1], TINY, 7)
    assert np.array_equal(h.out_int, res["out_int"][1])


def test_float_reference_by_hand():
    q = np.array([[1.0, 0.0]])
    k = np.array([[0.0, 0.0], [np.sqrt(2) * np.log(3), 0.0]])   # scores 0 and ln 3 after /sqrt(2)
    v = np.array([[4.0, 0.0], [0.0, 8.0]])
    q2 = np.vstack([q, q])
    out = reference.float_attention_head(q2, k, v)  # p = [1/4, 3/4]
    assert np.allclose(out, [[1.0, 6.0], [1.0, 6.0]])
    out = reference.float_attention_head(q2, k, v, valid_len=1)  # only key 0, only row 0
    assert np.allclose(out, [[4.0, 0.0], [0.0, 0.0]])
    out = reference.float_attention_head(q2, k, v, causal=True)  # row 0 sees key 0 only
    assert np.allclose(out, [[4.0, 0.0], [1.0, 6.0]])
    assert reference.float_attention(q2[None], k[None], v[None]).shape == (1, 2, 2)


# ============================================================================ rejected inputs
def test_rejects_bad_inputs():
    z = np.zeros((4, 4), np.int64)
    with pytest.raises(ValueError, match=r"quantized q must be in \[-128, 127\]"):
        model.attention_head_int(z + 128, z, z, TINY)
    with pytest.raises(ValueError, match=r"quantized v must be in \[-128, 127\]"):
        model.attention_head_int(z, z, z - 129, TINY)
    with pytest.raises(ValueError, match="quantized k must be an integer array, not float64"):
        model.attention_head_int(z, z + 0.5, z, TINY)
    with pytest.raises(ValueError, match="head dimension must equal head_dim = 4, not 3"):
        model.attention_head_int(z[:, :3], z[:, :3], z[:, :3], TINY)
    with pytest.raises(ValueError, match=r"sequence length must be in \[1, seq_len\] = \[1, 8\], not 9"):
        model.attention_head_int(np.zeros((9, 4), int), np.zeros((9, 4), int), np.zeros((9, 4), int), TINY)
    with pytest.raises(ValueError, match="q, k, v must share one shape"):
        model.attention_head_int(z, z[:3], z, TINY)
    for vl in (0, 5):
        with pytest.raises(ValueError, match=rf"valid_len must be in \[1, N\] = \[1, 4\], not {vl}"):
            model.attention_head_int(z, z, z, TINY, valid_len=vl)
    f = np.zeros((4, 4))
    f[2, 1] = np.nan
    with pytest.raises(ValueError, match="cannot quantize NaN"):
        model.attention_head(f, f * 0, f * 0, TINY)
    with pytest.raises(ValueError, match=r"must have shape \(H, N, d\)"):
        model.attention(f, f, f, TINY)


# ============================================================================ random properties
def _random_head(name, seed, **changes):
    """A random head: a random valid_len and values spread over the whole 8-bit range."""
    rng = np.random.default_rng(seed)
    cfg = preset(name).replace(**changes)
    n = int(rng.integers(1, cfg.seq_len + 1)) if seed % 2 else cfg.seq_len
    vl = int(rng.integers(1, n + 1))
    lo, hi = -(1 << (cfg.qk_bits - 1)), 1 << (cfg.qk_bits - 1)
    q, k = (rng.integers(lo, hi, (n, cfg.head_dim)) for _ in range(2))
    v = rng.integers(-(1 << (cfg.v_bits - 1)), 1 << (cfg.v_bits - 1), (n, cfg.head_dim))
    return cfg, q, k, v, vl


def _where(label, got, want):
    idx = tuple(int(i) for i in np.argwhere(np.asarray(got) != np.asarray(want))[0])
    return f"{label}: first difference at {idx}: expected {np.asarray(want)[idx]}, got {np.asarray(got)[idx]}"


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("causal", [False, True])
def test_topk_keeps_exactly_min_k_row_valid(name, seed, causal):
    for crit in ("abs_sum", "sum", "max"):
        for k_frac in (1 / 256, 0.25, 0.5, 0.75, 191 / 256, 1.0):
            cfg, q, k, v, vl = _random_head(name, seed, prune_mode="topk", k_frac=k_frac,
                                            criterion=crit, causal=causal)
            r = model.attention_head_int(q, k, v, cfg, vl)
            label = (f"preset={name} seed={seed} causal={causal} criterion={crit} k_frac={k_frac} "
                     f"valid_len={vl}")
            for row in range(r.block_valid.shape[0]):
                nv = int(r.block_valid[row].sum())
                nd = int((r.diag[row] & r.block_valid[row]).sum())
                k_row = math.ceil(k_frac * nv)   # a fraction of this row's valid blocks
                kept = r.block_keep[row]
                assert int(kept.sum()) == max(nd, min(k_row, nv)), f"{label} row={row}"
                if k_row >= nd:
                    assert int(kept.sum()) == min(k_row, nv), f"{label} row={row}"
                assert not (kept & ~r.block_valid[row]).any(), label
                # every dropped valid block ranks below every kept non-diagonal block
                # (equal importance: the kept one has the lower column)
                others = [c for c in range(kept.size) if kept[c] and not r.diag[row, c]]
                for c in range(kept.size):
                    if r.block_valid[row, c] and not kept[c]:
                        for o in others:
                            assert (r.importance[row, o], -o) > (r.importance[row, c], -c), \
                                f"{label} row={row}: dropped col {c} outranks kept col {o}"


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", SEEDS)
def test_threshold_equals_exact_rational_rule(name, seed):
    for crit in ("abs_sum", "sum", "max"):
        for rho in (0.0, 0.25, 0.375, 0.5, 1.0):
            cfg, q, k, v, vl = _random_head(name, seed, prune_mode="threshold", rho=rho,
                                            criterion=crit)
            r = model.attention_head_int(q, k, v, cfg, vl)
            for row in range(r.block_valid.shape[0]):
                cols = np.nonzero(r.block_valid[row])[0]
                if cols.size == 0:
                    assert not r.block_keep[row].any()
                    continue
                vals = [Fraction(int(r.importance[row, c])) for c in cols]
                thr = Fraction(rho) * max(vals) + (1 - Fraction(rho)) * sum(vals) / len(vals)
                for c, val in zip(cols, vals):
                    want = val >= thr or bool(r.diag[row, c])
                    assert bool(r.block_keep[row, c]) == want, (
                        f"preset={name} seed={seed} criterion={crit} rho={rho} valid_len={vl} "
                        f"row={row} col={c}: I={val} threshold={thr} expected keep={want}")


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["off", "topk", "threshold"])
def test_diagonal_always_kept(name, seed, mode):
    cfg, q, k, v, vl = _random_head(name, seed, prune_mode=mode, k_frac=1 / 256, rho=1.0, causal=seed == 1)
    r = model.attention_head_int(q, k, v, cfg, vl)
    assert (r.block_keep | ~r.diag).all()
    i = np.arange(vl)
    assert r.entry_keep[i, i].all()              # every valid query keeps its own key
    assert (r.entry_keep.sum(axis=1)[:vl] >= 1).all()


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", SEEDS)
def test_pruning_off_exact_gives_integer_dot_products(name, seed):
    for causal in (False, True):
        cfg, q, k, v, vl = _random_head(name, seed, prune_mode="off", approx="exact", causal=causal)
        r = model.attention_head_int(q, k, v, cfg, vl)
        m = r.mask
        want = q @ k.T
        assert np.array_equal(r.entry_keep, m)
        assert np.array_equal(r.scores[m], want[m]), \
            _where(f"preset={name} seed={seed}", r.scores * m, want * m)
        # and the decomposition holds everywhere, drop_ff being exact minus C
        f = cfg.qk_frac
        assert np.array_equal((r.a << (2 * f)) + (r.x << f) + r.c, want)
        d = model.attention_head_int(q, k, v, cfg.replace(approx="drop_ff"), vl)
        assert np.array_equal(d.scores[m], (want - r.c)[m])


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", SEEDS)
def test_pruned_head_outputs_zeros(name, seed):
    cfg, q, k, v, vl = _random_head(name, seed)
    h = model.attention_head_int(q, k, v, cfg, vl).head_importance
    assert h <= cfg.h_max
    pruned = model.attention_head_int(q, k, v, cfg.replace(head_prune=True, tau_head=h + 1), vl)
    assert not pruned.head_keep and not pruned.block_keep.any() and not pruned.entry_keep.any()
    assert not pruned.out_int.any() and not pruned.probs.any()
    assert pruned.stats["mac_cross"] == pruned.stats["mac_pv"] == pruned.stats["mac_ff"] == 0
    assert pruned.stats["mac_integer_pass"] > 0
    kept = model.attention_head_int(q, k, v, cfg.replace(head_prune=True, tau_head=h), vl)
    assert kept.head_keep and kept.block_keep.any()


def _softmax_error_bound(cfg, n):
    """Bound on |p / 2**P - p_float| for one entry of a row with ``n`` kept entries.

    Every exponent is inflated by a factor in [1, r] with r = 2**(2**-E + eps): ``t`` is floored
    (up to 2**-E in log2) and ``scale`` is rounded (relative 0.5/scale on t, at most
    ``t_max * 0.5 / scale`` units of 2**-E); ratios of inflated terms are off by at most a factor
    r, so by at most (r - 1) absolute.  The table rounds by 1/2 and the shift floors by < 1, both
    in units of 2**-W of the row maximum: n * 1.5 * 2**-W over the row sum.  The reciprocal floor
    and the final rounding add at most 2**-P."""
    k = tables.softmax_constants(cfg)
    t_max = (cfg.exp_bits + 1) << cfg.exp_frac
    eps = t_max * 0.5 / k.scale / (1 << cfg.exp_frac)
    r = 2.0 ** (2.0 ** -cfg.exp_frac + eps)
    return (r - 1) + n * 1.5 * 2.0 ** -cfg.exp_bits + 2.0 ** -cfg.prob_frac


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_sum_and_float_accuracy(name, seed):
    """Row sums: ``|sum_j p_j - 2**P| <= n_kept / 2`` (each of the n_kept roundings moves at
    most half an LSB, and the reciprocal's floor loses < n/2**G <= 1/4 LSB).  Entries: within
    :func:`_softmax_error_bound` of a float64 softmax of the same integer scores."""
    cfg, q, k, v, vl = _random_head(name, seed, prune_mode="topk", k_frac=0.5)
    # realistic score spreads: scale Q down so softmax rows are not one-hot
    q = q // 4
    r = model.attention_head_int(q, k, v, cfg, vl)
    one = 1 << cfg.prob_frac
    worst_sum = worst = 0.0
    for i in range(vl):
        kept = r.entry_keep[i]
        n = int(kept.sum())
        total = int(r.probs[i].sum())
        assert abs(total - one) <= n / 2, f"preset={name} seed={seed} row={i}: sum {total}"
        worst_sum = max(worst_sum, abs(total - one))
        s = r.scores[i, kept] / float(1 << (2 * cfg.qk_frac)) / math.sqrt(cfg.head_dim)
        pf = np.exp(s - s.max())
        pf /= pf.sum()
        err = np.abs(r.probs[i, kept] / one - pf)
        bound = _softmax_error_bound(cfg, n)
        assert err.max() <= bound, (f"preset={name} seed={seed} row={i}: softmax error "
                                    f"{err.max():.5f} > bound {bound:.5f}")
        worst = max(worst, float(err.max()))
    assert not r.probs[vl:].any()


def test_softmax_error_bound_values():
    # the bounds the previous test applies, so a reader sees their size: default (E 5, W 16,
    # P 12) and odd (E 3, W 11, P 7), for a row of 64 kept entries; the default's bound is
    # almost all the exponent's 2**-E step now (P 8 added 2**-8: 0.0304)
    assert 0.026 < _softmax_error_bound(preset("default"), 64) < 0.027
    assert 0.1 < _softmax_error_bound(preset("odd"), 13) < 0.12


@pytest.mark.parametrize("name", PRESETS)
def test_quantize_then_model_equals_int_model(name):
    cfg = preset(name)
    rng = np.random.default_rng(11)
    q, k, v = (rng.normal(0, 2, (cfg.seq_len, cfg.head_dim)) for _ in range(3))
    a = model.attention_head(q, k, v, cfg)
    b = model.attention_head_int(*model.quantize_qkv(q, k, v, cfg), cfg)
    assert np.array_equal(a.out_int, b.out_int) and np.array_equal(a.block_keep, b.block_keep)
