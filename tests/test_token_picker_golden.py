"""The Token-Picker decode step's golden model (golden/token_picker.py): score bounds, the
safety of the integer pruning test (and that broken variants are caught), eps = 0 against the
dense path, grouped-query union reads, read counting, validation, and the figures of
docs/token_picker.md."""

import dataclasses
import math
import re
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden import token_picker as tp

ROOT = Path(__file__).resolve().parent.parent
CFG = tp.TokenPickerConfig()


def q_of(x, frac):
    """A Quantized from integers with one frac for every head."""
    x = np.asarray(x, np.int64)
    return tp.Quantized(x, np.full(x.shape[0], frac, np.int64))


def random_case(rng, cfg, n_q=4, n_kv=2, n_cache=24, d=8, spread=None):
    """Random integer q, K, V at full width; ``spread`` scales q to vary how peaked rows are."""
    spread = rng.uniform(0.05, 1.0) if spread is None else spread
    qb, kb, vb = cfg.q_bits, cfg.k_bits, cfg.v_bits
    q = np.clip(np.rint(rng.normal(size=(n_q, d)) * spread * 2 ** (qb - 2)),
                -(1 << (qb - 1)), (1 << (qb - 1)) - 1).astype(np.int64)
    k = rng.integers(-(1 << (kb - 1)), 1 << (kb - 1), size=(n_kv, n_cache, d))
    v = rng.integers(-(1 << (vb - 1)), 1 << (vb - 1), size=(n_kv, n_cache, d))
    qf = rng.integers(0, qb, size=n_q)
    kf = rng.integers(0, kb, size=n_kv)
    return (tp.Quantized(q, qf), tp.Quantized(k, kf), tp.Quantized(v, np.full(n_kv, vb - 2)))


def exact_probs(q, k, n):
    """Float64 softmax over the ``n`` valid tokens of each query head, from the integer scores
    (computed here, independently of the module)."""
    qx, kx = np.asarray(q.x), np.asarray(k.x)
    n_q, d = qx.shape
    kv_of = np.arange(n_q) // (n_q // kx.shape[0])
    out = []
    for h in range(n_q):
        g = kv_of[h]
        s = np.array([int(np.dot(qx[h], kx[g, j])) for j in range(n)], np.float64)
        z = s * 2.0 ** -(int(q.frac[h]) + int(k.frac[g])) / math.sqrt(d)
        e = np.exp(z - z.max())
        out.append(e / e.sum())
    return out


# ------------------------------------------------------------------------------ layout and bounds
def test_chunk_layout():
    c = tp.TokenPickerConfig(k_bits=12, chunk_bits=4)
    assert (c.n_chunks, c.chunk_widths, c.rest_bits) == (3, (4, 4, 4), (8, 4, 0))
    c = tp.TokenPickerConfig(k_bits=12, chunk_bits=8)
    assert (c.chunk_widths, c.rest_bits) == ((8, 4), (4, 0))        # the last chunk is shorter
    c = tp.TokenPickerConfig(k_bits=8, chunk_bits=3)
    assert (c.chunk_widths, c.rest_bits) == ((3, 3, 2), (5, 2, 0))
    assert c.k_chunk_words(64) == (6, 6, 4) and c.v_row_words(64) == 16


@pytest.mark.parametrize("kb,cw", [(kb, cw) for kb in (8, 12, 16) for cw in (2, 3, 4, 8)])
def test_chunk_digits_rebuild_every_value(kb, cw):
    cfg = tp.TokenPickerConfig(k_bits=kb, chunk_bits=cw)
    k = np.arange(-(1 << (kb - 1)), 1 << (kb - 1), max(1, (1 << kb) // 4099))
    k = np.concatenate([k, [(1 << (kb - 1)) - 1]])
    dig = tp.chunk_digits(k, cfg)
    high = np.zeros_like(k)
    for c, (w, r) in enumerate(zip(cfg.chunk_widths, cfg.rest_bits)):
        high = (high << w) + dig[c]
        assert np.array_equal(high, k >> r)
        if c:
            assert dig[c].min() >= 0 and dig[c].max() < (1 << w)
    assert np.array_equal(high, k)


def _check_bounds(q, k, cfg):
    lo, up = tp.chunk_bounds(q, k, cfg)
    exact = np.asarray(k, np.int64) @ np.asarray(q, np.int64)
    assert (lo <= exact).all() and (exact <= up).all(), "bounds miss the exact score"
    assert (np.diff(lo, axis=0) >= 0).all(), "lower bounds must not decrease"
    assert (np.diff(up, axis=0) <= 0).all(), "upper bounds must not increase"
    assert np.array_equal(lo[-1], exact) and np.array_equal(up[-1], exact), "no collapse"


@pytest.mark.parametrize("kb", [8, 12, 16])
@pytest.mark.parametrize("cw", [2, 4, 8])
@pytest.mark.parametrize("d", [1, 7, 13])
def test_bounds_bracket_nest_and_collapse(kb, cw, d):
    cfg = tp.TokenPickerConfig(k_bits=kb, chunk_bits=cw, q_bits=8)
    rng = np.random.default_rng(kb * 100 + cw * 10 + d)
    kmin, kmax = -(1 << (kb - 1)), (1 << (kb - 1)) - 1
    keys = np.concatenate([
        rng.integers(kmin, kmax + 1, size=(20, d)),
        np.full((1, d), kmin), np.full((1, d), kmax), np.zeros((1, d), np.int64),
        np.full((1, d), -1), np.full((1, d), 1), rng.choice([kmin, kmax], size=(3, d))])
    for q in [rng.integers(-128, 128, size=d), np.full(d, -128), np.full(d, 127),
              np.zeros(d, np.int64), rng.choice([-128, 127], size=d)]:
        _check_bounds(q, keys, cfg)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.sampled_from([(8, 2), (8, 3), (12, 4), (12, 5), (16, 8), (16, 16)]),
       st.integers(1, 9), st.data())
def test_bounds_property(layout, d, data):
    kb, cw = layout
    cfg = tp.TokenPickerConfig(k_bits=kb, chunk_bits=cw, q_bits=16)
    q = np.array(data.draw(st.lists(st.integers(-(1 << 15), (1 << 15) - 1), min_size=d,
                                    max_size=d)))
    k = np.array(data.draw(st.lists(st.integers(-(1 << (kb - 1)), (1 << (kb - 1)) - 1),
                                    min_size=d, max_size=d)))[None]
    _check_bounds(q, k, cfg)


# ------------------------------------------------------------------------------ exponent tables
@pytest.mark.parametrize("e,w", [(0, 4), (2, 8), (5, 16), (6, 24)])
def test_exp_tables_are_floor_and_ceil(e, w):
    dn, up = tp.exp_tables(e, w)
    k = 1 << e
    assert len(dn) == k and dn[0] == up[0] == 1 << w
    for f in range(k):
        t = 1 << (w * k + f)                     # (2**(W + f/2**E))**(2**E)
        assert dn[f] ** k <= t < (dn[f] + 1) ** k
        assert up[f] ** k >= t and (up[f] - 1) ** k < t
        assert up[f] < 1 << (w + 1)


def _real_exp(x, sf, d, w):
    """``2**W * 2**(x * log2(e) / (sqrt(d) 2**sf))`` = ``2**W * exp(x / (sqrt(d) 2**sf))`` in
    50-digit decimals."""
    with localcontext() as ctx:
        ctx.prec = 50
        return Decimal(1 << w) * (Decimal(int(x)) / (Decimal(d).sqrt() * Decimal(2) ** sf)).exp()


@pytest.mark.parametrize("e,w,d,sf", [(5, 16, 64, 14), (0, 8, 7, 3), (3, 12, 1, 0),
                                      (10, 24, 4096, 30)])
def test_exp_upper_and_lower_bracket_the_real_value(e, w, d, sf):
    cfg = tp.TokenPickerConfig(exp_frac=e, exp_bits=w)
    n_cache = 256
    rng = np.random.default_rng(e + w + d + sf)
    unit = 2 ** sf * math.sqrt(d)               # x = unit is one nat
    xs = np.unique(np.concatenate([
        np.rint(rng.uniform(-30, 12, 300) * unit), np.arange(-20, 21),
        [-(1 << 40), -(1 << 50), 1 << 40, round(9 * unit), round(-40 * unit)]]).astype(np.int64))
    up = tp.exp_upper(xs, sf, d, n_cache, cfg)
    neg = xs[xs <= 0]
    lo = tp.exp_lower(neg, sf, d, cfg)
    cap = (1 << w) << tp._clog2(n_cache)
    far = 200 * unit                             # beyond 200 nats: saturated either way
    for x, u in zip(xs.tolist(), up.tolist()):
        assert u >= 1
        if x > far:
            assert u >= cap
            continue
        real = Decimal(0) if x < -far else _real_exp(x, sf, d, w)
        if u < cap:                              # below the cap: a true upper bound
            assert Decimal(u) >= real, (x, u, real)
        else:                                    # capped: at least 2**W * N, so never dropped
            assert u >= cap
    for y, lv in zip(neg.tolist(), lo.tolist()):
        real = Decimal(0) if y < -far else _real_exp(y, sf, d, w)
        assert 0 <= lv <= 1 << w and Decimal(lv) <= real, (y, lv)
        if y < -far:
            assert lv == 0
    assert tp.exp_lower(np.array([0]), sf, d, cfg)[0] == 1 << w
    assert tp.exp_upper(np.array([0]), sf, d, n_cache, cfg)[0] == 1 << w


def test_hand_computed_pruning_decision():
    """d = 1, sf = 0, E = 0, W = 4, eps_frac = 4.  c_lo = floor(log2(e) 2**16) = 94548.
    Alive tokens with L = [0, -3], U = [0, -1]: m = 0; sigma = e_lo(0) + e_lo(-3) = 16 + 0
    (t = floor(-3 * 94549 / 2**16) = -5, 16 >> 5 = 0); e_up(-1): t = ceil(-94548 / 2**16) = -1,
    ceil(16 / 2) = 8 (real 16 / e = 5.9).  Drop token 1 iff 8 * 16 < eps_q * 16: eps_q >= 9."""
    cfg = tp.TokenPickerConfig(exp_frac=0, exp_bits=4, eps_frac=4)
    assert tp.exp_scale(1, 0) == (94548, 94549)
    c64 = math.floor(math.log2(math.e) / 8 * 2 ** 21)       # 378194.2..., far from an integer
    assert tp.exp_scale(64, 5) == (c64, c64 + 1)
    lo, up = np.array([0, -3]), np.array([0, -1])
    alive = np.array([True, True])
    assert tp.exp_lower(np.array([0, -3]), 0, 1, cfg).tolist() == [16, 0]
    assert tp.exp_upper(np.array([-1]), 0, 1, 2, cfg).tolist() == [8]
    assert tp.prune_test(lo, up, alive, alive, 0, 1, 2, 8, cfg).tolist() == [False, False]
    assert tp.prune_test(lo, up, alive, alive, 0, 1, 2, 9, cfg).tolist() == [False, True]
    # the token holding m is kept whatever eps says
    assert tp.prune_test(np.array([0, 0]), np.array([0, 0]), alive, alive, 0, 1, 2, 15,
                         cfg).tolist() == [False, False]


# ------------------------------------------------------------------------------ safety
SAFETY_CFGS = [
    tp.TokenPickerConfig(),
    tp.TokenPickerConfig(k_bits=8, chunk_bits=2, q_bits=6, exp_frac=0, exp_bits=6, eps_frac=12),
    tp.TokenPickerConfig(k_bits=16, chunk_bits=8, q_bits=12, exp_frac=2, exp_bits=10),
    tp.TokenPickerConfig(k_bits=12, chunk_bits=5, exp_frac=1, exp_bits=8),
]


def violations(q, k, v, n, eps, cfg):
    """(head, token, probability) of every dropped token whose exact probability is >= eps."""
    r = tp.decode_step(q, k, v, n, eps, cfg)
    probs = exact_probs(q, k, n)
    bad = []
    for h, p in enumerate(probs):
        for j in np.flatnonzero(~r.keep[h, :n]):
            if p[j] >= eps * (1 + 1e-9):
                bad.append((h, int(j), float(p[j])))
    return bad, r, probs


def tight_eps(probs, rng, cfg):
    """An eps equal to one token's exact probability (slightly below it), so that this token is
    on the edge: a sound test must keep it."""
    p = probs[rng.integers(len(probs))]
    floor = 2.0 ** -(cfg.eps_frac - 3)
    cand = p[(p >= floor) & (p < 0.99)]
    if cand.size == 0:
        return None
    return float(cand[rng.integers(cand.size)]) * (1 - 1e-12)


def safety_search(cfg, seeds, shapes=((4, 2, 24, 8), (3, 1, 40, 5), (6, 3, 17, 11))):
    """Run seeded random cases with tight and loose eps; return every violation found."""
    found = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        n_q, n_kv, n_cache, d = shapes[seed % len(shapes)]
        q, k, v = random_case(rng, cfg, n_q, n_kv, n_cache, d)
        n = int(rng.integers(1, n_cache + 1))
        probs = exact_probs(q, k, n)
        for eps in (tight_eps(probs, rng, cfg), 1e-3, 2e-2, 0.3):
            if eps is None or math.floor(eps * (1 << cfg.eps_frac)) == 0:
                continue
            bad, _, _ = violations(q, k, v, n, eps, cfg)
            found += bad
    return found


@pytest.mark.parametrize("cfg", SAFETY_CFGS, ids=lambda c: f"kb{c.k_bits}cw{c.chunk_bits}E{c.exp_frac}")
def test_safety_seeded(cfg):
    assert safety_search(cfg, range(60)) == []


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.sampled_from(range(len(SAFETY_CFGS))),
       st.sampled_from([(2, 1, 12, 3), (4, 2, 33, 16), (1, 1, 5, 1), (6, 2, 20, 7)]))
def test_safety_property(seed, ci, shape):
    cfg = SAFETY_CFGS[ci]
    rng = np.random.default_rng(seed)
    n_q, n_kv, n_cache, d = shape
    q, k, v = random_case(rng, cfg, n_q, n_kv, n_cache, d)
    n = int(rng.integers(1, n_cache + 1))
    probs = exact_probs(q, k, n)
    eps = tight_eps(probs, rng, cfg) or 0.05
    bad, r, _ = violations(q, k, v, n, eps, cfg)
    assert bad == []
    assert (r.stats.max_dropped_prob < eps * (1 + 1e-9)).all()
    assert (r.stats.kept_q >= r.stats.needed_q).all()
    assert r.keep[:, :n].any(axis=1).all(), "every head keeps at least its best token"


def _denominator_with_upper(lower, upper, alive, m, sf, d, cfg):
    """Broken: the upper bounds in the denominator (they are not certain contributions)."""
    e = tp.exp_upper(np.where(alive, upper - m, 0), sf, d, 1 << 20, cfg)
    return np.where(alive, e, 0).sum(axis=-1)


def _exp_nearest(x, sf, d, cfg):
    """Round-to-nearest ``2**W * 2**(x log2(e) / (sqrt(d) 2**sf))`` (exponent and table rounded
    to nearest, as the final softmax does): not a bound in either direction."""
    E, W = cfg.exp_frac, cfg.exp_bits
    c = math.log2(math.e) / math.sqrt(d) * np.exp2(E - np.asarray(sf, np.float64))
    t = np.clip(np.rint(np.asarray(x, np.float64) * c), -(80 << E), 40 << E)
    return np.rint(2.0 ** (W + t / (1 << E))).astype(np.int64)


BROKEN = {
    "denominator_with_U": ("denominator", _denominator_with_upper),
    "exp_upper_nearest": ("exp_upper", lambda x, sf, d, n_cache, cfg: np.maximum(
        _exp_nearest(x, sf, d, cfg), 1)),
    "exp_lower_nearest": ("exp_lower", lambda y, sf, d, cfg: _exp_nearest(y, sf, d, cfg)),
}


@pytest.mark.parametrize("variant", list(BROKEN))
def test_broken_variants_are_caught(monkeypatch, variant):
    """The safety search is not vacuous: each non-conservative change makes it fail (on the
    coarse-table configuration, E = 0, where rounding to nearest is off by up to 2**0.5)."""
    name, fn = BROKEN[variant]
    monkeypatch.setattr(tp, name, fn)
    assert safety_search(SAFETY_CFGS[1], range(60)) != []


# ------------------------------------------------------------------------------ eps = 0
@pytest.mark.parametrize("cfg", [
    tp.TokenPickerConfig(),
    tp.TokenPickerConfig(k_bits=16, chunk_bits=8, q_bits=12, sm_frac=10, prob_frac=12),
    tp.TokenPickerConfig(k_bits=8, chunk_bits=3, q_bits=6, v_bits=6, sm_frac=2, out_frac=4),
], ids=["default", "wide", "narrow"])
@pytest.mark.parametrize("n", [1, 17, 40])
def test_eps_zero_is_dense_bit_for_bit(cfg, n):
    rng = np.random.default_rng(n)
    q, k, v = random_case(rng, cfg, 6, 3, 40, 9, spread=0.3)
    r = tp.decode_step(q, k, v, n, 0.0, cfg)
    out, acc, prob = tp.dense_decode_step(q, k, v, n, cfg)
    assert np.array_equal(r.out, out) and np.array_equal(r.acc, acc)
    assert np.array_equal(r.prob, prob)
    assert r.keep[:, :n].all() and not r.keep[:, n:].any()
    s = r.stats
    assert (s.k_words_read == s.k_words_dense).all() and (s.v_words_read == s.v_words_dense).all()
    assert (s.k_chunks_read == n * cfg.n_chunks).all() and (s.v_rows_read == n).all()
    assert (s.mass_lost == 0).all()


def test_dense_path_is_close_to_float():
    """The integer dense path (= eps 0) against the float reference on the dequantized data."""
    rng = np.random.default_rng(3)
    qf, kf, vf = rng.normal(size=(4, 32)), rng.normal(size=(2, 64, 32)), rng.normal(size=(2, 64, 32))
    q, k, v = tp.quantize_step(qf, kf, vf, CFG)
    out, _, _ = tp.dense_decode_step(q, k, v, 64, CFG)
    ref = tp.float_decode_step(q.dequantize(), k.dequantize(), v.dequantize(), 64)
    assert np.abs(out / 2 ** CFG.out_frac - ref).max() < 0.05
    ref_raw = tp.float_decode_step(qf, kf, vf, 64)
    assert np.abs(out / 2 ** CFG.out_frac - ref_raw).max() < 0.1


# ------------------------------------------------------------------------------ grouped query
def gqa_case():
    """Two query heads on one KV head: head 0 looks along +e0, head 1 along -e0.  Token 3 has a
    large +e0 component: head 0's dominant token, a negligible one for head 1."""
    d, n_cache = 4, 16
    rng = np.random.default_rng(1)
    k = rng.integers(-64, 64, size=(1, n_cache, d))
    k[0, 3] = [2000, 0, 0, 0]
    q = np.array([[100, 0, 0, 0], [-100, 0, 0, 0]])
    v = rng.integers(-100, 100, size=(1, n_cache, d))
    return (tp.Quantized(q, np.array([6, 6])), tp.Quantized(k, np.array([8])),
            tp.Quantized(v, np.array([4])))


def test_gqa_union_reads_a_token_one_head_keeps():
    q, k, v = gqa_case()
    r = tp.decode_step(q, k, v, 16, 1e-2, CFG)
    assert r.keep[0, 3] and not r.keep[1, 3]
    assert r.drop_chunk[1, 3] >= 1
    assert r.read[:, 0, 3].all(), "head 0 keeps token 3: every chunk and its V row are read"
    assert r.prob[1, 3] == 0 and r.prob[0, 3] > 0
    # head 1's softmax is its own survivors only: equal to a softmax with that mask
    sf = int(q.frac[1] + k.frac[0])
    s = tp.to_softmax_frac(k.x[0] @ q.x[1], sf, CFG)
    p1 = tp.softmax_rows(s[None], r.keep[1][None], tp.softmax_config(4, 16, CFG))[0]
    assert np.array_equal(r.prob[1], p1)
    # the union: read = any head keeps
    for c in range(CFG.n_chunks + 1):
        before = (r.drop_chunk == 0) | (r.drop_chunk > c)     # examined at chunk c + 1
        assert np.array_equal(r.read[c, 0], before.any(axis=0)), c
    # each query head alone on its own KV head reads no more than the pair does
    for h in range(2):
        alone = tp.decode_step(tp.Quantized(q.x[h:h + 1], q.frac[h:h + 1]), k, v, 16, 1e-2, CFG)
        assert np.array_equal(alone.keep[0], r.keep[h])
        assert (alone.read <= r.read).all()


def test_gqa_head_mapping_and_divisibility():
    rng = np.random.default_rng(5)
    q, k, v = random_case(rng, CFG, 6, 3, 20, 5, spread=0.5)
    r = tp.decode_step(q, k, v, 20, 1e-2, CFG)
    for h in range(6):      # head h on KV head h // 2, exactly as a one-head run on that KV head
        g = h // 2
        one = tp.decode_step(tp.Quantized(q.x[h:h + 1], q.frac[h:h + 1]),
                             tp.Quantized(k.x[g:g + 1], k.frac[g:g + 1]),
                             tp.Quantized(v.x[g:g + 1], v.frac[g:g + 1]), 20, 1e-2, CFG)
        assert np.array_equal(one.keep[0], r.keep[h]) and np.array_equal(one.prob[0], r.prob[h])
    bad = tp.Quantized(q.x[:5], q.frac[:5])
    with pytest.raises(ValueError, match="n_q_heads = 5 must be a multiple of n_kv_heads = 3"):
        tp.decode_step(bad, k, v, 20, 1e-2, CFG)


# ------------------------------------------------------------------------------ counting
def test_counts_follow_the_read_masks_and_never_exceed_dense():
    cfg = tp.TokenPickerConfig(k_bits=12, chunk_bits=5, word_bits=32)   # chunks 5, 5, 2 bits
    rng = np.random.default_rng(9)
    for _ in range(10):
        q, k, v = random_case(rng, cfg, 4, 2, 30, 13)
        n = int(rng.integers(1, 31))
        r = tp.decode_step(q, k, v, n, 5e-2, cfg)
        s, kw = r.stats, cfg.k_chunk_words(13)
        assert kw == (3, 3, 1)
        for g in range(2):
            per_chunk = r.read[:-1, g].sum(axis=1)
            assert s.k_chunks_read[g] == per_chunk.sum()
            assert s.k_words_read[g] == sum(int(a) * b for a, b in zip(per_chunk, kw))
            assert s.v_rows_read[g] == r.read[-1, g].sum() and \
                s.v_words_read[g] == s.v_rows_read[g] * cfg.v_row_words(13)
            assert not r.read[:, g, n:].any(), "invalid positions are never read"
            assert (np.diff(r.read[:, g].astype(int), axis=0) <= 0).all(), "a dropped token returns"
        assert (s.k_words_read <= s.k_words_dense).all() and (s.v_words_read <= s.v_words_dense).all()
        assert s.k_words_dense == n * 7 and s.v_rows_dense == n
        assert np.array_equal(s.alive_kv, r.read.sum(axis=2).T)
        assert (s.kept_kv >= s.kept_q.reshape(2, 2).max(axis=1)).all()


# ------------------------------------------------------------------------------ V low plane
def test_v_planes_layout_and_coarse_value():
    c = tp.TokenPickerConfig(v_bits=8, v_lo_bits=4, word_bits=32)
    assert c.v_part_words(64) == (8, 8) and c.v_row_words(64) == 16
    assert tp.TokenPickerConfig(v_bits=8, v_lo_bits=3).v_part_words(13) == (3, 2)
    assert tp.TokenPickerConfig().v_part_words(64) == (16, 0)
    v = np.array([-128, -113, -1, 0, 15, 16, 127])
    assert tp.coarse_v(v, c).tolist() == [-120, -120, -8, 8, 8, 24, 120]
    assert tp.coarse_v(v, CFG).tolist() == v.tolist()


@pytest.mark.parametrize("seed", range(6))
def test_v_low_plane_is_read_for_the_likely_tokens(seed):
    """With ``v_lo_bits`` the V low plane is read for the kept tokens whose probability the
    eps_v test cannot rule under eps_v; every other kept token's exact probability is below
    eps_v in every head, and P x V multiplies it with its coarse value.  eps_v = 0 reads every
    kept token's low plane and gives the plain step's outputs bit for bit."""
    cfg = tp.TokenPickerConfig(v_lo_bits=4, chunk_bits=3)
    rng = np.random.default_rng(100 + seed)
    q, k, v = random_case(rng, cfg, 6, 2, 40, 12, spread=rng.uniform(0.3, 1.0))
    n = int(rng.integers(20, 41))
    plain = tp.decode_step(q, k, v, n, 1e-3, dataclasses.replace(cfg, v_lo_bits=0))
    full = tp.decode_step(q, k, v, n, 1e-3, cfg, eps_v=0)
    assert np.array_equal(full.out, plain.out) and np.array_equal(full.read, plain.read)
    assert np.array_equal(full.read_v_lo, plain.read[-1]) and not plain.read_v_lo.any()
    assert np.array_equal(full.stats.v_words_read, plain.read[-1].sum(axis=1) * cfg.v_row_words(12))
    r = tp.decode_step(q, k, v, n, 1e-3, cfg, eps_v=0.05)
    assert np.array_equal(r.keep, plain.keep) and np.array_equal(r.read, plain.read)
    lo = r.read_v_lo
    assert not (lo & ~r.read[-1]).any(), "a low plane without its high plane"
    probs = exact_probs(q, k, n)
    kv_of = np.arange(6) // 3
    for h in range(6):
        coarse = r.keep[h, :n] & ~lo[kv_of[h], :n]
        assert (probs[h][coarse] < 0.05).all()
        used = np.where(lo[kv_of[h]][:, None], v.x[kv_of[h]], tp.coarse_v(v.x[kv_of[h]], cfg))
        assert np.array_equal(r.acc[h], r.prob[h, :n] @ used[:n])
    vw_hi, vw_lo = cfg.v_part_words(12)
    assert np.array_equal(r.stats.v_lo_rows_read, lo.sum(axis=1))
    assert np.array_equal(r.stats.v_words_read, r.read[-1].sum(axis=1) * vw_hi + lo.sum(axis=1) * vw_lo)
    assert r.stats.v_words_dense == n * (vw_hi + vw_lo)


def test_v_low_plane_skips_rows_on_smollm2():
    """On the bundled capture, eps_v = 1e-2 leaves the low plane of many kept tokens unread."""
    from hdpgen.decode_io import load_capture
    fx = load_capture(Path(__file__).parent / "data" / "smollm2_decode.npz")
    cfg = tp.TokenPickerConfig(v_lo_bits=4)
    hi = lo = 0
    for r in range(len(fx["layer"])):
        n = int(fx["valid_len"][r])
        step = tp.quantize_step(fx["q"][r], fx["k"][r][:, :n], fx["v"][r][:, :n], cfg)
        st = tp.decode_step(*step, n, 1e-3, cfg, eps_v=1e-2).stats
        hi, lo = hi + int(st.v_rows_read.sum()), lo + int(st.v_lo_rows_read.sum())
    assert lo < 0.8 * hi
    with pytest.raises(ValueError, match=r"eps_v must be a number in \[0, 1\), not 2"):
        tp.decode_step(*step, n, 1e-3, cfg, eps_v=2)


def test_unread_data_cannot_matter():
    """Corrupt every K chunk and V row that the step did not read: the result is identical."""
    rng = np.random.default_rng(11)
    q, k, v = random_case(rng, CFG, 4, 2, 40, 16, spread=0.6)
    r = tp.decode_step(q, k, v, 40, 2e-2, CFG)
    assert not r.read.all(), "the case must prune something"
    dig = tp.chunk_digits(k.x, CFG)
    junk = tp.chunk_digits(rng.integers(-2048, 2048, size=k.x.shape), CFG)
    dig = np.where(r.read[:-1, :, :, None], dig, junk)
    k2 = sum(dig[c] << r_ for c, r_ in enumerate(CFG.rest_bits))
    v2 = np.where(r.read[-1][:, :, None], v.x, rng.integers(-128, 128, size=v.x.shape))
    r2 = tp.decode_step(q, tp.Quantized(k2, k.frac), tp.Quantized(v2, v.frac), 40, 2e-2, CFG)
    assert not np.array_equal(k2, k.x) and not np.array_equal(v2, v.x)
    for name in ("out", "prob", "keep", "drop_chunk", "read", "lower", "upper"):
        assert np.array_equal(getattr(r, name), getattr(r2, name)), name


def test_pruned_token_is_never_examined_again():
    rng = np.random.default_rng(12)
    q, k, v = random_case(rng, CFG, 2, 1, 50, 8, spread=0.8)
    r = tp.decode_step(q, k, v, 50, 2e-2, CFG)
    assert (r.drop_chunk > 0).any()
    for h in range(2):
        for j in np.flatnonzero(r.drop_chunk[h] > 0):
            c = r.drop_chunk[h, j]
            assert (r.lower[c:, h, j] == 0).all() and (r.upper[c:, h, j] == 0).all()
            assert r.prob[h, j] == 0
        assert r.stats.alive_q[h].tolist() == [int(((r.drop_chunk[h] == 0) | (r.drop_chunk[h] > c))
                                                   .sum()) for c in range(CFG.n_chunks + 1)]


def test_best_token_is_always_kept():
    """A uniform row with eps above 1/n would lose every token to the bound alone: the token
    holding the largest lower bound stays, so the softmax is never empty."""
    k = np.ones((1, 8, 4), np.int64) * 100
    q = q_of([[50, 50, 50, 50]], 4)
    r = tp.decode_step(q, q_of(k, 8), q_of(np.ones((1, 8, 4)), 0), 8, 0.5, CFG)
    assert r.keep[0].all()                     # all tie at the max
    k[0, 5] += 1
    r = tp.decode_step(q, q_of(k, 8), q_of(np.ones((1, 8, 4)), 0), 8, 0.5, CFG)
    assert r.keep[0].tolist() == [j == 5 for j in range(8)]
    assert r.prob[0, 5] == 1 << CFG.prob_frac


def test_widest_formats_do_not_overflow():
    """16-bit q and k at the largest fractions, d = 4096, the finest tables: the step runs in
    int64 without overflow (scores checked in Python integers), stays safe, and eps 0 is dense."""
    cfg = tp.TokenPickerConfig(q_bits=16, k_bits=16, chunk_bits=3, v_bits=16, exp_frac=10,
                               exp_bits=24, eps_frac=20, prob_frac=16, sm_frac=16)
    d, n_cache = tp.MAX_D, 6
    rng = np.random.default_rng(21)
    qx = rng.choice([-(1 << 15), (1 << 15) - 1], size=(2, d))
    kx = rng.choice([-(1 << 15), (1 << 15) - 1], size=(1, n_cache, d))
    kx[0, 0] = qx[0]                           # the extreme score  d * 2**30
    vx = rng.integers(-(1 << 15), 1 << 15, size=(1, n_cache, d))
    q = tp.Quantized(qx, np.array([15, 15]))
    k, v = tp.Quantized(kx, np.array([15])), tp.Quantized(vx, np.array([15]))
    r = tp.decode_step(q, k, v, n_cache, 1e-3, cfg)
    want = [[sum(int(a) * int(b) for a, b in zip(qx[h], kx[0, j])) for j in range(n_cache)]
            for h in range(2)]
    assert r.scores.tolist() == want
    assert violations(q, k, v, n_cache, 1e-3, cfg)[0] == []
    out, _, prob = tp.dense_decode_step(q, k, v, n_cache, cfg)
    r0 = tp.decode_step(q, k, v, n_cache, 0, cfg)
    assert np.array_equal(r0.out, out) and np.array_equal(r0.prob, prob)


def test_decode_steps_sums_the_steps():
    rng = np.random.default_rng(13)
    _, k, v = random_case(rng, CFG, 4, 2, 30, 8)
    qs = [random_case(rng, CFG, 4, 2, 30, 8)[0] for _ in range(3)]
    s = tp.decode_steps(qs, k, v, [20, 25, 30], 1e-2, CFG)
    assert len(s.steps) == 3
    assert s.k_words_read == sum(int(r.stats.k_words_read.sum()) for r in s.steps)
    assert s.v_words_dense == 2 * sum(r.stats.v_words_dense for r in s.steps)
    assert s.valid_q == 4 * 75 and s.kept_q == sum(int(r.keep.sum()) for r in s.steps)
    assert 0 < s.k_fraction <= 1 and 0 < s.v_fraction <= 1
    with pytest.raises(ValueError, match="lengths must give one length per query step"):
        tp.decode_steps(qs, k, v, [20], 1e-2, CFG)


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("field,value,msg", [
    ("k_bits", 17, r"k_bits must be an integer in \[2, 16\], not 17"),
    ("chunk_bits", 13, r"chunk_bits must be in \[1, k_bits\], not 13"),
    ("chunk_bits", 0, r"chunk_bits must be in \[1, k_bits\], not 0"),
    ("q_bits", 1, r"q_bits must be an integer in \[2, 16\], not 1"),
    ("sm_frac", 7, r"sm_frac must be even"),
    ("out_frac", 16, r"out_frac must be in \[0, out_bits - 1\], not 16"),
    ("eps_frac", 0, r"eps_frac must be an integer in \[1, 24\], not 0"),
    ("word_bits", 4, r"word_bits must be an integer"),
    ("exp_frac", 2.0, r"exp_frac must be an integer"),
    ("k_chan_shift", 12, r"k_chan_shift must be in \[0, k_bits - 1\], not 12"),
    ("k_chan_shift", -1, r"k_chan_shift must be an integer in \[0, 15\], not -1"),
    ("v_lo_bits", 8, r"v_lo_bits must be in \[0, v_bits - 1\], not 8"),
    ("k_center", 2, r"k_center must be an integer in \[0, 1\], not 2"),
])
def test_config_errors_name_the_field(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        tp.TokenPickerConfig(**{field: value})


def test_input_errors_name_the_field():
    rng = np.random.default_rng(0)
    q, k, v = random_case(rng, CFG, 4, 2, 10, 6)
    cases = [
        (dict(n=11), r"n \(valid positions\) must be an integer in \[1, N\] = \[1, 10\], not 11"),
        (dict(n=0), r"n \(valid positions\)"),
        (dict(eps=1.0), r"eps must be a number in \[0, 1\), not 1.0"),
        (dict(eps=1e-9), r"eps = 1e-09 is below 2\*\*-eps_frac"),
        (dict(k=tp.Quantized(k.x + 4096, k.frac)), r"k values must lie in \[-2048, 2047\]"),
        (dict(q=tp.Quantized(q.x, q.frac[:2])), r"q.frac must hold one integer in \[0, q_bits - 1\]"),
        (dict(v=tp.Quantized(v.x[:, :5], v.frac)), r"v must have the shape of k"),
        (dict(q=tp.Quantized(q.x[:, :5], q.frac)), r"k's head dimension must equal q's d = 5"),
        (dict(k=tp.Quantized(k.x.astype(float), k.frac)), r"k must hold integers"),
    ]
    for change, msg in cases:
        args = dict(q=q, k=k, v=v, n=10, eps=1e-2) | change
        with pytest.raises(ValueError, match=msg):
            tp.decode_step(args["q"], args["k"], args["v"], args["n"], args["eps"], CFG)


def test_quantize_heads_uses_a_power_of_two_per_head():
    x = np.array([[[0.5, -0.25]], [[3.0, 1.0]]])
    qz = tp.quantize_heads(x, 8)
    assert qz.frac.tolist() == [7, 5]          # 0.5 * 2**7 = 64; 3 * 2**5 = 96 (2**6 would clip)
    assert qz.x.tolist() == [[[64, -32]], [[96, 32]]]
    assert np.array_equal(qz.dequantize(), x)
    assert tp.quantize_heads(x, 8, frac=2).x.tolist() == [[[2, -1]], [[12, 4]]]


def channel_case(seed=0, n_q=4, n_kv=2, n_cache=40, d=16):
    """Keys whose channels differ in scale by up to 2**6, as real keys' channels do."""
    rng = np.random.default_rng(seed)
    scale = np.exp2(-rng.integers(0, 7, (n_kv, 1, d)))
    return (rng.normal(size=(n_q, d)), rng.normal(size=(n_kv, n_cache, d)) * scale,
            rng.normal(size=(n_kv, n_cache, d)))


def test_quantize_step_folds_k_channel_exponents_into_the_query():
    q, k, v = channel_case()
    cfg = dataclasses.replace(CFG, k_center=0)     # the exponents alone (centring: below)
    qq, kq, vq = tp.quantize_step(q, k, v, cfg)
    frac, e = tp.channel_exponents(k, cfg)
    assert np.array_equal(kq.frac, frac) and np.array_equal(kq.chan, e)
    assert e.min() >= 0 and e.max() <= cfg.k_chan_shift and e.max() >= 4
    assert np.array_equal(qq.chan, -e[np.arange(4) // 2]) and vq.chan is None
    # every channel uses its range: its largest code needs k_bits - 1 bits unless e is capped
    top = np.abs(kq.x).max(axis=1)
    free = e < np.minimum(cfg.k_chan_shift, cfg.k_bits - 1 - frac[:, None])
    assert (top[free] >= 1 << (cfg.k_bits - 2)).all()
    # dequantized K is within half a step of each channel's own scale
    step = np.exp2(-(frac[:, None] + e))[:, None, :]
    assert (np.abs(kq.dequantize() - k) <= step / 2 + 1e-12).all()
    # the integer score needs no per-channel shift: q.x . k.x at sf = q_frac + k_frac
    g = np.arange(4) // 2
    s_int = np.einsum("hd,hnd->hn", qq.x, kq.x[g]) * np.exp2(-(qq.frac + kq.frac[g]))[:, None]
    s_deq = np.einsum("hd,hnd->hn", qq.dequantize(), kq.dequantize()[g])
    np.testing.assert_allclose(s_int, s_deq, rtol=0, atol=1e-9)


def test_k_centring_is_an_offset_the_softmax_cancels():
    """K is centred per KV head and channel on the midpoint of its range: the integers of K
    and q do not change when every key moves by the same vector, dequantizing gives the real
    keys back (within half a step), and the integer score is the real one minus ``q . offset``,
    the same for every token of a head."""
    q, k, v = channel_case(seed=5)
    qq, kq, vq = tp.quantize_step(q, k, v, CFG)
    assert CFG.k_center == 1
    np.testing.assert_array_equal(kq.offset, (k.max(axis=1) + k.min(axis=1)) / 2)
    step = np.exp2(-(kq.frac[:, None] + kq.chan))[:, None, :]
    assert (np.abs(kq.dequantize() - k) <= step / 2 + 1e-12).all()
    shift = np.random.default_rng(1).normal(size=(k.shape[0], 1, k.shape[2])) * 4
    q2, k2, _ = tp.quantize_step(q, k + shift, v, CFG)
    for a, b in ((qq, q2), (kq, k2)):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.frac, b.frac) \
            and np.array_equal(a.chan, b.chan)
    g = np.arange(q.shape[0]) // (q.shape[0] // k.shape[0])
    s_int = np.einsum("hd,hnd->hn", qq.x, kq.x[g]) * np.exp2(-(qq.frac + kq.frac[g]))[:, None]
    s_deq = np.einsum("hd,hnd->hn", qq.dequantize(), kq.dequantize()[g])
    const = np.einsum("hd,hd->h", qq.dequantize(), kq.offset[g])[:, None]
    np.testing.assert_allclose(s_int, s_deq - const, rtol=0, atol=1e-9)
    # off: no offset, K's integers are those of the uncentred keys
    _, k0, _ = tp.quantize_step(q, k, v, dataclasses.replace(CFG, k_center=0))
    assert k0.offset is None and not np.array_equal(k0.x, kq.x)


def test_channel_exponents_are_more_precise_than_one_scale_per_head():
    """Relative to each channel's own size, the error falls with the channel's exponent."""
    q, k, v = channel_case(seed=3)
    size = np.abs(k).max(axis=1, keepdims=True)
    small = (size < np.abs(k).max(axis=(1, 2), keepdims=True) / 8)[:, 0]     # (n_kv, d)
    err = {}
    for shift in (0, 7):
        _, kq, _ = tp.quantize_step(q, k, v, tp.TokenPickerConfig(k_chan_shift=shift,
                                                                   k_center=0))
        err[shift] = (np.abs(kq.dequantize() - k) / size).mean(axis=1)        # (n_kv, d)
        assert (kq.chan == 0).all() if shift == 0 else (kq.chan[small] >= 3).all()
    assert small.any() and (err[7][small] < err[0][small] / 4).all()


def test_decode_step_rejects_channel_exponents_that_do_not_cancel():
    qq, kq, vq = tp.quantize_step(*channel_case(), CFG)
    tp.decode_step(qq, kq, vq, 40, 1e-2, CFG)
    for q_, k_, msg in ((tp.Quantized(qq.x, qq.frac), kq, "both be given or both be None"),
                        (tp.Quantized(qq.x, qq.frac, -qq.chan), kq, "must be -k.chan"),
                        (qq, tp.Quantized(kq.x, kq.frac, kq.chan[:, :3]), "k.chan must hold")):
        with pytest.raises(ValueError, match=msg):
            tp.decode_step(q_, k_, vq, 40, 1e-2, CFG)


def test_channel_exponents_read_fewer_k_words_on_smollm2():
    """On the bundled SmolLM2 capture (layers 0, 14 and 29 at three positions), per-channel K
    exponents tighten the early bounds: fewer K words are read at eps = 1e-3."""
    from hdpgen.decode_io import load_capture
    fx = load_capture(Path(__file__).parent / "data" / "smollm2_decode.npz")
    read = {}
    for shift in (0, 7):
        cfg = tp.TokenPickerConfig(k_chan_shift=shift)
        total = 0
        for r in range(len(fx["layer"])):
            n = int(fx["valid_len"][r])
            step = tp.quantize_step(fx["q"][r], fx["k"][r][:, :n], fx["v"][r][:, :n], cfg)
            total += int(tp.decode_step(*step, n, 1e-3, cfg).stats.k_words_read.sum())
        read[shift] = total
    assert read[7] < 0.99 * read[0]


def test_k_centring_reads_fewer_k_words_on_smollm2():
    """On the same capture, centring K's channels (``k_center``) narrows their ranges, which
    leaves room for larger channel exponents: fewer K words are read at eps = 1e-3."""
    from hdpgen.decode_io import load_capture
    fx = load_capture(Path(__file__).parent / "data" / "smollm2_decode.npz")
    read = {}
    for center in (0, 1):
        cfg = tp.TokenPickerConfig(k_center=center)
        read[center] = sum(
            int(tp.decode_step(*tp.quantize_step(fx["q"][r], fx["k"][r][:, :n], fx["v"][r][:, :n],
                                                 cfg), n, 1e-3, cfg).stats.k_words_read.sum())
            for r, n in enumerate(int(x) for x in fx["valid_len"]))
    assert read[1] < 0.997 * read[0]


# ------------------------------------------------------------------------------ figures
def synthetic_case(seed=0, n_q=9, n_kv=3, n_cache=256, d=64, steps=8):
    """Attention-like float data: keys N(0, 1) with a sink at position 0 (a shared direction
    ``u``); per KV group one peaked head (two recent tokens), one medium head (six tokens and
    the sink) and one diffuse head (the sink and noise).  Step ``t`` sees
    ``n_cache - steps + 1 + t`` positions."""
    rng = np.random.default_rng(seed)
    k = rng.normal(size=(n_kv, n_cache, d))
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    k[:, 0] += 4.0 * u
    v = rng.normal(size=(n_kv, n_cache, d))
    group = n_q // n_kv
    qs, lengths = [], []
    for t in range(steps):
        n = n_cache - steps + 1 + t
        q = np.empty((n_q, d))
        for h in range(n_q):
            g, kind = h // group, h % 3
            if kind == 0:
                tgt = rng.choice(np.arange(n - 8, n), 2, replace=False)
                q[h] = 10.0 * k[g, tgt].sum(0) / np.linalg.norm(k[g, tgt].sum(0))
            elif kind == 1:
                tgt = rng.choice(n, 6, replace=False)
                q[h] = 3.0 * k[g, tgt].sum(0) / np.linalg.norm(k[g, tgt].sum(0)) + 6.0 * u
            else:
                q[h] = rng.normal(scale=0.15, size=d) + 8.0 * u
            q[h] += rng.normal(scale=0.1, size=d)
        qs.append(q)
        lengths.append(n)
    return qs, k, v, lengths


def figures(cfg, eps):
    qs, k, v, lengths = synthetic_case()
    kq, vq = tp.quantize_heads(k, cfg.k_bits), tp.quantize_heads(v, cfg.v_bits)
    qq = [tp.quantize_heads(q, cfg.q_bits) for q in qs]
    s = tp.decode_steps(qq, kq, vq, lengths, eps, cfg)
    err = max(np.abs(r.out / 2 ** cfg.out_frac - tp.float_decode_step(q, k, v, n)).max()
              for r, q, n in zip(s.steps, qs, lengths))
    return {"kept_q": 100 * s.kept_q / s.valid_q, "needed_q": 100 * s.needed_q / s.valid_q,
            "kept_kv": 100 * s.kept_kv / s.valid_kv,
            "k": 100 * s.k_fraction, "v": 100 * s.v_fraction, "mass": s.max_mass_lost,
            "err": err}


def doc_rows():
    """The figures table of docs/token_picker.md: ``| chunk_bits | eps | 5 percentages | mass |
    error |`` rows."""
    rows = {}
    for line in (ROOT / "docs" / "token_picker.md").read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|\s*([\d.e-]+)\s*\|" + r"\s*([\d.]+)\s*%?\s*\|" * 5
                     + r"\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", line)
        if m:
            rows[(int(m[1]), float(m[2]))] = [float(x) for x in m.groups()[2:]]
    return rows


def test_doc_figures_are_reproduced():
    rows = doc_rows()
    assert len(rows) >= 6, "docs/token_picker.md: figures table not found"
    for (cw, eps), want in rows.items():
        got = figures(tp.TokenPickerConfig(chunk_bits=cw), eps)
        vals = [got[x] for x in ("kept_q", "needed_q", "kept_kv", "k", "v", "mass", "err")]
        assert vals[:5] == pytest.approx(want[:5], abs=0.051), (cw, eps, vals)
        assert vals[5:] == pytest.approx(want[5:], abs=0.00051), (cw, eps, vals)


def test_doc_usage_example_runs(capsys):
    text = (ROOT / "docs" / "token_picker.md").read_text()
    code = re.search(r"## Usage\n.*?```python\n(.*?)```", text, re.DOTALL)[1]
    exec(compile(code, "token_picker.md", "exec"), {})
    assert "[" in capsys.readouterr().out


def test_decode_words_bench_on_the_fixture(tmp_path):
    """``bench/decode_words.py`` runs on the bundled capture: the baseline row is 1x itself,
    per-channel exponents read fewer K words than it (and centring fewer still) and narrow the
    first chunk's intervals, no format beats its oracle, and the V words follow the tokens kept
    per KV head."""
    import json
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "w.json"
    subprocess.run([sys.executable, str(root / "bench" / "decode_words.py"), "--eps", "1e-3",
                    "--json", str(out)], check=True, capture_output=True, text=True, cwd=root)
    rows = {r["format"]: r for r in json.loads(out.read_text())["rows"]}
    base, chan = rows["k_chan_shift=0,k_center=0"], rows["k_center=0"]
    assert base["vs_baseline"] == 1 and chan["vs_baseline"] > 1 and chan["k"] < base["k"]
    assert rows["default"]["k"] < chan["k"]          # centring reads fewer still
    # the exponents narrow the first chunk's score intervals; the scores barely move
    assert chan["first_chunk_width_logits"] < base["first_chunk_width_logits"] / 2
    assert abs(chan["gap_to_best_logits"] - base["gap_to_best_logits"]) < 0.1
    for r in rows.values():
        assert r["records"] == 9 and 1 <= r["fewer_than_dense"] <= r["oracle_fewer_than_dense"]
        assert r["v"] == r["kept_kv"] * 16 and r["v_dense"] == r["valid_kv"] * 16
    bad = subprocess.run([sys.executable, str(root / "bench" / "decode_words.py"), "--format",
                          "chunk_bits=99"], capture_output=True, text=True, cwd=root)
    assert bad.returncode == 1 and "chunk_bits must be in [1, k_bits], not 99" in bad.stderr
