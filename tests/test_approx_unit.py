"""ApproxUnit in Amaranth's simulator, whole output against golden (sim/vectors/approx.py)."""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from hw.approx_unit import ApproxUnit
from hw.presets import preset
from sim.amaranth_streams import timed_sink, timed_source
from sim.vectors import approx as vec

PRESETS = ("tiny", "odd", "default")


def run_unit(dut: ApproxUnit, beats: list[int], exact: int, *, stall_in: float = 0.0,
             stall_out: float = 0.0, seed: int = 0, max_cycles: int | None = None) -> dict:
    """Drive ``beats`` into ``dut.in_`` and collect ``dut.out`` with random idle cycles on the
    source (``stall_in``) and backpressure on the sink (``stall_out``).

    Returns the output beats, the accept cycle of every input and the valid-and-ready cycle of
    every output (cycle 0 = first clock edge after reset), and stream-rule violations."""
    n = len(beats)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    res = {"out": [], "t_in": [], "t_out": [], "violations": []}
    limit = max_cycles or (n + dut.latency + 10) * (1 + int(20 * max(stall_in, stall_out))) + 100

    async def source(ctx):
        ctx.set(dut.exact, exact)
        await timed_source(ctx, dut.in_, beats, rng=rng_in, stall=stall_in, times=res["t_in"])

    async def sink(ctx):
        res["cycles"] = await timed_sink(ctx, dut.out, n, rng=rng_out, stall=stall_out, limit=limit,
                                         out=res["out"], times=res["t_out"],
                                         violations=res["violations"])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return res


def check_whole(cfg, v: vec.ApproxVectors, res: dict, seed: int, label: str) -> None:
    """Every output compared; the first mismatch names config, seed, index, expected, actual."""
    assert not res["violations"], f"{label}: stream rule broken: {res['violations'][:3]}"
    s, tag = vec.unpack_out(cfg, res["out"])
    assert len(s) == len(v), f"{label} seed={seed}: {len(s)} outputs for {len(v)} inputs"
    bad = np.nonzero((s != v.s) | (tag != v.tag))[0]
    if bad.size:
        i = int(bad[0])
        raise AssertionError(
            f"{label} seed={seed} set={v.name} config={cfg.to_dict()}: first mismatch at entry "
            f"{i} (q={v.q[i].tolist()}, k={v.k[i].tolist()}, a={int(v.a[i])}): expected "
            f"s={int(v.s[i])} tag={int(v.tag[i])}, got s={int(s[i])} tag={int(tag[i])} "
            f"({bad.size} mismatches)")


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("stall", [0.0, 0.3], ids=["nostall", "stall"])
def test_golden_sets(name, stall):
    """Directed extremes, seeded random entries and a pruned head, both modes, per preset."""
    cfg = preset(name)
    seed = 1000 + PRESETS.index(name)
    dut = ApproxUnit(cfg)
    for v in vec.vector_sets(cfg, seed, n_random=200):
        res = run_unit(dut, vec.pack_in(cfg, v), v.exact, stall_in=stall, stall_out=stall,
                       seed=seed)
        check_whole(cfg, v, res, seed, f"{name}/{v.name}/stall={stall}")


@pytest.mark.parametrize("frac", ["zero", "max"])
def test_fraction_width_edges(frac):
    """F = 0 (no fraction: X = C = 0) and F = B - 1 (1-bit integer part) are legal configs."""
    base = preset("odd")
    cfg = base.replace(qk_frac=0 if frac == "zero" else base.qk_bits - 1)
    dut = ApproxUnit(cfg)
    for exact in (0, 1):
        for v in (vec.directed_vectors(cfg, exact), vec.random_vectors(cfg, 7, 80, exact)):
            res = run_unit(dut, vec.pack_in(cfg, v), exact, stall_in=0.2, stall_out=0.2, seed=3)
            check_whole(cfg, v, res, 7, f"odd F={cfg.qk_frac}/{v.name}")


def test_head_dim_one():
    cfg = preset("tiny").replace(head_dim=1)
    dut = ApproxUnit(cfg)
    assert dut.latency == 2
    v = vec.random_vectors(cfg, 5, 50, 1)
    check_whole(cfg, v, run_unit(dut, vec.pack_in(cfg, v), 1), 5, "tiny d=1")


def test_exact_differs_from_drop_ff():
    """The mode bit matters: with non-zero fractions the two modes give different scores, and the
    unit follows the port (the same entries, both modes)."""
    cfg = preset("tiny")
    dut = ApproxUnit(cfg)
    v0 = vec.random_vectors(cfg, 11, 40, 0)
    v1 = vec.random_vectors(cfg, 11, 40, 1)
    assert not np.array_equal(v0.s, v1.s)
    for v in (v0, v1):
        s, _ = vec.unpack_out(cfg, run_unit(dut, vec.pack_in(cfg, v), v.exact)["out"])
        assert np.array_equal(s, v.s), v.name


@pytest.mark.parametrize("name", PRESETS)
def test_latency_and_throughput(name):
    """Without stalls: one entry per cycle and a fixed latency equal to ``dut.latency``."""
    cfg = preset(name)
    dut = ApproxUnit(cfg)
    v = vec.random_vectors(cfg, 3, 40, 1)
    res = run_unit(dut, vec.pack_in(cfg, v), 1)
    check_whole(cfg, v, res, 3, f"{name} latency")
    assert res["t_in"] == list(range(len(v))), "input not accepted every cycle"
    lat = {o - i for i, o in zip(res["t_in"], res["t_out"])}
    assert lat == {dut.latency}, f"latency {lat}, stated {dut.latency}"
    assert res["t_out"] == list(range(dut.latency, dut.latency + len(v)))


@pytest.mark.parametrize("fixture", ["long", "padded"])
def test_minilm_fixture(fixture):
    """Real attention: the kept entries of three heads (first, middle, last layer) of a bundled
    all-MiniLM-L6-v2 capture, pruned by the golden model under the default preset."""
    cfg = preset("default")
    heads = (0, 37, 71)
    if vec.fixture_vectors(cfg, 0, fixture, heads, max_entries=1) is None:
        pytest.skip(f"MiniLM fixture {fixture!r} (sim.fixtures / tests/data) not in this checkout")
    dut = ApproxUnit(cfg)
    for exact in (0, 1):
        v = vec.fixture_vectors(cfg, exact, fixture, heads)
        res = run_unit(dut, vec.pack_in(cfg, v), exact, stall_in=0.2, stall_out=0.2, seed=9)
        check_whole(cfg, v, res, 9, v.name)


class NarrowXApprox(ApproxUnit):
    """Deliberately broken: the X register one bit narrower than ``cfg.x_width``."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._x_width = cfg.x_width - 1


def test_broken_variant_fails():
    """X one bit too narrow wraps at the extreme cross terms: the golden comparison must fail,
    while the correct unit passes the same vectors."""
    cfg = preset("odd")
    v = vec.directed_vectors(cfg, 0)
    check_whole(cfg, v, run_unit(ApproxUnit(cfg), vec.pack_in(cfg, v), 0), 0, "good unit")
    res = run_unit(NarrowXApprox(cfg), vec.pack_in(cfg, v), 0)
    with pytest.raises(AssertionError, match="first mismatch at entry"):
        check_whole(cfg, v, res, 0, "narrow X")


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_constructor_checks():
    cfg = preset("tiny")
    with pytest.raises(TypeError, match="cfg must be an HDPConfig, not 3"):
        ApproxUnit(3)
    with pytest.raises(ValueError, match="tag_width must be a positive integer, not 0"):
        ApproxUnit(cfg, tag_width=0)
    dut = ApproxUnit(cfg, tag_width=3)
    Fragment.get(dut, None)
