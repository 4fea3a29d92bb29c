"""LeopardEngine in Amaranth's simulator, whole output against golden.leopard.front_end.

Vectors come from :mod:`sim.vectors.leopard` (shared with the cocotb bench): every valid entry's
(keep, score where kept, bits) must be reported exactly once, nothing else, rows in order."""

import gc

import numpy as np
import pytest
from amaranth.hdl import Fragment, Mux

from golden import leopard as lp
from hw.config import HDPConfig, signed_width, unsigned_width
from hw.leopard_engine import (
    LeopardEngine,
    e_range,
    q_beat_layout,
    result_layout,
    score_range,
    th_range,
)
from hw.presets import preset
from sim.leopard_run import run_cases
from sim.vectors import leopard as vec

# default preset (d = 32, N = 128) is slow in Amaranth's simulator: cap the length there
MAX_LEN = {"tiny": None, "odd": None, "default": 6}


def check(dut, cases, seed=0, **kw):
    got, cycles = run_cases(dut, cases, seed=seed, **kw)
    for case, beats in zip(cases, got):
        msg = vec.first_mismatch(dut.cfg, seed, case, beats)
        assert msg is None, msg
    return cycles


# ---------------------------------------------------------------------------- construction
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_constructor_rejects_bad_parameters():
    with pytest.raises(TypeError, match=r"^cfg must be an HDPConfig, not 3$"):
        LeopardEngine(3)
    cfg = preset("tiny")
    for bad in (0, 9, 2.0, True):
        with pytest.raises(ValueError, match=rf"^lanes must be an integer in \[1, min\(seq_len, "
                                             rf"64\)\] = \[1, 8\], not {bad!r}$"):
            LeopardEngine(cfg, lanes=bad)
    gc.collect()


def test_widths_cover_extremes():
    """Every width holds the extreme values the golden model produces (and is not wider than
    the formula): scores at all-min/all-max operands, th_range ends, D at both ends."""
    for cfg in (preset("tiny"), preset("odd"), preset("default"),
                HDPConfig(qk_bits=16, qk_frac=0, head_dim=1024, seq_len=4096, block_rows=1,
                          block_cols=1)):
        b, d = cfg.qk_bits, cfg.head_dim
        m = 1 << (b - 1)
        lo_s, hi_s = score_range(cfg)
        worst = [lp.front_end(np.full((1, d), q), np.full((1, d), k), 0, b).exact[0, 0]
                 for q in (-m, m - 1) for k in (-m, m - 1)] if d <= 64 else \
            [d * q * k for q in (-m, m - 1) for k in (-m, m - 1)]
        assert min(worst) == lo_s and max(worst) == hi_s
        lay = result_layout(cfg)
        assert lay["score"].shape.width == signed_width(lo_s, hi_s)
        assert q_beat_layout(cfg)["th"].shape.width == signed_width(*th_range(cfg))
        assert lay["bits"].shape.width == unsigned_width(b)
        lo_e, hi_e = e_range(cfg)
        assert (lo_e, hi_e) == ((lo_s - hi_s) // 2 - 1, (hi_s - lo_s) // 2)


def test_elaborates_every_preset():
    for name in ("tiny", "odd", "default", "large"):
        Fragment.get(LeopardEngine(preset(name), lanes=3), None)


@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_verilog_export_is_deterministic_and_lints_clean(name, tmp_path):
    from hw.export import export_verilog, find_verilator, lint_verilog
    cfg = preset(name)
    v1, j1 = export_verilog(LeopardEngine(cfg, lanes=3), cfg, tmp_path / "a", name="leopard_engine")
    v2, j2 = export_verilog(LeopardEngine(cfg, lanes=3), cfg, tmp_path / "b", name="leopard_engine")
    assert v1.read_bytes() == v2.read_bytes() and j1.read_bytes() == j2.read_bytes()
    if find_verilator() is None:
        pytest.skip("verilator not installed")
    lint_verilog(v1)


# ---------------------------------------------------------------------------- golden equality
@pytest.mark.parametrize("name", ["tiny", "odd", "default"])
def test_directed(name):
    cfg = preset(name)
    cases = vec.directed_cases(cfg, seed=1, max_len=MAX_LEN[name])
    check(LeopardEngine(cfg, lanes=3), cases, seed=1)


@pytest.mark.parametrize("name,lanes", [("tiny", 1), ("tiny", 4), ("odd", 2), ("odd", 13)])
@pytest.mark.parametrize("stall", [0.0, 0.4], ids=["nostall", "stall"])
def test_random(name, lanes, stall):
    cfg = preset(name)
    cases = [vec.random_case(cfg, 100 * lanes + n) for n in range(4)]
    check(LeopardEngine(cfg, lanes=lanes), cases, seed=lanes, stall_in=stall, stall_out=stall)


def test_directed_with_stalls():
    cfg = preset("odd")
    cases = vec.directed_cases(cfg, seed=3)[::3]
    check(LeopardEngine(cfg, lanes=4), cases, seed=3, stall_in=0.5, stall_out=0.5)


def test_slow_output_makes_finished_lanes_hold():
    """A diagonal-only threshold (every other entry stops after 1 bit), many lanes and an
    output that is rarely ready: lanes finish while their result slot is still full and must
    hold (an engine that does not hold loses or overwrites records)."""
    cfg = preset("odd")
    rng = np.random.default_rng(4)
    q, k = (rng.integers(-64, 64, size=(13, cfg.head_dim)) for _ in range(2))
    cases = [vec.LeopardCase("diag_only", q, k, np.full(13, lp.TH_LIMIT), 13),
             vec.LeopardCase("diag_only_causal", q, k, np.full(13, lp.TH_LIMIT), 13, causal=True)]
    check(LeopardEngine(cfg, lanes=13), cases, seed=9, stall_out=0.8)


def test_minilm_head():
    """A real MiniLM head (long capture, N = 30, d = 32) at logit >= 0 and at logit >= 1 with
    output stalls; and the same head with no_et."""
    cfg = preset("default")
    cases = [vec.fixture_case(cfg, "long", 5, 0.0), vec.fixture_case(cfg, "long", 40, 1.0)]
    if cases[0] is None:
        pytest.skip("MiniLM fixture missing")
    check(LeopardEngine(cfg, lanes=8), cases, seed=5, stall_out=0.2)


def test_no_et_costs_more_cycles_same_decisions():
    cfg = preset("default")
    et = vec.fixture_case(cfg, "medium", 3, 0.5)
    if et is None:
        pytest.skip("MiniLM fixture missing")
    full = vec.fixture_case(cfg, "medium", 3, 0.5, no_et=True)
    dut = LeopardEngine(cfg, lanes=2)
    c_et, c_full = check(dut, [et, full])
    bits = vec.expected(cfg, et)
    total = sum(b for _, _, b in bits.values())
    assert c_et < c_full
    # each lane reads one bit per cycle: the head needs at least bits / lanes cycles
    assert c_et >= total / 2 and c_full >= len(bits) * cfg.qk_bits / 2


# ---------------------------------------------------------------------------- broken variants
class _AllQBound(LeopardEngine):
    """The bound with the signed sum of all q instead of the positive ones (unsound)."""

    def row_bound_sum(self, q_row):
        total = q_row[0]
        for e in range(1, self.cfg.head_dim):
            total = total + q_row[e]
        return Mux(total > 0, total, 0)


class _PositiveSignBit(LeopardEngine):
    """The sign bit weighed +2**(B-1) instead of -2**(B-1)."""

    def bit_increment(self, gated_sum, step):
        return gated_sum


class _AbsBound(LeopardEngine):
    """The sound but looser bound with sum |q|: same keep set, more bits."""

    def row_bound_sum(self, q_row):
        total = abs(q_row[0])
        for e in range(1, self.cfg.head_dim):
            total = total + abs(q_row[e])
        return total


@pytest.mark.parametrize("variant,pattern", [
    (_AllQBound, r"expected \("),
    (_PositiveSignBit, r"expected \("),
    (_AbsBound, r"expected \(0, 0, \d\), got \(0, 0, \d\)"),
])
def test_broken_variants_are_caught(variant, pattern):
    cfg = preset("tiny")
    cases = [vec.random_case(cfg, 7 + n) for n in range(3)]
    cases += [c for c in vec.directed_cases(cfg, seed=1) if c.name.startswith("ties")]
    with pytest.raises(AssertionError, match=pattern):
        check(variant(cfg, lanes=2), cases, seed=7)


class _NarrowScore(LeopardEngine):
    @property
    def r_width(self) -> int:
        return super().r_width - 1


class _NarrowMargin(LeopardEngine):
    @property
    def e_width(self) -> int:
        return super().e_width - 1


@pytest.mark.parametrize("variant", [_NarrowScore, _NarrowMargin])
def test_one_bit_narrower_is_caught(variant):
    """The extreme cases need every bit of the partial score R and of the margin E."""
    cfg = preset("tiny")
    cases = [c for c in vec.directed_cases(cfg, seed=1) if c.name.startswith("extreme_m")]
    with pytest.raises(AssertionError, match=r"expected \("):
        check(variant(cfg, lanes=4), cases)


@pytest.mark.slow
def test_doc_cycle_table():
    """The cycle table of docs/leopard.md is what bench/leopard_cycles.py's default run
    measures (4 lanes, long capture, heads 0, 17, 40, 65)."""
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "docs" / "leopard.md").read_text()
    cfg = preset("default")
    for logit in (0.0, 1.0):
        c_et = c_full = 0
        for h in (0, 17, 40, 65):
            cases = [vec.fixture_case(cfg, "long", h, logit),
                     vec.fixture_case(cfg, "long", h, logit, no_et=True)]
            if cases[0] is None:
                pytest.skip("MiniLM fixture missing")
            et, full = check(LeopardEngine(cfg, lanes=4), cases)
            c_et, c_full = c_et + et, c_full + full
        assert f"| logit >= {logit:g} | {c_et} | {c_full} | {c_et / c_full:.3f} |" in text


# ---------------------------------------------------------------------------- kept-only mode
def _run_kept_only(cfg, cases, lanes, stall_out, seed):
    """The engine as the top builds it: per row its kept entries then a marker; returns the
    records per case and ``bits_read`` at each case's end."""
    import random

    from sim.amaranth_streams import StreamChecker, run_amaranth, stream_get, stream_put
    dut = LeopardEngine(cfg, lanes=lanes, kept_only=True)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    got, bits = [[] for _ in cases], []
    state = {"case": 0}

    async def source(ctx):
        for ci, case in enumerate(cases):
            while state["case"] < ci:
                await ctx.tick()
            ctx.set(dut.valid_len, case.valid_len)
            ctx.set(dut.causal, case.causal)
            ctx.set(dut.no_et, case.no_et)
            for beat in vec.k_beats(cfg, case):
                await stream_put(ctx, dut.k_in, beat, rng_in, 0.2)
            for beat in vec.q_beats(cfg, case):
                await stream_put(ctx, dut.q_in, beat, rng_in, 0.2)

    async def sink(ctx):
        for ci, case in enumerate(cases):
            rows = 0
            while rows < case.valid_len:
                beat = await stream_get(ctx, dut.res_out, rng_out, stall_out)
                rec = vec.decode(cfg, beat.as_bits())
                got[ci].append(rec)
                rows += rec[2] == 0
            for _ in range(3):
                await ctx.tick()
            bits.append(ctx.get(dut.bits_read))
            state["case"] = ci + 1

    checker = StreamChecker(dut.res_out, "res_out")
    run_amaranth(dut, [source, sink], background=[checker.testbench], clock=1e-6)
    return got, bits


@pytest.mark.parametrize("lanes,stall_out", [(1, 0.0), (3, 0.7), (8, 0.9)])
def test_kept_only_records_markers_and_bits(lanes, stall_out):
    """Kept-only output: every kept entry exactly once, before its row's marker, rows in
    order; no pruned entry; ``bits_read`` equals golden's bits.  Heavy output stalls make
    lanes finish pruned entries while their slot still holds a kept result (a lane that
    overwrote its slot loses that result)."""
    cfg = preset("tiny")
    cases = vec.directed_cases(cfg, seed=lanes) + [vec.random_case(cfg, 40 + s) for s in range(6)]
    got, bits = _run_kept_only(cfg, cases, lanes, stall_out, seed=lanes)
    for case, recs, nbits in zip(cases, got, bits):
        exp = vec.expected(cfg, case)
        want_bits = sum(b for _, _, b in exp.values())
        assert nbits == want_bits, f"{case.name}: bits_read {nbits}, expected {want_bits}"
        row, seen = 0, set()
        for i, j, keep, score, _ in recs:
            assert i == row, f"{case.name}: record of row {i} during row {row}"
            if keep:
                assert exp[(i, j)][:2] == (1, score) and (i, j) not in seen, (case.name, i, j)
                seen.add((i, j))
            else:
                row += 1
        assert seen == {e for e, v in exp.items() if v[0]}, f"{case.name}: kept set differs"
