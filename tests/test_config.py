"""HDPConfig: validation messages, JSON round trip, command-line settings, and the derived widths
proven sufficient by pushing extreme inputs through the golden model."""

import itertools
import json

import numpy as np
import pytest

from golden import model, softmax
from golden import pv as golden_pv
from hw.config import APPROX_MODES, CRITERIA, PRUNE_MODES, HDPConfig, signed_width, unsigned_width
from hw.presets import PRESETS, preset, preset_names

# ---------------------------------------------------------------------------- validation
D = HDPConfig()  # default: seq_len 128, 2x2 blocks -> 64 block columns

# (field, bad value, exact message); every field appears at least once.
BAD = [
    ("seq_len", 0, "seq_len must be in [1, 4096], not 0"),
    ("seq_len", 4097, "seq_len must be in [1, 4096], not 4097"),
    ("seq_len", "128", "seq_len must be an integer, not '128'"),
    ("seq_len", True, "seq_len must be an integer, not True"),
    ("head_dim", 0, "head_dim must be in [1, 1024], not 0"),
    ("head_dim", 1025, "head_dim must be in [1, 1024], not 1025"),
    ("n_heads", 0, "n_heads must be in [1, 256], not 0"),
    ("qk_bits", 1, "qk_bits must be in [2, 16], not 1"),
    ("qk_bits", 17, "qk_bits must be in [2, 16], not 17"),
    ("qk_frac", 8, "qk_frac must be in [0, qk_bits - 1] = [0, 7], not 8"),
    ("qk_frac", -1, "qk_frac must be in [0, qk_bits - 1] = [0, 7], not -1"),
    ("v_bits", 1, "v_bits must be in [2, 16], not 1"),
    ("v_frac", 8, "v_frac must be in [0, v_bits - 1] = [0, 7], not 8"),
    ("prob_frac", 0, "prob_frac must be in [1, 16], not 0"),
    ("prob_frac", 17, "prob_frac must be in [1, 16], not 17"),
    ("out_bits", 1, "out_bits must be in [2, 32], not 1"),
    ("out_frac", 16, "out_frac must be in [0, out_bits - 1] = [0, 15], not 16"),
    ("exp_frac", 11, "exp_frac must be in [0, 10], not 11"),
    ("exp_bits", 3, "exp_bits must be in [4, 24], not 3"),
    ("block_rows", 0, "block_rows must be in [1, seq_len] = [1, 128], not 0"),
    ("block_rows", 129, "block_rows must be in [1, seq_len] = [1, 128], not 129"),
    ("block_cols", 0, "block_cols must be in [1, seq_len] = [1, 128], not 0"),
    ("criterion", "mean", "criterion must be one of abs_sum, sum, max, not 'mean'"),
    ("prune_mode", "random", "prune_mode must be one of off, topk, threshold, mass, not 'random'"),
    ("k_frac", 0, "k_frac must be a number in (0, 1], not 0"),
    ("k_frac", 0.0, "k_frac must be a number in (0, 1], not 0.0"),
    ("k_frac", 1.5, "k_frac must be a number in (0, 1], not 1.5"),
    ("k_frac", -0.25, "k_frac must be a number in (0, 1], not -0.25"),
    ("k_frac", 48, "k_frac must be a number in (0, 1], not 48"),
    ("k_frac", "0.5", "k_frac must be a number in (0, 1], not '0.5'"),
    ("k_frac", 0.3, "k_frac must be a multiple of 2**-8 = 0.00390625, not 0.3"),
    ("rho", 1.5, "rho must be a number in [0, 1], not 1.5"),
    ("rho", -0.25, "rho must be a number in [0, 1], not -0.25"),
    ("rho", float("nan"), "rho must be a number in [0, 1], not nan"),
    ("rho", "0.5", "rho must be a number in [0, 1], not '0.5'"),
    ("rho", 0.3, "rho must be a multiple of 2**-rho_frac = 0.00390625, not 0.3"),
    ("eps", 1.0, "eps must be below 1 and a multiple of 2**-8 = 0.00390625, not 1.0"),
    ("eps", 0.001, "eps must be below 1 and a multiple of 2**-8 = 0.00390625, not 0.001"),
    ("eps", -0.5, "eps must be a number in [0, 1], not -0.5"),
    ("rho_frac", 0, "rho_frac must be in [1, 16], not 0"),
    ("head_prune", 1, "head_prune must be true or false, not 1"),
    ("tau_head", -1, f"tau_head must be in [0, largest head importance] = [0, {D.h_max}], not -1"),
    ("tau_head", D.h_max + 1,
     f"tau_head must be in [0, largest head importance] = [0, {D.h_max}], not {D.h_max + 1}"),
    ("approx", "fast", "approx must be one of drop_ff, exact, comp, not 'fast'"),
    ("causal", "no", "causal must be true or false, not 'no'"),
    ("int_lanes", 0, "int_lanes must be in [1, 1024], not 0"),
    ("int_lanes", -16, "int_lanes must be in [1, 1024], not -16"),
    ("int_lanes", 1025, "int_lanes must be in [1, 1024], not 1025"),
    ("int_lanes", 16.0, "int_lanes must be an integer, not 16.0"),
    ("array_rows", 0, "array_rows must be in [1, 64], not 0"),
    ("array_cols", 65, "array_cols must be in [1, 64], not 65"),
    ("front_end", "bitserial", "front_end must be one of hdp, leopard, not 'bitserial'"),
    ("leopard_th", 64.5, "leopard_th must be a number in [-64, 64], not 64.5"),
    ("leopard_th", 0.1, "leopard_th must be a multiple of 0.0625, not 0.1"),
    ("leopard_th", float("inf"), "leopard_th must be a number in [-64, 64], not inf"),
    ("leopard_lanes", 0, "leopard_lanes must be in [1, 64], not 0"),
    ("leopard_lanes", 65, "leopard_lanes must be in [1, 64], not 65"),
    ("mass_pruner", 0, "mass_pruner must be true or false, not 0"),
]


def test_mass_mode_needs_the_mass_pruner():
    """A top built without the mass pruner has no mass mode: asking for it names both fields."""
    assert not HDPConfig(mass_pruner=False).mass_pruner
    with pytest.raises(ValueError, match="^prune_mode 'mass' needs the mass pruner in the top: "
                                         "mass_pruner must be true for it, not False$"):
        HDPConfig(prune_mode="mass", mass_pruner=False)
    with pytest.raises(ValueError, match="mass_pruner must be true"):
        HDPConfig(mass_pruner=False).replace(prune_mode="mass")


@pytest.mark.parametrize("field,value", [("prune_mode", "topk"), ("approx", "drop_ff"),
                                         ("head_prune", True)])
def test_leopard_front_end_refuses_hdp_settings(field, value):
    base = dict(front_end="leopard", prune_mode="off", approx="exact", head_prune=False)
    HDPConfig(**base)
    with pytest.raises(ValueError, match=f"front_end leopard .*: {field} must be"):
        HDPConfig(**{**base, field: value})
    # a design shorter than its lane count builds one lane per token
    assert HDPConfig(seq_len=5).leopard_lanes_used == 5
    assert HDPConfig(seq_len=5, leopard_lanes=3).leopard_lanes_used == 3


@pytest.mark.parametrize("field,value,message", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_invalid_value_message(field, value, message):
    with pytest.raises(ValueError) as exc:
        HDPConfig(**{field: value})
    assert str(exc.value) == message
    # the message names the field and the value (and states the rule: "must be ...")
    assert field in str(exc.value) and "must be" in str(exc.value)


def test_every_field_has_a_validation_case():
    assert {f for f, _, _ in BAD} == set(HDPConfig.field_names())


def test_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        HDPConfig(128)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        D.seq_len = 3  # type: ignore[misc]


def test_replace_validates_and_rejects_unknown():
    assert D.replace(k_frac=0.5).k_frac == 0.5 and D.replace(k_frac=0.5).k_frac_q == 128
    assert D.replace(k_frac=1 / 256).k_frac_q == 1 and D.replace(k_frac=1).k_frac_q == 256
    assert D.k_frac == 0.75 and D.k_frac_q == 192
    with pytest.raises(ValueError,
                       match=r"^qk_frac must be in \[0, qk_bits - 1\] = \[0, 3\], not 4$"):
        D.replace(seq_len=8, qk_bits=4)
    with pytest.raises(ValueError, match="unknown configuration field 'kb'"):
        D.replace(kb=3)


# ---------------------------------------------------------------------------- presets and JSON
@pytest.mark.parametrize("name", preset_names())
def test_json_round_trip(name):
    cfg = preset(name)
    text = cfg.to_json()
    back = HDPConfig.from_json(text)
    assert back == cfg
    assert json.loads(text) == cfg.to_dict()
    assert HDPConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_from_dict_rejects_unknown_missing_and_non_objects():
    d = D.to_dict()
    with pytest.raises(ValueError, match="unknown configuration field 'bogus'"):
        HDPConfig.from_dict({**d, "bogus": 1})
    del d["rho"]
    with pytest.raises(ValueError, match="configuration field 'rho' is missing"):
        HDPConfig.from_dict(d)
    with pytest.raises(ValueError, match="configuration must be a JSON object, not list"):
        HDPConfig.from_json("[1, 2]")


def test_presets_are_what_their_docstrings_say():
    tiny, odd, default, large = (preset(n) for n in ("tiny", "odd", "default", "large"))
    assert (tiny.seq_len, tiny.head_dim, tiny.block_rows, tiny.block_cols) == (8, 4, 2, 2)
    assert odd.seq_len % odd.block_rows and odd.seq_len % odd.block_cols and odd.k_frac == 0.25
    assert odd.array_rows != odd.array_cols
    assert (default.seq_len, default.head_dim) == (128, 32)
    assert (large.seq_len, large.head_dim, large.k_frac, large.k_frac_q) == (512, 64, 0.75, 192)
    assert (default.k_frac, default.k_frac_q, default.approx, tiny.k_frac) == (0.671875, 172,
                                                                          "exact", 0.5)
    with pytest.raises(ValueError,
                       match="preset must be one of tiny, odd, default, large, leopard, not 'huge'"):
        preset("huge")


# ---------------------------------------------------------------------------- with_setting
def test_with_setting_parses_by_field_type():
    assert D.with_setting("k_frac", "0.5").k_frac == 0.5
    assert D.with_setting("k_frac", "1").k_frac == 1.0
    assert D.with_setting("seq_len", "0x10").seq_len == 16
    assert D.with_setting("rho", "0.25").rho == 0.25
    assert D.with_setting("criterion", "sum").criterion == "sum"
    for text, value in [("1", True), ("true", True), ("ON", True), ("yes", True),
                        ("0", False), ("false", False), ("off", False), ("No", False)]:
        assert D.with_setting("causal", text).causal is value
    assert D.with_setting("head_prune", " on ").head_prune is True


@pytest.mark.parametrize("key,value,message", [
    ("seq_len", "abc", "seq_len must be an integer, not 'abc'"),
    ("seq_len", "1.5", "seq_len must be an integer, not '1.5'"),
    ("k_frac", "half", "k_frac must be a number, not 'half'"),
    ("rho", "half", "rho must be a number, not 'half'"),
    ("causal", "maybe", "causal must be true or false, not 'maybe'"),
    ("k_frac", "0", "k_frac must be a number in (0, 1], not 0.0"),
    ("k_frac", "0.1", "k_frac must be a multiple of 2**-8 = 0.00390625, not 0.1"),
    ("criterion", "avg", "criterion must be one of abs_sum, sum, max, not 'avg'"),
])
def test_with_setting_errors(key, value, message):
    with pytest.raises(ValueError) as exc:
        D.with_setting(key, value)
    assert str(exc.value) == message


def test_with_setting_unknown_key():
    with pytest.raises(ValueError, match="^unknown configuration field 'kb'; fields are seq_len, "):
        D.with_setting("kb", "3")


# ---------------------------------------------------------------------------- width helpers
def test_width_helpers():
    assert signed_width(-128, 127) == 8
    assert signed_width(-129, 0) == 9
    assert signed_width(0, 128) == 9
    assert signed_width(0, 0) == 1
    assert signed_width(-1, 0) == 1
    assert unsigned_width(0) == 1
    assert unsigned_width(255) == 8
    assert unsigned_width(256) == 9


def test_derived_values_by_hand():
    """The default configuration's widths, computed by hand from docs/spec.md."""
    c = D
    # q_I in [-8, 7] (4 integer bits); A in [32 * -8 * 7, 32 * 64] = [-1792, 2048]
    assert c.qk_int_range == (-8, 7) and c.a_range == (-1792, 2048) and c.a_width == 13
    # X in [2 * 32 * -8 * 15, 2 * 32 * 7 * 15] = [-7680, 6720]
    assert c.x_range == (-7680, 6720) and c.x_width == 14
    assert c.c_range == (0, 32 * 225) and c.c_width == 13
    # exact scores: 32 * [-128 * 127, 128 * 128]; drop_ff can go C_max lower, comp can add
    # at most (15 * 32 * 15) >> 1 = 3600 to drop_ff
    assert c.comp_max == 3600 and c.comp_width == 12
    assert c.score_range == (-520192 - 7200, 524288 + 3600) and c.score_width == 21
    assert c.importance_range == (-1792, 2048)  # max criterion
    assert c.replace(criterion="abs_sum").importance_range == (0, 4 * 2048)
    assert c.replace(criterion="sum").importance_range == (4 * -1792, 4 * 2048)
    assert c.h_max == 128 * 128 * 2048
    # P = 12: R = floor(2**(W+P+G) / sum) <= 2**(P+G) = 2**21 (sum >= 2**W) needs 22 bits;
    # p in [0, 2**12] needs 13; the P x V sum is at most (2**12 + 64) * [-128, 127]
    assert c.prob_frac == 12 and c.prob_width == 13
    assert c.recip_guard == 7 + 2 and c.recip_shift == 16 + 12 + 9 and c.recip_width == 22
    assert c.prob_sum_max == 4096 + 64 and c.pv_range == (4160 * -128, 4160 * 127)
    assert c.pv_width == 21 and c.array_acc_width == 21
    assert c.out_shift == 12 + 4 - 8
    assert c.n_block_rows == c.n_block_cols == 64 and c.rho_q == 128


# ---------------------------------------------------------------------------- widths vs extremes
def _fits_signed(x, width):
    x = np.asarray(x, dtype=object) if isinstance(x, int) else np.asarray(x)
    return bool(np.all(x >= -(1 << (width - 1)))) and bool(np.all(x <= (1 << (width - 1)) - 1))


def _patterns(cfg, rng):
    """Extreme quantized Q, K, V: all-max, all-min, mixed signs, the value with the largest
    integer part and largest fraction (which reaches X's extremes), and random mixes."""
    b, f = cfg.qk_bits, cfg.qk_frac
    qmax, qmin = (1 << (b - 1)) - 1, -(1 << (b - 1))
    qminf = qmin + (1 << f) - 1  # x_I = most negative, x_F = all ones
    vmax, vmin = (1 << (cfg.v_bits - 1)) - 1, -(1 << (cfg.v_bits - 1))
    n, d = cfg.seq_len, cfg.head_dim
    full = np.full((n, d), 0, np.int64)
    pats = {
        "all_max": (full + qmax, full + qmax, full + vmax),
        "all_min": (full + qmin, full + qmin, full + vmin),
        "max_min": (full + qmax, full + qmin, full + vmax),
        "min_max": (full + qmin, full + qmax, full + vmin),
        "min_frac": (full + qminf, full + qmax, full + vmax),
        "frac_min": (full + qmax, full + qminf, full + vmin),
    }
    choices = np.array([qmax, qmin, qminf, 0, -1])
    for i in range(2):
        pats[f"mix{i}"] = (rng.choice(choices, (n, d)), rng.choice(choices, (n, d)),
                           rng.choice(np.array([vmax, vmin]), (n, d)))
    return pats


def _check_ranges(cfg, r, label):
    def inside(name, x, lo, hi):
        x = np.asarray(x)
        assert x.min() >= lo and x.max() <= hi, \
            f"{label}: {name} in [{x.min()}, {x.max()}] escapes [{lo}, {hi}]"

    m = r.mask
    inside("A", r.a[m], *cfg.a_range)
    assert _fits_signed(r.a, cfg.a_width)
    inside("X", r.x[m], *cfg.x_range)
    assert _fits_signed(r.x, cfg.x_width)
    inside("C", r.c[m], *cfg.c_range)
    assert r.c.max() < (1 << cfg.c_width)
    inside("S", r.scores, *cfg.score_range)
    assert _fits_signed(r.scores, cfg.score_width)
    inside("I", r.importance, *cfg.importance_range)
    assert _fits_signed(r.importance, cfg.importance_width)
    assert 0 <= r.head_importance <= cfg.h_max and r.head_importance < (1 << cfg.h_width)
    # both sides of the threshold rule, for every block-row with a valid block (int64 holds
    # them: the widths checked here are far below 63 bits)
    assert cfg.threshold_width < 60
    one = 1 << cfg.rho_frac
    ok = np.asarray(r.block_valid, bool)
    rows = ok.any(axis=1)
    imp = np.asarray(r.importance, np.int64)
    n = ok.sum(axis=1)[rows]
    total = np.where(ok, imp, 0).sum(axis=1)[rows]
    hi = np.where(ok, imp, np.iinfo(np.int64).min).max(axis=1)[rows]
    lo = np.where(ok, imp, np.iinfo(np.int64).max).min(axis=1)[rows]
    lo_s, hi_s = cfg.importance_row_sum_range
    assert ((lo_s <= total) & (total <= hi_s)).all(), label
    rhs = cfg.rho_q * hi * n + (one - cfg.rho_q) * total
    for name, x in (("lhs", lo * n * one), ("lhs", hi * n * one), ("rhs", rhs)):  # v n 2^F: monotonic
        assert _fits_signed(x, cfg.threshold_width), f"{label}: {name} in [{x.min()}, {x.max()}]"
    e = softmax.softmax_exponents(r.scores, r.entry_keep, cfg)
    assert e.min() >= 0 and e.max() <= (1 << cfg.exp_bits) and e.max() < (1 << cfg.exp_value_width)
    assert e.sum(axis=1).max() < (1 << cfg.exp_sum_width), label
    assert r.probs.min() >= 0 and r.probs.max() <= (1 << cfg.prob_frac) < (1 << cfg.prob_width)
    assert r.probs.sum(axis=1).max() <= cfg.prob_sum_max, label
    inside("acc", r.acc, *cfg.pv_range)
    assert _fits_signed(r.acc, cfg.pv_width) and _fits_signed(r.acc, cfg.array_acc_width)
    inside("out", r.out_int, *cfg.out_range)


@pytest.mark.parametrize("name", preset_names())
def test_widths_hold_extreme_inputs(name):
    """Every intermediate of the golden model stays inside the configuration's derived ranges
    and widths, for extreme operands, in every criterion, approximation and pruning mode (all
    their combinations up to N = 128)."""
    base = preset(name)
    rng = np.random.default_rng(1234)
    reached_a = set()
    combos = list(itertools.product(CRITERIA, APPROX_MODES, PRUNE_MODES))
    if base.seq_len > 128:
        # N = 512: every criterion with every approximation once, the pruning modes in turn
        # (each mode still runs; the full product takes minutes of golden model at this size)
        combos = [(c, a, PRUNE_MODES[i % len(PRUNE_MODES)])
                  for i, (c, a) in enumerate(itertools.product(CRITERIA, APPROX_MODES))]
    for crit, appr, mode in combos:
        cfg = base.replace(front_end="hdp", criterion=crit, approx=appr, prune_mode=mode, causal=False)
        for pname, (q, k, v) in _patterns(cfg, rng).items():
            r = model.attention_head_int(q, k, v, cfg)
            _check_ranges(cfg, r, f"preset={name} criterion={crit} approx={appr} "
                                  f"mode={mode} pattern={pname}")
            reached_a.update({int(r.a.min()), int(r.a.max())})
    # the extremes of A are reached, so a_range is tight and this test can fail if it shrank
    assert set(base.a_range) <= reached_a


def test_prob_sum_bound_is_reached_closely():
    """Many equal scores: every probability rounds the same way; the sum stays within
    prob_sum_max (the bound the P x V width relies on)."""
    for name in preset_names():
        cfg = preset(name).replace(front_end="hdp", prune_mode="off", causal=False)
        for n in range(1, cfg.seq_len + 1):
            s = np.zeros((1, n), np.int64)
            p = softmax.softmax_rows(s, np.ones((1, n), bool), cfg)
            assert p.sum() <= cfg.prob_sum_max, (name, n, p.sum())


def _softmax_pv_extremes(cfg):
    """Rows that push the softmax and P x V widths: every length 1..N of equal scores (each
    probability rounds the same way, the row sum is furthest above 1.0), one score far above
    the rest (p = 2**P exactly, the others 0), scores spread so that many probabilities sit
    near half an LSB; with V all-max and all-min."""
    n = cfg.seq_len
    lens = np.arange(1, n + 1)
    keep = np.arange(n)[None, :] < lens[:, None]
    rows = [np.zeros((n, n), np.int64)]
    one = np.full((n, n), cfg.score_range[0])
    one[:, 0] = cfg.score_range[1]
    rows.append(one)
    step = max(1, (1 << (2 * cfg.qk_frac)) // 4)
    rows.append(np.tile(-step * np.arange(n), (n, 1)))
    for s in rows:
        yield s, keep


@pytest.mark.parametrize("prob_frac", [1, 8, 12, 14, 16])
@pytest.mark.parametrize("name", ["default", "large"])
def test_softmax_and_pv_widths_hold_for_prob_frac(name, prob_frac):
    """The widths derived from prob_frac (reciprocal, probability, the normalise product, row
    sum, P x V accumulator, output shift) hold the golden model's values for every row length
    up to N (N = 512 in ``large``), at the default 12 and at the limits 1 and 16."""
    cfg = preset(name).replace(prob_frac=prob_frac)
    W, P, G = cfg.exp_bits, cfg.prob_frac, cfg.recip_guard
    assert cfg.recip_shift == W + P + G and cfg.prob_width == P + 1
    # R is largest for the smallest row sum (2**W, a row whose one kept entry is its max)
    assert (1 << cfg.recip_shift) >> W == 1 << (P + G) < 1 << cfg.recip_width
    assert ((1 << cfg.recip_shift) >> W) >> (cfg.recip_width - 1) == 1, "recip_width not tight"
    lo_v, hi_v = cfg.v_range
    for s, keep in _softmax_pv_extremes(cfg):
        e = softmax.softmax_exponents(s, keep, cfg)
        total = e.sum(axis=1)
        assert total.max() < 1 << cfg.exp_sum_width
        recip = (1 << cfg.recip_shift) // total
        assert recip.max() < 1 << cfg.recip_width
        # the normalise stage's product e * R, exact before the shift
        assert (e * recip[:, None]).max() < 1 << (cfg.exp_value_width + cfg.recip_width)
        p = softmax.softmax_rows(s, keep, cfg)
        assert p.min() >= 0 and p.max() <= 1 << P < 1 << cfg.prob_width
        assert p.sum(axis=1).max() <= cfg.prob_sum_max
        # every row with a kept entry sums to 1.0 within half an LSB per entry
        assert (p.sum(axis=1) >= (1 << P) - (keep.sum(axis=1) + 1) // 2 - 1).all()
        for v in (np.full((cfg.seq_len, 1), hi_v), np.full((cfg.seq_len, 1), lo_v)):
            acc = golden_pv.pv(p, v)
            assert cfg.pv_range[0] <= acc.min() and acc.max() <= cfg.pv_range[1]
            assert _fits_signed(acc, cfg.pv_width) and _fits_signed(acc, cfg.array_acc_width)
            out = golden_pv.requantize(acc, cfg)
            assert cfg.out_range[0] <= out.min() and out.max() <= cfg.out_range[1]
    # the single-entry row reaches p = 2**P: prob_width is tight
    p1 = softmax.softmax_rows(np.zeros((1, 1), np.int64), np.ones((1, 1), bool), cfg)
    assert p1[0, 0] == 1 << P and (1 << P) >> (cfg.prob_width - 1) == 1


def test_prob_frac_default_is_12_and_small_presets_keep_their_own():
    """The default's 12 probability bits reach default and large; tiny and odd set theirs."""
    assert HDPConfig().prob_frac == 12
    assert [preset(n).prob_frac for n in ("tiny", "odd", "default", "large")] == [8, 7, 12, 12]


@pytest.mark.parametrize("name", preset_names())
def test_presets_validate_their_own_widths(name):
    cfg = PRESETS[name]
    assert cfg.array_acc_width >= max(cfg.score_width, cfg.pv_width)
    assert cfg.tau_head <= cfg.h_max


def test_softmax_scale_that_rounds_to_zero_is_rejected_naming_exp_frac():
    with pytest.raises(ValueError, match=r"exp_frac must be >= \d+ for qk_frac = 15 and head_dim = 1024"):
        HDPConfig(qk_bits=16, qk_frac=15, head_dim=1024, exp_frac=0, seq_len=8)


# ---------------------------------------------------------------------------- defect 10 and 12
def test_defect10_replace_validates_all_changes_together():
    """Changes that are only valid together are accepted in any order (validated once)."""
    small = D.merged({"qk_bits": 4, "qk_frac": 2})
    assert (small.qk_bits, small.qk_frac) == (4, 2)
    assert D.merged({"qk_frac": 2, "qk_bits": 4}) == small
    assert D.merged({}) == D


def test_defect10_merged_partial_and_unknown_keys():
    t = preset("tiny").merged({"criterion": "sum"})
    assert t == preset("tiny").replace(criterion="sum")
    with pytest.raises(ValueError, match=r"^c\.json: unknown configuration field 'kb'; fields are "
                                         r"seq_len, head_dim, .*, array_cols$"):
        D.merged({"kb": 1}, "c.json: ")
    with pytest.raises(ValueError, match="configuration must be a JSON object, not list"):
        D.merged([1])  # type: ignore[arg-type]


def test_defect10_parse_setting_does_not_validate_the_range():
    assert HDPConfig.parse_setting("seq_len", "99999") == 99999  # checked later, with all other changes
    assert HDPConfig.parse_setting("k_frac", "7") == 7.0
    with pytest.raises(ValueError, match="^unknown configuration field 'kb'; fields are seq_len, "):
        HDPConfig.parse_setting("kb", "3")


def test_parse_settings_parses_each_item_by_its_field():
    """``--set`` lists for the CLI and the benches: parsed, not validated; a later item wins."""
    assert HDPConfig.parse_settings([" seq_len = 64", "causal=yes", "k_frac=0.5", "k_frac=7"]) == \
        {"seq_len": 64, "causal": True, "k_frac": 7.0}
    assert HDPConfig.parse_settings([]) == {}
    with pytest.raises(ValueError, match="^--set takes KEY=VALUE, not 'seq_len'$"):
        HDPConfig.parse_settings(["seq_len"])
    with pytest.raises(ValueError, match="^seq_len must be an integer, not 'x'$"):
        HDPConfig.parse_settings(["seq_len=x"])


def test_defect12_describe_lists_every_field_with_its_rule():
    rows = HDPConfig.describe()
    assert [r["name"] for r in rows] == HDPConfig.field_names()
    by = {r["name"]: r for r in rows}
    assert by["k_frac"] == {"name": "k_frac", "type": "float", "doc": by["k_frac"]["doc"],
                            "rule": "number in (0, 1]; a multiple of 2**-8"}
    assert by["seq_len"]["rule"] == "integer in [1, 4096]"
    assert by["criterion"]["rule"] == "one of " + ", ".join(CRITERIA)
    assert by["causal"]["rule"] == "true or false" and by["causal"]["type"] == "bool"
    assert "2**-rho_frac" in by["rho"]["rule"] and by["rho"]["type"] == "float"
    assert all(r["doc"] for r in rows)


# ---------------------------------------------------------------------------- int_lanes
def test_int_lanes_rule_passes_and_presets():
    """int_lanes: products per cycle of each integer dot product; ceil(head_dim / int_lanes)
    passes per block; a value >= head_dim is one pass, so the default (16, two passes at
    d = 32) stays valid for the smaller presets (d = 4, 5: one block per cycle as before) and
    for any head_dim."""
    by = {r["name"]: r for r in HDPConfig.describe()}
    assert by["int_lanes"]["rule"] == ("integer in [1, 1024]; a value >= head_dim means "
                                       "head_dim: one block per cycle")
    assert "ceil(head_dim / int_lanes)" in by["int_lanes"]["doc"]
    assert D.int_lanes == 16 and (D.int_passes, D.int_lanes_used) == (2, 16)
    assert [(preset(n).int_passes, preset(n).int_lanes_used) for n in ("tiny", "odd")] == \
        [(1, 4), (1, 5)]
    assert D.with_setting("int_lanes", "8").int_passes == 4
    assert D.replace(head_dim=1, exp_frac=8).int_passes == 1
    with pytest.raises(ValueError, match=r"^int_lanes must be an integer, not 'x'$"):
        D.with_setting("int_lanes", "x")
    with pytest.raises(ValueError, match=r"^int_lanes must be in \[1, 1024\], not 0$"):
        D.merged({"int_lanes": 0})
