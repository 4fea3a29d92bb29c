# amaranth: UnusedElaboratable=no
"""SoftmaxUnit in Amaranth's simulator, whole output against golden (sim/vectors/softmax.py)."""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from golden.softmax import softmax_rows
from golden.tables import softmax_constants
from hw.config import HDPConfig
from hw.presets import preset
from hw.softmax_unit import SoftmaxUnit, divider_steps, p_out_layout, s_in_layout
from sim.vectors import softmax as vec

PRESETS = ("tiny", "odd", "default")
STALLS = {"none": (0.0, 0.0), "in": (0.4, 0.0), "out": (0.0, 0.4), "both": (0.3, 0.5)}


def run_unit(dut: SoftmaxUnit, beats: list[dict], *, stall_in: float = 0.0, stall_out: float = 0.0,
             seed: int = 0, gap_after_row: int = 0) -> dict:
    """Drive ``beats`` into ``dut.s_in`` and collect ``dut.p_out`` with random idle cycles on the
    source (``stall_in``) and backpressure on the sink (``stall_out``); ``gap_after_row`` idle
    cycles after each row's last beat.

    Returns the output beats, the accept cycle of every input and of every output (cycle 0 =
    first clock edge), and stream-rule violations seen by the sink's monitor."""
    n = len(beats)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    res = {"out": [], "t_in": [], "t_out": [], "violations": []}
    n_rows = sum(b["last"] for b in beats)
    limit = (n + 4 * n_rows * (dut.cfg.recip_width + 12)) * (1 + int(10 * max(stall_in, stall_out))) \
        + n_rows * gap_after_row + 200

    async def source(ctx):
        i, cycle, gap = 0, 0, 0
        while i < n:
            valid = gap == 0 and rng_in.random() >= stall_in
            ctx.set(dut.s_in.valid, valid)
            if valid:
                ctx.set(dut.s_in.payload, beats[i])
            _, _, ready = await ctx.tick().sample(dut.s_in.ready)
            gap = max(0, gap - 1)
            if valid and ready:
                res["t_in"].append(cycle)
                if beats[i]["last"]:
                    gap = gap_after_row
                i += 1
            cycle += 1
        ctx.set(dut.s_in.valid, 0)

    async def sink(ctx):
        cycle = 0
        held = None  # payload seen valid & !ready: it must stay, unchanged
        while len(res["out"]) < n and cycle < limit:
            ready = rng_out.random() >= stall_out
            ctx.set(dut.p_out.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.p_out.valid, dut.p_out.payload)
            beat = {"p": int(payload.p), "last": int(payload.last)} if valid else None
            if held is not None:
                if not valid:
                    res["violations"].append(f"cycle {cycle}: valid withdrawn before ready")
                elif beat != held:
                    res["violations"].append(f"cycle {cycle}: payload changed while not ready")
            held = None
            if valid and ready:
                res["out"].append(beat)
                res["t_out"].append(cycle)
            elif valid:
                held = beat
            cycle += 1
        res["cycles"] = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return res


def check_whole(cfg_name: str, v: vec.SoftmaxVectors, res: dict, seed: int) -> None:
    """Every output compared; the first mismatch names config, seed, row, index, expected, actual."""
    assert not res["violations"], f"{cfg_name} {v.name}: stream rule broken: {res['violations'][:3]}"
    msg = vec.first_mismatch(cfg_name, seed, v, res["out"])
    assert msg is None, msg


def simulate(cfg_name: str, cfg: HDPConfig, v: vec.SoftmaxVectors, seed: int = 0,
             stall: str = "none", dut: SoftmaxUnit | None = None) -> dict:
    sin, sout = STALLS[stall]
    res = run_unit(dut or SoftmaxUnit(cfg), v.in_beats(), stall_in=sin, stall_out=sout, seed=seed)
    check_whole(cfg_name, v, res, seed)
    return res


# ------------------------------------------------------------------------ construction
def test_rejects_non_config():
    with pytest.raises(TypeError, match=r"^cfg must be an HDPConfig, not str$"):
        SoftmaxUnit("tiny")


@pytest.mark.parametrize("name", PRESETS)
def test_port_widths_follow_config(name):
    cfg = preset(name)
    dut = SoftmaxUnit(cfg)
    assert s_in_layout(cfg).size == cfg.score_width + 2
    assert p_out_layout(cfg).size == cfg.prob_width + 1
    assert dut.s_in.payload.s.shape().width == cfg.score_width
    assert dut.p_out.payload.p.shape().width == cfg.prob_width
    assert dut.consts == softmax_constants(cfg)
    Fragment.get(dut, None)  # elaborates


# ------------------------------------------------------------------------ directed cases
@pytest.mark.parametrize("case", vec.DIRECTED_CASES)
@pytest.mark.parametrize("name", PRESETS)
def test_directed(name, case):
    cfg = preset(name)
    simulate(name, cfg, vec.directed_vectors(cfg, case, seed=0))


@pytest.mark.parametrize("name", PRESETS)
def test_directed_with_stalls(name):
    cfg = preset(name)
    cases = vec.DIRECTED_CASES if name != "default" else ("none_kept", "length_one", "ties_max",
                                                          "extreme")
    v = vec.merge("directed", [vec.directed_vectors(cfg, c, seed=3) for c in cases])
    simulate(name, cfg, v, seed=3, stall="both")


# ------------------------------------------------------------------------ seeded random
@pytest.mark.parametrize("stall", list(STALLS))
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", PRESETS)
def test_random(name, seed, stall):
    cfg = preset(name)
    v = vec.random_vectors(cfg, seed, n_rows=6 if name == "default" else 24)
    simulate(name, cfg, v, seed=seed, stall=stall)


@pytest.mark.parametrize("seq_len", [1, 2, 3, 4, 5, 16, 17])
def test_sizes(seq_len):
    """Row buffers of every shape: powers of two, plus and minus one, and a single entry."""
    cfg = preset("tiny").replace(seq_len=seq_len, k_frac=1 / 256, block_rows=min(2, seq_len),
                                 block_cols=min(2, seq_len))
    v = vec.merge("sizes", [vec.random_vectors(cfg, 5, n_rows=12),
                            vec.directed_vectors(cfg, "extreme"),
                            vec.directed_vectors(cfg, "all_equal")])
    simulate(f"tiny(seq_len={seq_len})", cfg, v, seed=5, stall="both")


@pytest.mark.parametrize("changes", [{"exp_frac": 0}, {"exp_frac": 1}, {"exp_bits": 4},
                                     {"prob_frac": 1}, {"prob_frac": 16, "exp_bits": 24}],
                         ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_format_edges(changes):
    """Smallest exp table (one entry), narrowest and widest exponent and probability formats."""
    cfg = preset("tiny").replace(**changes)
    v = vec.merge("edges", [vec.random_vectors(cfg, 7, n_rows=10),
                            vec.directed_vectors(cfg, "delta_boundary"),
                            vec.directed_vectors(cfg, "all_equal")])
    simulate(f"tiny{changes}", cfg, v, seed=7, stall="both")


# ------------------------------------------------------------------------ real data
def _fixture_or_skip(cfg):
    why = vec.fixture_available(cfg)
    if why:
        pytest.skip(why)


@pytest.mark.parametrize("stall", ["none", "both"])
def test_fixture_minilm(stall):
    cfg = preset("default")
    _fixture_or_skip(cfg)
    v = vec.fixture_vectors(cfg, heads=(0, 37, 71))
    simulate("default", cfg, v, seed=11, stall=stall)


@pytest.mark.parametrize("changes", [{"prune_mode": "off"}, {"k_frac": 0.5}, {"k_frac": 0.625},
                                     {"prune_mode": "threshold", "rho": 0.75},
                                     {"causal": True, "k_frac": 0.375}],
                         ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_fixture_minilm_long_pruned(changes):
    """Rows of 30 real scores under several run-time pruning settings (the hardware is the
    default preset's; only which entries are kept changes)."""
    cfg = preset("default").replace(**changes)
    why = vec.fixture_available(cfg, "long")
    if why:
        pytest.skip(why)
    v = vec.fixture_vectors(cfg, "long", heads=(5, 60), max_rows=40)
    assert any(not k.all() for k in v.keep) or changes == {"prune_mode": "off"}
    simulate(f"default{changes}", cfg, v, seed=12, stall="both")


def test_accuracy_against_float_softmax(capsys):
    """For information: max |p - float softmax| over real MiniLM rows.  The float softmax
    runs on the same integer scores (kept entries, ``S / 2**(2F) / sqrt(d)``), so the figure
    is the error of the base-2 table, the reciprocal and the output rounding only."""
    cfg = preset("default")
    _fixture_or_skip(cfg)
    worst, total, n = 0.0, 0.0, 0
    for fx in ("short", "medium", "long"):
        v = vec.fixture_vectors(cfg, fx, heads=tuple(range(72)))
        for s, keep, p in zip(v.s, v.keep, v.p):
            x = s / float(1 << (2 * cfg.qk_frac)) / np.sqrt(cfg.head_dim)
            ex = np.where(keep, np.exp(x - x[keep].max()), 0.0)
            pf = ex / ex.sum()
            err = np.abs(p / float(1 << cfg.prob_frac) - pf)
            worst = max(worst, float(err.max()))
            total += float(err.sum())
            n += len(s)
    lsb = 2.0 ** -cfg.prob_frac
    with capsys.disabled():
        print(f"\nsoftmax accuracy (default preset, MiniLM short/medium/long, 72 heads, {n} entries): "
              f"max |p - float| = {worst:.3e} ({worst / lsb:.2f} LSB of 2**-{cfg.prob_frac}), "
              f"mean {total / n:.2e}")
    # floor(t) with E fraction bits under-estimates each e by a factor down to 2**-(2**-E)
    # (2.2 % for E = 5); the output rounding adds half an LSB
    assert worst < 2.0 ** (2.0 ** -cfg.exp_frac) - 1 + lsb / 2


# ------------------------------------------------------------------------ timing
def _timing(cfg: HDPConfig, n: int, rows: int) -> tuple[int, int, list[int]]:
    rng = np.random.default_rng(n)
    rows_s = [rng.integers(-100, 100, n) for _ in range(rows)]
    v = vec.rows_to_vectors(cfg, "timing", [(s, np.ones(n, bool)) for s in rows_s])
    res = run_unit(SoftmaxUnit(cfg), v.in_beats())
    check_whole("timing", v, res, 0)
    first_in, last_in, first_out = res["t_in"][0], res["t_in"][n - 1], res["t_out"][0]
    row_ends = [res["t_out"][(r + 1) * n - 1] for r in range(rows)]
    return first_out - first_in, first_out - last_in, [b - a for a, b in zip(row_ends, row_ends[1:])]


@pytest.mark.parametrize("name", PRESETS)
def test_latency_and_throughput(name, capsys):
    """The figures of the SoftmaxUnit docstring, measured: latency to the first probability
    and the steady-state period of back-to-back rows (max(n + 1, nd + 1) cycles with
    nd = ceil(recip_width / 2) radix-4 divider steps)."""
    cfg = preset(name)
    nd = divider_steps(cfg)
    assert nd == (cfg.recip_width + 1) // 2
    for n in sorted({1, 2, nd - 1, nd, nd + 1, cfg.seq_len} & set(range(1, cfg.seq_len + 1))):
        lat_first, lat_last, periods = _timing(cfg, n, rows=4)
        with capsys.disabled():
            print(f"\n{name}: row of {n}: first p {lat_first} cycles after first s "
                  f"({lat_last} after last s), row period {periods}, "
                  f"{n / periods[-1]:.3f} entries/cycle")
        assert lat_first == 2 * n + nd + 14
        assert lat_last == n + nd + 15
        assert periods[-1] == max(n + 1, nd + 1)


def test_backpressure_holds_everything():
    """A sink that takes nothing for a long time: no loss, no duplicate, stream rules kept."""
    cfg = preset("tiny")
    v = vec.random_vectors(cfg, 9, n_rows=20)
    res = run_unit(SoftmaxUnit(cfg), v.in_beats(), stall_out=0.9, seed=9)
    check_whole("tiny", v, res, 9)


# ------------------------------------------------------------------------ broken variants
class NarrowSum(SoftmaxUnit):
    """Deliberately broken: the row sum one bit too narrow."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._sum_width -= 1


class Truncating(SoftmaxUnit):
    """Deliberately broken: truncation instead of round half up."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._round_bias = 0


@pytest.mark.parametrize("broken", [NarrowSum, Truncating], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_broken_variant_fails(name, broken):
    cfg = preset(name)
    case = "all_equal" if broken is NarrowSum else "random"
    v = vec.vector_set(cfg, case, seed=1)
    res = run_unit(broken(cfg), v.in_beats())
    msg = vec.first_mismatch(name, 1, v, res["out"])
    assert msg is not None, f"{broken.__name__} was not caught"
    assert "expected" in msg and "row=" in msg and "index=" in msg
    # and the real unit passes the same vectors
    simulate(name, cfg, v, seed=1)


def test_golden_vectors_are_golden():
    """The generator's expectations are golden.softmax_rows on the same rows (guards the
    vector module against drifting from the specification)."""
    cfg = preset("odd")
    v = vec.random_vectors(cfg, 4)
    for s, keep, p in zip(v.s, v.keep, v.p):
        assert np.array_equal(p, softmax_rows(s[None, :], keep[None, :], cfg)[0])
        assert np.all(p[~keep] == 0)
        if keep.any():
            assert 0 < p.sum() <= (1 << cfg.prob_frac) + len(p)


def test_busy_until_drained():
    """``busy`` rises with the first accepted entry and falls once the last probability left."""
    cfg = preset("tiny")
    dut = SoftmaxUnit(cfg)
    v = vec.random_vectors(cfg, 13, n_rows=3)
    beats = v.in_beats()
    trace = []

    async def bench(ctx):
        ctx.set(dut.p_out.ready, 1)
        trace.append(ctx.get(dut.busy))
        for b in beats:
            ctx.set(dut.s_in.payload, b)
            ctx.set(dut.s_in.valid, 1)
            await ctx.tick().until(dut.s_in.ready)
            trace.append(ctx.get(dut.busy))
        ctx.set(dut.s_in.valid, 0)
        got = 0
        while got < len(beats):
            _, _, valid = await ctx.tick().sample(dut.p_out.valid)
            got += valid
            if got < len(beats):
                trace.append(ctx.get(dut.busy))
        await ctx.tick()
        trace.append(ctx.get(dut.busy))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert trace[0] == 0 and all(trace[1:-1]) and trace[-1] == 0, trace


def test_vectors_reject_bad_rows():
    cfg = preset("tiny")
    with pytest.raises(ValueError, match=r"row length must be in \[1, seq_len\] = \[1, 8\], not 9"):
        vec.rows_to_vectors(cfg, "x", [(np.zeros(9), np.ones(9, bool))])
    with pytest.raises(ValueError, match=r"scores must fit score_width = 18 bits"):
        vec.rows_to_vectors(cfg, "x", [([1 << 17], [True])])
    with pytest.raises(ValueError, match=r"case must be one of"):
        vec.vector_set(cfg, "nonsense")


@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_cycle_replay_matches_rtl(name):
    """:class:`sim.cycles_softmax.SoftmaxReplay` (the top's cycle model of this unit) gives the
    RTL's ``s_in.ready`` and row ends on ``p_out`` in every cycle: random row lengths (short
    rows stress the row slots and the divider) and random gaps on the source, sink always
    ready as in the top."""
    from sim.cycles_softmax import SoftmaxReplay

    cfg = preset(name)
    dut = SoftmaxUnit(cfg)
    rng = random.Random(17)
    lengths = [rng.choice([1, 1, 2, 3, cfg.seq_len, rng.randint(1, cfg.seq_len)]) for _ in range(40)]
    beats = [{"s": rng.randint(-300, 300), "keep": rng.random() < 0.8, "last": i == n - 1}
             for n in lengths for i in range(n)]
    model = SoftmaxReplay(cfg)
    mismatches = []

    async def bench(ctx):
        ctx.set(dut.p_out.ready, 1)
        i, cycle, rows_out = 0, 0, 0
        while rows_out < len(lengths) and cycle < 20 * len(beats) + 500:
            valid = i < len(beats) and rng.random() < 0.7
            ctx.set(dut.s_in.valid, valid)
            if valid:
                ctx.set(dut.s_in.payload, beats[i])
            ready, out_valid, out_last = (ctx.get(dut.s_in.ready), ctx.get(dut.p_out.valid),
                                          ctx.get(dut.p_out.payload.last))
            row_out = bool(out_valid and out_last)
            if (bool(ready), row_out) != (model.ready, model.row_out):
                mismatches.append((cycle, bool(ready), row_out, model.ready, model.row_out))
            model.step(valid, valid and beats[i]["last"])
            rows_out += row_out
            if valid and ready:
                i += 1
            await ctx.tick()
            cycle += 1
        assert rows_out == len(lengths)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert not mismatches, f"(cycle, rtl ready, rtl row_out, model ready, model row_out): {mismatches[:5]}"
