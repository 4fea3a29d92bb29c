"""Amaranth-simulator tests of :class:`hw.block_pruner.BlockPruner` against ``golden/``.

Vectors come from :mod:`sim.vectors.pruner` (shared with the cocotb bench); whole outputs are
compared and the first mismatch is reported with config, case, seed, index, expected, actual.
"""

import dataclasses
import gc
import random

import numpy as np
import pytest
from amaranth.hdl import Cat, Const, Fragment, signed

from hw.block_pruner import BlockPruner, imp_layout, mask_latency, mask_layout
from hw.config import PRUNE_MODES
from hw.presets import preset
from sim.amaranth_streams import StreamChecker, handshake_trace, run_amaranth, stream_get, stream_put
from sim.vectors import pruner as vec

PRESETS = ("tiny", "odd", "default")
# default preset (64 block columns) is slow in Amaranth's simulator: cap valid_len there
MAX_LEN = {"tiny": None, "odd": None, "default": 12}


def run_heads(cfg, heads, *, stall_in=0.0, stall_out=0.0, stall_seed=0, dut=None, trace=None):
    """Stream every head through a BlockPruner; returns the packed mask beats.

    Stream checkers on both ports enforce the handshake rules; ``trace`` (a dict) receives the
    cycle numbers of the input and output handshakes."""
    dut = BlockPruner(cfg) if dut is None else dut
    ilay = imp_layout(cfg)
    n_out = sum(len(h.masks) for h in heads)
    got: list[int] = []
    in_rng, out_rng = random.Random(stall_seed), random.Random(stall_seed + 1)

    async def producer(ctx):
        for h in heads:
            ctx.set(dut.mode, h.mode)
            ctx.set(dut.k_frac_q, h.k_frac_q)
            ctx.set(dut.rho_q, h.rho_q)
            ctx.set(dut.valid_len, h.valid_len)
            for beat in h.beats:
                await stream_put(ctx, dut.imp_in, ilay.const(beat), in_rng, stall_in)
            # garbage on the settings between heads must not matter once the last beat is in
            ctx.set(dut.mode, 3 - h.mode)
            ctx.set(dut.k_frac_q, 0)
            ctx.set(dut.rho_q, 1)

    async def consumer(ctx):
        for _ in range(n_out):
            got.append((await stream_get(ctx, dut.mask_out, out_rng, stall_out)).as_bits())

    checkers = [StreamChecker(dut.imp_in, "imp_in"), StreamChecker(dut.mask_out, "mask_out")]
    background = [c.testbench for c in checkers] + (
        [handshake_trace(trace, in_=dut.imp_in, out=dut.mask_out)] if trace is not None else [])
    run_amaranth(dut, [producer, consumer], background=background, clock=1e-6)
    assert checkers[0].count == sum(h.n_blocks for h in heads)
    return got


def check(cfg, name, seed, heads, **kw):
    got = run_heads(cfg, heads, **kw)
    exp = [vec.pack_mask(cfg, mk) for h in heads for mk in h.masks]
    msg = vec.first_mismatch(cfg, name, seed, exp, got, heads)
    assert msg is None, msg
    return len(got)


# ---------------------------------------------------------------------------- constructor
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_constructor_rejects_non_config():
    with pytest.raises(TypeError, match=r"^cfg must be an HDPConfig, not 3$"):
        BlockPruner(3)
    gc.collect()  # the half-built object warns when collected: inside this test's filter


def test_ports_and_layouts():
    cfg = preset("odd")
    dut = BlockPruner(cfg)
    assert len(dut.mode) == 2
    assert len(dut.k_frac_q) == cfg.k_frac_width == 9
    assert len(dut.rho_q) == cfg.rho_frac + 1
    assert len(dut.valid_len) == cfg.valid_len_width
    lay = imp_layout(cfg)
    assert lay["imp"].shape == signed(cfg.importance_width)
    assert mask_layout(cfg)["mask"].shape.width == cfg.n_block_cols
    Fragment.get(dut, None)  # elaborates


# ---------------------------------------------------------------------------- golden equality
def _cases(name):
    cfg = preset(name)
    return cfg, vec.directed_cases(cfg, seed=1, max_len=MAX_LEN[name])


@pytest.mark.parametrize("name", [
    "tiny", "odd",
    # slow in Amaranth's simulator (64 block columns); the cocotb bench covers it on both simulators
    pytest.param("default", marks=pytest.mark.slow)])
@pytest.mark.parametrize("stall", [0.0, 0.3], ids=["nostall", "stall"])
def test_directed(name, stall):
    cfg, cases = _cases(name)
    heads = []
    for c in cases:
        if name == "default" and c.name == "extreme_importance_width":
            continue  # full-length heads: test_extremes_default covers them with fewer heads
        heads += c.heads
    # one run for all directed cases (settings change between heads); then per case on failure
    got = run_heads(cfg, heads, stall_in=stall, stall_out=stall, stall_seed=7)
    exp = [vec.pack_mask(cfg, mk) for h in heads for mk in h.masks]
    if got != exp:
        for c in cases:
            check(cfg, c.name, 1, c.heads, stall_in=stall, stall_out=stall, stall_seed=7)
        pytest.fail(vec.first_mismatch(cfg, "directed", 1, exp, got, heads))


def test_extremes_default():
    """The threshold rule at importance extremes with every block column valid (n = 64):
    proves that threshold_width holds both sides on the default preset (the tiny and odd
    presets run every extreme head in test_directed; the narrow variant fails there)."""
    cfg = preset("default")
    case = next(c for c in vec.directed_cases(cfg, seed=2) if c.name == "extreme_importance_width")
    # the mixed-sign heads and the single-outlier heads carry the largest |lhs|, |rhs|
    heads = case.heads[8:11] + case.heads[12:]
    assert {h.rho_q for h in heads} >= {0, 1 << cfg.rho_frac}
    check(cfg, case.name, 2, heads)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", [11, 12])
def test_random(name, seed):
    cfg = preset(name)
    case = vec.random_case(cfg, seed, n_heads=6, max_len=MAX_LEN[name])
    stall = 0.25 if seed % 2 else 0.0
    check(cfg, case.name, seed, case.heads, stall_in=stall, stall_out=stall, stall_seed=seed)


@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (3, 1), (2, 3), (4, 4), (9, 2)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("criterion", ["sum", "abs_sum"])
def test_block_shapes_and_criteria(shape, criterion):
    """Block shapes with several diagonal blocks per row (b_r > b_c), diagonal blocks shared
    by rows (b_r < b_c), one block covering the whole sequence, and the criteria the presets
    do not use (importance widths differ): seeded random heads and the tie/extreme cases."""
    br, bc = shape
    cfg = preset("tiny").replace(seq_len=9, block_rows=br, block_cols=bc, k_frac=1 / 256,
                                 criterion=criterion)
    seed = 100 + 10 * br + bc
    heads = vec.random_case(cfg, seed, n_heads=6).heads
    for c in vec.directed_cases(cfg, seed=seed):
        if c.name in ("ties_at_kth_place", "extreme_importance_width", "negative_importances",
                      "causal_ragged"):
            heads += c.heads
    check(cfg, f"shape{br}x{bc}_{criterion}", seed, heads, stall_in=0.2, stall_out=0.2,
          stall_seed=seed)


def test_minilm_fixture():
    cfg = preset("default")
    case = vec.fixture_case(cfg, "medium", heads=(0, 40))
    if case is None:
        pytest.skip("MiniLM fixture tests/data/minilm_medium.npz not in this checkout")
    check(cfg, case.name, 0, case.heads, stall_in=0.2, stall_out=0.2, stall_seed=3)


# ---------------------------------------------------------------------------- throughput/latency
def _random_head(cfg, rng, n, causal, **settings):
    lo, hi = cfg.importance_range
    valid = vec.block_validity(cfg, n, causal)
    imp = rng.integers(lo, hi + 1, size=valid.shape) * valid
    return vec.make_head(cfg, imp, valid, n, causal, **settings)


@pytest.mark.parametrize("mode", [vec.MODE_OFF, vec.MODE_TOPK, vec.MODE_THRESHOLD])
@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_throughput_and_latency(name, mode):
    """No stalls: one block accepted every cycle across block-rows and heads (heads in order of
    non-decreasing row length), mask beats of consecutive rows of a head exactly ``m`` cycles
    apart, latency 8 (off) or m + 7 (topk, threshold) cycles after a row's last beat."""
    cfg = preset(name)
    rng = np.random.default_rng(5)
    heads = [_random_head(cfg, rng, n, causal, mode=mode, k_frac_q=128, rho_q=100)
             for n, causal in ((1, False), (3, False), (cfg.seq_len - 1, True),
                               (cfg.seq_len, False), (cfg.seq_len, True))]
    trace = {}
    got = run_heads(cfg, heads, trace=trace)
    exp = [vec.pack_mask(cfg, mk) for h in heads for mk in h.masks]
    assert got == exp
    ins, outs = trace["in"], trace["out"]
    n_blocks = sum(h.n_blocks for h in heads)
    assert len(ins) == n_blocks
    # continuous acceptance: every cycle from the first beat to the last
    assert ins == list(range(ins[0], ins[0] + n_blocks)), "imp_in stalled without backpressure"
    row_ends = [c for c, b in zip(ins, [b for h in heads for b in h.beats]) if b["last_col"]]
    widths = [len(h.beats) // len(h.masks) for h in heads for _ in h.masks]
    lat = [o - e for o, e in zip(outs, row_ends)]
    want = [8 if mode == vec.MODE_OFF else m + 7 for m in widths]
    assert want == [mask_latency(PRUNE_MODES[mode], m) for m in widths]  # the cycle models' figure
    assert lat == want, f"latency per row {lat}, expected {want}"
    # within the last (full) head: one mask beat every m cycles
    m = widths[-1]
    gaps = [b - a for a, b in zip(outs[-len(heads[-1].masks):], outs[-len(heads[-1].masks) + 1:])]
    assert gaps == [m] * (len(heads[-1].masks) - 1)


@pytest.mark.parametrize("mode", [vec.MODE_OFF, vec.MODE_TOPK, vec.MODE_THRESHOLD])
def test_shorter_rows_after_longer(mode):
    """Documented exception: in topk and threshold mode a head whose rows (m' blocks) are
    shorter than the previous head's (m) stalls the new head's first row end by m - m'
    cycles; off never stalls."""
    cfg = preset("odd")
    rng = np.random.default_rng(9)
    heads = [_random_head(cfg, rng, n, False, mode=mode) for n in (cfg.seq_len, 1, 1, 5)]
    trace = {}
    got = run_heads(cfg, heads, trace=trace)
    assert got == [vec.pack_mask(cfg, mk) for h in heads for mk in h.masks]
    ins = trace["in"]
    stall = ins[-1] - ins[0] + 1 - len(ins)
    m_prev = len(heads[0].beats) // len(heads[0].masks)
    assert stall == (m_prev - 1 if mode != vec.MODE_OFF else 0)


def test_throughput_default_full_row():
    """The default preset's widest block-row (64 blocks): rows back to back, one mask beat every
    64 cycles, in topk and threshold mode (first 3 block-rows of a full-length head)."""
    cfg = preset("default")
    rng = np.random.default_rng(1)
    for mode in (vec.MODE_TOPK, vec.MODE_THRESHOLD):
        full = _random_head(cfg, rng, cfg.seq_len, False, mode=mode, k_frac_q=128)
        nb = 3 * cfg.n_block_cols
        head = dataclasses.replace(full, beats=full.beats[:nb], masks=full.masks[:3])
        trace = {}
        got = run_heads(cfg, [head], trace=trace)
        assert got == [vec.pack_mask(cfg, mk) for mk in head.masks]
        outs = trace["out"]
        assert [b - a for a, b in zip(outs, outs[1:])] == [cfg.n_block_cols] * 2
        assert trace["in"] == list(range(trace["in"][0], trace["in"][0] + nb))


# ---------------------------------------------------------------------------- broken variants
class _TiesToHigherIndex(BlockPruner):
    def _ranks_ahead(self, u_other, u_item, lower):
        return Cat(~lower, u_other) > Cat(Const(0, 1), u_item)


class _BudgetRoundedDown(BlockPruner):
    BUDGET_BIAS = 0


class _ThresholdStrict(BlockPruner):
    def _threshold_keeps(self, lhs, rhs):
        return lhs > rhs


class _ThresholdNarrow(BlockPruner):
    @property
    def threshold_width(self):
        return self.cfg.threshold_width - 1


@pytest.mark.parametrize("broken,case_name", [
    (_TiesToHigherIndex, "ties_at_kth_place"),
    (_BudgetRoundedDown, "k_frac_odd_codes"),
    (_ThresholdStrict, "all_equal"),
    (_ThresholdNarrow, "extreme_importance_width"),
])
def test_broken_variant_fails(broken, case_name):
    """Each deliberately broken variant is caught by the named directed case (and the correct
    unit passes the same case)."""
    cfg = preset("tiny")
    case = next(c for c in vec.directed_cases(cfg, seed=1) if c.name == case_name)
    exp = [vec.pack_mask(cfg, mk) for h in case.heads for mk in h.masks]
    assert run_heads(cfg, case.heads) == exp
    got = run_heads(cfg, case.heads, dut=broken(cfg))
    msg = vec.first_mismatch(cfg, case_name, 1, exp, got, case.heads)
    assert msg is not None and "first mismatch" in msg
