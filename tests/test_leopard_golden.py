"""The LeOPArd bit-serial front end's golden model (golden/leopard.py): a hand-computed entry,
the exactness properties against an independent oracle, a pure-Python bit-by-bit reference,
the unpruned HDP exact path, real MiniLM heads, and broken variants the checks must catch."""

import importlib
import math
import re
from decimal import Decimal, getcontext
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden import leopard as lp
from golden import model, score
from golden.approx import approx_scores
from golden.intmath import split_int_frac
from golden.pruner import entry_mask
from hw.presets import preset


# ------------------------------------------------------------------------------ oracle
def bit_weight(t: int, bits: int) -> int:
    """Two's complement weight of bit t of a B-bit number."""
    return -(1 << (bits - 1)) if t == bits - 1 else 1 << t


def oracle_partial_sums(q, k, bits):
    """P (N, N, B) accumulated bit by bit from the bit weights (not from the shift form)."""
    q, k = np.asarray(q, np.int64), np.asarray(k, np.int64)
    p = np.zeros((q.shape[0], k.shape[0], bits), np.int64)
    acc = np.zeros((q.shape[0], k.shape[0]), np.int64)
    for b in range(1, bits + 1):
        t = bits - b
        acc = acc + q @ (((k >> t) & 1) * bit_weight(t, bits)).T
        p[:, :, b - 1] = acc
    return p


def oracle_upper(q, k, bits):
    q = np.asarray(q, np.int64)
    qpos = np.clip(q, 0, None).sum(axis=1)
    tail = np.array([(1 << (bits - b)) - 1 for b in range(1, bits + 1)], np.int64)
    return oracle_partial_sums(q, k, bits) + tail[None, None, :] * qpos[:, None, None]


def check_front_end(fe, q, k, th, bits, valid_len, causal):
    """Every property of the front end's result, against values computed here."""
    q, k = np.asarray(q, np.int64), np.asarray(k, np.int64)
    n = q.shape[0]
    s = q @ k.T
    if isinstance(th, int):
        th_rows = np.full((n, 1), max(-lp.TH_LIMIT, min(lp.TH_LIMIT, th)), np.int64)
    else:
        th_rows = np.asarray(th, np.int64)[:, None]
    mask = entry_mask(n, valid_len, causal)
    diag = np.eye(n, dtype=bool) & (np.arange(n) < valid_len)[:, None]
    # the partial sums end on the exact score; the bounds hold at every bit
    p = lp.partial_sums(q, k, bits)
    assert np.array_equal(p, oracle_partial_sums(q, k, bits)), "partial sums"
    assert np.array_equal(p[:, :, -1], s), "P_B != q . k"
    u, lo = lp.upper_bounds(q, k, bits), lp.lower_bounds(q, k, bits)
    assert (u >= s[:, :, None]).all(), "U_b below the true score"
    assert (lo <= s[:, :, None]).all(), "L_b above the true score"
    assert np.array_equal(u[:, :, -1], s) and np.array_equal(lo[:, :, -1], s), "U_B, L_B != S"
    # decisions
    assert np.array_equal(fe.mask, mask) and np.array_equal(fe.diag, diag)
    assert np.array_equal(fe.exact, s)
    assert not (fe.terminated & (s >= th_rows)).any(), "terminated entry reaches th"
    assert np.array_equal(fe.entry_keep, mask & ((s >= th_rows) | diag)), "kept set"
    assert np.array_equal(fe.terminated, mask & ~diag & (s < th_rows))
    assert np.array_equal(fe.scores, np.where(fe.entry_keep, s, 0))
    assert (fe.bits[~mask] == 0).all(), "masked entries cost bits"
    assert ((fe.bits[mask] >= 1) & (fe.bits[mask] <= bits)).all(), "bits out of [1, B]"
    assert (fe.bits[diag] == bits).all(), "diagonal not computed fully"
    # the step is the first b where the tight bound (computed here) falls below th
    below = oracle_upper(q, k, bits) < th_rows[:, :, None]
    first = np.where(below.any(-1), below.argmax(-1) + 1, bits)
    want_bits = np.where(mask, np.where(diag, bits, first), 0)
    assert np.array_equal(fe.bits, want_bits), "termination step"
    st_ = lp.front_end_stats(fe)
    assert sum(st_["survival"]) == st_["bits_processed"] == int(fe.bits.sum())
    assert st_["survival"][0] == st_["valid_pairs"] == int(mask.sum())
    assert all(a >= b for a, b in zip(st_["survival"], st_["survival"][1:]))
    assert st_["bits_dense"] == st_["valid_pairs"] * bits
    assert st_["kept_entries"] == int(fe.entry_keep.sum())


def scalar_reference(q, k, th, bits, valid_len, causal):
    """Pure Python: one entry at a time, one bit at a time, exactly as an engine would."""
    n, d = len(q), len(q[0])
    th_rows = [th] * n if isinstance(th, int) else [int(x) for x in th]
    nbits = [[0] * n for _ in range(n)]
    term = [[False] * n for _ in range(n)]
    keep = [[False] * n for _ in range(n)]
    for i in range(n):
        qpos = sum(x for x in q[i] if x > 0)
        for j in range(n):
            if i >= valid_len or j >= valid_len or (causal and j > i):
                continue
            acc = 0
            for b in range(1, bits + 1):
                t = bits - b
                for m in range(d):
                    acc += q[i][m] * ((k[j][m] >> t) & 1) * bit_weight(t, bits)
                nbits[i][j] = b
                if i != j and acc + ((1 << t) - 1) * qpos < th_rows[i]:
                    term[i][j] = True
                    break
            keep[i][j] = not term[i][j]
            if not term[i][j]:
                assert acc == sum(q[i][m] * k[j][m] for m in range(d))
    return np.array(nbits), np.array(term), np.array(keep)


# ------------------------------------------------------------------------------ strategies
def fill(rng, mode, shape, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if mode == "min":
        return np.full(shape, lo, np.int64)
    if mode == "max":
        return np.full(shape, hi, np.int64)
    if mode == "zero":
        return np.zeros(shape, np.int64)
    if mode == "extremes":
        return rng.choice(np.array([lo, lo + 1, -1, 0, 1, hi], np.int64), size=shape)
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int64)


MODES = ["random", "random", "min", "max", "zero", "extremes"]


def make_case(rng, bits, n, d, qmode, kmode, th_kind):
    q, k = fill(rng, qmode, (n, d), bits), fill(rng, kmode, (n, d), bits)
    s = q @ k.T
    if th_kind == "score":       # right at a score: ties
        th = int(rng.choice(s.ravel())) + int(rng.integers(-1, 2))
    elif th_kind == "rows":      # per-query thresholds
        th = s[np.arange(n), rng.integers(0, n, n)] + rng.integers(-1, 2, n)
    elif th_kind == "huge":
        th = int(rng.choice([-(10 ** 30), 10 ** 30]))
    else:
        m = d << (2 * bits - 2)
        th = int(rng.integers(-m, m + 1))
    return q, k, th


case_args = st.tuples(st.integers(2, 16), st.integers(1, 7), st.integers(1, 9),
                      st.sampled_from(MODES), st.sampled_from(MODES),
                      st.sampled_from(["score", "score", "rows", "huge", "uniform"]),
                      st.booleans(), st.integers(0, 2 ** 32 - 1), st.integers(0, 6))


def run_case(args, check_reference=False):
    bits, n, d, qmode, kmode, th_kind, causal, seed, pad = args
    rng = np.random.default_rng(seed)
    q, k, th = make_case(rng, bits, n, d, qmode, kmode, th_kind)
    valid_len = max(1, n - pad)
    fe = lp.front_end(q, k, th, bits, valid_len, causal)
    if check_reference:
        compare_with_reference(fe, q, k, th, bits, valid_len, causal)
    else:
        check_front_end(fe, q, k, th, bits, valid_len, causal)


def compare_with_reference(fe, q, k, th, bits, valid_len, causal):
    nbits, term, keep = scalar_reference(q.tolist(), k.tolist(), th, bits, valid_len, causal)
    assert np.array_equal(fe.bits, nbits), "bits differ from the scalar reference"
    assert np.array_equal(fe.terminated, term), "terminated differs from the reference"
    assert np.array_equal(fe.entry_keep, keep), "keep differs from the scalar reference"


def seeded_cases(count, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield (int(rng.integers(2, 17)), int(rng.integers(1, 8)), int(rng.integers(1, 10)),
               str(rng.choice(MODES)), str(rng.choice(MODES)),
               str(rng.choice(["score", "score", "rows", "uniform"])), bool(rng.integers(2)),
               int(rng.integers(2 ** 32)), int(rng.integers(0, 7)))


# ------------------------------------------------------------------------------ tests
def test_hand_computed_entry():
    # B = 4, q = (3, -2), k = (5, -3) = (0101, 1101): S = 15 + 6 = 21, Qpos = 3.
    # P = 16 (bit 3: -2 * -8), 20 (bit 2: +12 - 8), 20 (bit 1: none), 21 (bit 0: +3 - 2)
    # U = 16 + 7*3 = 37, 20 + 3*3 = 29, 20 + 1*3 = 23, 21
    q = np.array([[3, -2], [1, 1]])
    k = np.array([[0, 0], [5, -3]])
    assert lp.partial_sums(q, k, 4)[0, 1].tolist() == [16, 20, 20, 21]
    assert lp.upper_bounds(q, k, 4)[0, 1].tolist() == [37, 29, 23, 21]
    assert lp.lower_bounds(q, k, 4)[0, 1].tolist() == [16 - 14, 20 - 6, 20 - 2, 21]
    # th -> (bits of (0, 1), terminated, kept): step of the first U_b < th, ties kept
    for th, want in ((38, (1, True, False)), (30, (2, True, False)), (24, (3, True, False)),
                     (22, (4, True, False)), (21, (4, False, True)), (-100, (4, False, True))):
        fe = lp.front_end(q, k, th, 4)
        assert (int(fe.bits[0, 1]), bool(fe.terminated[0, 1]), bool(fe.entry_keep[0, 1])) == want
        assert fe.entry_keep[0, 0] and fe.entry_keep[1, 1] and fe.bits[0, 0] == 4
    # (1, 0): q . 0 = 0, Qpos = 2, U = 14, 6, 2, 0: th = 7 stops it after 2 bits
    fe = lp.front_end(q, k, 7, 4)
    assert fe.bits[1, 0] == 2 and fe.terminated[1, 0]


def test_k_prefix_is_the_value_of_the_top_bits():
    k = np.array([5, -3, -8, 7, 0, -1])
    assert lp.k_prefix(k, 4, 0).tolist() == [0] * 6
    assert lp.k_prefix(k, 4, 1).tolist() == [0, -8, -8, 0, 0, -8]
    assert lp.k_prefix(k, 4, 2).tolist() == [4, -4, -8, 4, 0, -4]
    assert lp.k_prefix(k, 4, 4).tolist() == k.tolist()
    with pytest.raises(ValueError, match="b must be in"):
        lp.k_prefix(k, 4, 5)


def test_partial_sums_reconstruct_the_exact_scores():
    rng = np.random.default_rng(7)
    for bits in range(2, 17):
        lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
        q, k = rng.integers(lo, hi, (9, 5)), rng.integers(lo, hi, (9, 5))
        p = lp.partial_sums(q, k, bits)
        assert p.shape == (9, 9, bits)
        assert np.array_equal(p[:, :, -1], q @ k.T)
        assert np.array_equal(p, oracle_partial_sums(q, k, bits))
    # the widest case: B = 16, every operand -2**15, d = 64 (2**36, no overflow)
    q = k = np.full((3, 64), -(1 << 15))
    assert (lp.partial_sums(q, k, 16)[:, :, -1] == 64 << 30).all()


@settings(max_examples=400, deadline=None, derandomize=True)
@given(case_args)
def test_properties_hold_on_random_and_extreme_inputs(args):
    run_case(args)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(case_args)
def test_vectorized_equals_the_scalar_reference(args):
    run_case(args, check_reference=True)


def test_every_extreme_combination():
    rng = np.random.default_rng(3)
    for bits in (2, 3, 8, 16):
        for qmode in ("min", "max", "zero", "extremes"):
            for kmode in ("min", "max", "zero", "extremes"):
                for d in (1, 3, 64):
                    q, k, _ = make_case(rng, bits, 5, d, qmode, kmode, "uniform")
                    s = q @ k.T
                    for th in {int(s.min()), int(s.max()), int(s.max()) + 1, 0}:
                        for causal, vl in ((False, 5), (True, 5), (True, 3), (False, 1)):
                            fe = lp.front_end(q, k, th, bits, vl, causal)
                            check_front_end(fe, q, k, th, bits, vl, causal)


@pytest.mark.parametrize("variant", ["signed_sum", "zero_tail", "abs_sum", "negative_sum",
                                     "tail_two_pow", "sign_bit_positive"])
def test_broken_variants_are_caught(monkeypatch, variant):
    """Each deliberately wrong bound or bit weight makes the checks above fail (unsound bounds
    break exactness; sound but loose ones stop entries later than the tight bound)."""
    if variant == "signed_sum":
        monkeypatch.setattr(lp, "row_positive_sum", lambda q: np.asarray(q).sum(axis=-1))
    elif variant == "zero_tail":
        monkeypatch.setattr(lp, "row_positive_sum", lambda q: np.zeros(np.shape(q)[0], np.int64))
    elif variant == "abs_sum":
        monkeypatch.setattr(lp, "row_positive_sum", lambda q: np.abs(q).sum(axis=-1))
    elif variant == "negative_sum":
        monkeypatch.setattr(lp, "row_positive_sum", lp.row_negative_sum)
    elif variant == "tail_two_pow":
        monkeypatch.setattr(lp, "_tail", lambda bits: 1 << np.arange(bits - 1, -1, -1))
    else:
        def unsigned_prefix(k, bits, b):
            u = np.asarray(k, np.int64) & ((1 << bits) - 1)
            return (u >> (bits - b)) << (bits - b)
        monkeypatch.setattr(lp, "k_prefix", unsigned_prefix)
    with pytest.raises(AssertionError):
        for args in seeded_cases(200):
            run_case(args)
    if variant in ("signed_sum", "zero_tail", "negative_sum"):
        # unsound: the exactness property itself breaks (a terminated entry reaches th)
        wrong = 0
        for args in seeded_cases(200):
            bits, n, d, qmode, kmode, th_kind, causal, seed, pad = args
            q, k, th = make_case(np.random.default_rng(seed), bits, n, d, qmode, kmode, th_kind)
            fe = lp.front_end(q, k, th, bits, max(1, n - pad), causal)
            wrong += int((fe.terminated & (fe.exact >= fe.th[:, None])).sum())
        assert wrong > 0


def test_broken_bound_fails_the_hypothesis_property_test(monkeypatch):
    monkeypatch.setattr(lp, "row_positive_sum", lambda q: np.asarray(q).sum(axis=-1))
    with pytest.raises(AssertionError):
        test_properties_hold_on_random_and_extreme_inputs()


def test_broken_vectorized_rule_fails_the_scalar_reference(monkeypatch):
    """The reference comparison alone catches a loose bound (sum of |q|: still sound, so only
    the termination step differs)."""
    monkeypatch.setattr(lp, "row_positive_sum", lambda q: np.abs(q).sum(axis=-1))
    with pytest.raises(AssertionError, match="bits differ"):
        for args in seeded_cases(200):
            run_case(args, check_reference=True)


def random_head(cfg, rng):
    n, d = cfg.seq_len, cfg.head_dim
    lo, hi = -(1 << (cfg.qk_bits - 1)), 1 << (cfg.qk_bits - 1)
    vlo, vhi = -(1 << (cfg.v_bits - 1)), 1 << (cfg.v_bits - 1)
    return (rng.integers(lo, hi, (n, d)), rng.integers(lo, hi, (n, d)),
            rng.integers(vlo, vhi, (n, d)))


@pytest.mark.parametrize("name", ["tiny", "odd", "default"])
def test_low_threshold_equals_the_unpruned_exact_hdp_path(name):
    """th below every score keeps every valid entry, and the softmax and P x V then equal the
    HDP golden model with pruning off and exact scores, bit for bit."""
    cfg = preset(name).replace(approx="exact", prune_mode="off", head_prune=False)
    rng = np.random.default_rng(11)
    for valid_len in (cfg.seq_len, max(1, cfg.seq_len - 3)):
        q, k, v = random_head(cfg, rng)
        # the HDP exact score 2^(2F) A + 2^F X + C is q_q . k_q
        qi, qf = split_int_frac(q, cfg.qk_frac)
        ki, kf = split_int_frac(k, cfg.qk_frac)
        a, x, c = (score.integer_scores(qi, ki), score.cross_terms(qi, qf, ki, kf),
                   score.ff_terms(qf, kf))
        assert np.array_equal(approx_scores(a, x, c, cfg), q @ k.T)
        hdp = model.attention_head_int(q, k, v, cfg, valid_len)
        for th in (lp.threshold_int(-math.inf, cfg), int((q @ k.T).min()), -(10 ** 40)):
            r = lp.leopard_head_int(q, k, v, cfg, th, valid_len)
            assert np.array_equal(r.entry_keep, hdp.mask) and np.array_equal(r.mask, hdp.mask)
            for f in ("entry_keep", "scores", "probs", "acc", "out_int"):
                assert np.array_equal(getattr(r, f), getattr(hdp, f)), f
            assert r.stats["kept_entries"] == hdp.stats["kept_entries"]
        # one above the minimum score drops at least that entry (unless diagonal)
        r = lp.leopard_head_int(q, k, v, cfg, int((q @ k.T)[hdp.mask].min()) + 1, valid_len)
        assert r.stats["kept_entries"] <= hdp.stats["kept_entries"]


def test_high_threshold_keeps_only_the_diagonal():
    cfg = preset("odd")
    q, k, v = random_head(cfg, np.random.default_rng(5))
    r = lp.leopard_head_int(q, k, v, cfg, lp.threshold_int(math.inf, cfg), valid_len=9)
    assert np.array_equal(r.entry_keep, r.diag) and r.diag.sum() == 9
    assert (r.probs[np.arange(9), np.arange(9)] == 1 << cfg.prob_frac).all()
    assert (r.probs[9:] == 0).all() and (r.out_int[9:] == 0).all()
    assert r.stats["terminated_entries"] == r.stats["valid_pairs"] - 9


def test_threshold_int_is_exact():
    getcontext().prec = 60
    for name in ("tiny", "default", "odd"):
        cfg = preset(name)
        f2 = 1 << (2 * cfg.qk_frac)
        sd = Decimal(cfg.head_dim).sqrt()
        for value in (0.0, 1.0, -1.0, 0.3, -2.75, 1 / 3, 7.123456789, -1e-9, 1e-9, 250.0):
            th = lp.threshold_int(value, cfg, "score")
            for s in range(th - 3, th + 4):
                assert (s >= th) == (Fraction(s, f2) >= Fraction(value)), (name, value, s)
            th = lp.threshold_int(value, cfg, "logit")
            for s in range(th - 3, th + 4):
                exact = Decimal(s) / Decimal(f2) / sd >= Decimal(Fraction(value).numerator) / \
                    Decimal(Fraction(value).denominator)
                assert (s >= th) == exact, (name, value, s)
            assert abs(lp.threshold_value(th, cfg, "logit") - value) <= 1 / f2
    cfg = preset("default")                     # F = 4, d = 32
    assert lp.threshold_int(1.0, cfg, "score") == 256
    assert lp.threshold_int(1.0, cfg, "logit") == math.ceil(256 * math.sqrt(32))
    assert lp.threshold_int(-math.inf, cfg) == -lp.TH_LIMIT
    assert lp.threshold_int(1e300, cfg) == lp.TH_LIMIT
    with pytest.raises(ValueError, match="units"):
        lp.threshold_int(1.0, cfg, "raw")
    with pytest.raises(ValueError, match="NaN"):
        lp.threshold_int(math.nan, cfg)


def test_threshold_arguments_are_checked():
    q = k = np.ones((3, 2), np.int64)
    for bad in (1.5, np.ones(3), np.ones(4, np.int64), True):
        with pytest.raises(ValueError, match="th must be"):
            lp.front_end(q, k, bad, 4)
    fe = lp.front_end(q, k, np.array([0, 100, -100]), 4)      # per-query thresholds
    assert fe.entry_keep[0].all() and fe.entry_keep[1].tolist() == [False, True, False]
    cfg = preset("tiny")
    with pytest.raises(ValueError, match="integer array"):
        lp.leopard_head_int(q.astype(float), k, k, cfg, 0)


def test_operands_are_checked():
    q = np.zeros((3, 2), np.int64)
    for args, match in (((q, q + 8, 0, 4), r"k must be in \[-8, 7\]"),
                        ((q - 9, q, 0, 4), r"q must be in \[-8, 7\]"),
                        ((q, q[:2], 0, 4), "share one shape"),
                        ((q, q, 0, 1), "bits must be"), ((q, q, 0, 17), "bits must be")):
        with pytest.raises(ValueError, match=match):
            lp.front_end(*args)
    for vl in (0, 4):
        with pytest.raises(ValueError, match="valid_len"):
            lp.front_end(q, q, 0, 4, vl)
    lp.front_end(q - 8, q + 7, 0, 4, 3)                      # the extremes themselves are fine


def test_threshold_sweep_matches_single_runs_and_is_monotone():
    cfg = preset("odd")
    rng = np.random.default_rng(9)
    qs, ks = [], []
    for _ in range(3):
        q, k, _ = random_head(cfg, rng)
        qs.append(q)
        ks.append(k)
    qs, ks = np.stack(qs), np.stack(ks)
    ths = [-(10 ** 9), -200, 0, 50, 200, 10 ** 9]
    sweep = lp.threshold_sweep(qs, ks, cfg, ths, valid_len=11)
    for th, s in zip(ths, sweep):
        one = lp.summarize([lp.front_end_stats(lp.front_end(qs[h], ks[h], th, cfg.qk_bits, 11,
                                                            cfg.causal)) for h in range(3)])
        assert s["th"] == th and s["heads"] == 3
        assert {key: s[key] for key in one} == one
    kept = [s["kept_fraction"] for s in sweep]
    ratio = [s["bits_ratio"] for s in sweep]
    assert kept == sorted(kept, reverse=True) and ratio == sorted(ratio, reverse=True)
    assert kept[0] == 1.0 and ratio[0] == 1.0
    assert sweep[-1]["kept_entries"] == 3 * 11          # the diagonal only


REAL_HEADS = [0, 5, 17, 30, 41, 58, 71]


@pytest.mark.parametrize("fixture", ["short", "medium", "padded", "long"])
def test_real_minilm_heads(fixture):
    from sim.fixtures import load_fixture
    fx = load_fixture(fixture)
    cfg = preset("default")
    vl = fx["valid_len"]
    early = 0
    for causal in (False, True):
        c = cfg.replace(causal=causal)
        for h in REAL_HEADS:
            q, k, v = model.quantize_qkv(fx["q"][h], fx["k"][h], fx["v"][h], c)
            mask = entry_mask(q.shape[0], vl, causal)
            s = q @ k.T
            row_med = np.array([int(np.median(s[i][mask[i]])) if mask[i].any() else 0
                                for i in range(q.shape[0])], np.int64)
            for th in (int(np.median(s[mask])), row_med):
                fe = lp.front_end(q, k, th, c.qk_bits, vl, causal)
                check_front_end(fe, q, k, th, c.qk_bits, vl, causal)
                early += int((fe.terminated & (fe.bits < c.qk_bits)).sum())
                r = lp.leopard_head_int(q, k, v, c, th, vl)
                assert np.array_equal(r.entry_keep, fe.entry_keep)
                assert np.array_equal(r.bits, fe.bits)
                # every valid row sums to about 1.0 (probabilities round half up per entry)
                rows = r.probs[:vl].sum(axis=1)
                assert (abs(rows - (1 << c.prob_frac)) <= r.entry_keep[:vl].sum(axis=1)).all()
    assert early > 0, "no entry terminated early at the median threshold"
    # th = -inf on real data: the unpruned exact HDP path, bit for bit
    c = cfg.replace(approx="exact", prune_mode="off")
    for h in REAL_HEADS[:3]:
        q, k, v = model.quantize_qkv(fx["q"][h], fx["k"][h], fx["v"][h], c)
        r = lp.leopard_head_int(q, k, v, c, lp.threshold_int(-math.inf, c), vl)
        hdp = model.attention_head_int(q, k, v, c, vl)
        for f in ("entry_keep", "scores", "probs", "acc", "out_int"):
            assert np.array_equal(getattr(r, f), getattr(hdp, f)), f


def test_real_data_saves_bits_at_the_median():
    from sim.fixtures import load_fixture
    fx = load_fixture("long")
    cfg = preset("default")
    res = lp.leopard_attention(fx["q"], fx["k"], fx["v"], cfg, lp.threshold_int(0.0, cfg),
                               fx["valid_len"])
    s = res["stats"]
    assert s["heads"] == 72 and s["valid_pairs"] == 72 * 30 * 30
    assert 0 < s["kept_fraction"] < 1 and s["bits_ratio"] < 1 and s["early_entries"] > 0
    assert s["bits_processed"] == sum(s["survival"])
    per_head = [lp.threshold_int(x, cfg) for x in np.linspace(-1, 1, 72)]
    res2 = lp.leopard_attention(fx["q"], fx["k"], fx["v"], cfg, per_head, fx["valid_len"])
    assert [int(r.th[0]) for r in res2["heads"]] == per_head
    with pytest.raises(ValueError, match="one per head"):
        lp.leopard_attention(fx["q"], fx["k"], fx["v"], cfg, [0, 1], fx["valid_len"])


# ------------------------------------------------------------------------------ docs
DOC = Path(__file__).resolve().parent.parent / "docs" / "leopard.md"


def test_doc_references_resolve_and_example_runs():
    text = DOC.read_text()
    refs = set(re.findall(r"`((?:golden|hw|sim)(?:\.\w+)+)`", text))
    assert "golden.leopard.front_end" in refs
    missing = []
    for ref in refs:
        parts = ref.split(".")
        obj = importlib.import_module(".".join(parts[:2]))
        try:
            for name in parts[2:]:
                obj = getattr(obj, name)
        except AttributeError:
            missing.append(ref)
    assert not missing, missing
    for p in re.findall(r"`((?:golden|tests|docs)/[\w./-]*\w)`", text):
        assert (DOC.parent.parent / p).exists(), p
    code = re.search(r"```python\n(.*?)```", text, re.DOTALL)[1]
    exec(compile(code, "leopard.md", "exec"), {"print": lambda *a: None})


def test_doc_figures_match_the_model():
    """The long-capture figures quoted in docs/leopard.md are what the model computes."""
    from sim.fixtures import load_fixture
    text = " ".join(DOC.read_text().split())
    fx = load_fixture("long")
    cfg = preset("default")
    for value in (0.0, 1.0, 2.0):
        s = lp.leopard_attention(fx["q"], fx["k"], fx["v"], cfg, lp.threshold_int(value, cfg),
                                 fx["valid_len"])["stats"]
        row = (f"| long{' (N = 30)' if value == 0 else ''} | logit >= {value:g} | "
               f"{100 * s['kept_fraction']:.1f} % | {s['bits_per_valid_entry']:.2f} | "
               f"{100 * s['bits_saved_fraction']:.1f} % | {100 * s['early_fraction']:.1f} % |")
        assert row in text, row
        if value == 0:
            assert ", ".join(map(str, s["survival"])) in text
