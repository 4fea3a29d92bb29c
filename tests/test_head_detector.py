"""HeadDetector in Amaranth's simulator, whole output against golden.pruner.head_keep."""

import gc
import random

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from hw.head_detector import HeadDetector
from hw.presets import preset
from sim.vectors import score as vec

PRESETS = ("tiny", "odd", "default")


def run_unit(dut: HeadDetector, cases: list[vec.HeadDetCase], *, stall_in: float = 0.0,
             stall_out: float = 0.0, seed: int = 0) -> dict:
    """Every case in one simulation; ports of a case are set once the previous case's outputs
    are all out.  Returns the keep beats per case, handshake cycles and stream-rule violations."""
    n_total = sum(len(c.h) for c in cases)
    st = {"keep": [], "t_in": [], "t_out": [], "violations": []}
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)

    async def source(ctx):
        cycle, done = 0, 0
        for c in cases:
            while len(st["keep"]) < done:
                await ctx.tick()
                cycle += 1
            ctx.set(dut.head_prune, c.head_prune)
            ctx.set(dut.tau_head, c.tau_head)
            i, valid = 0, False
            while i < len(c.h):
                valid = valid or rng_in.random() >= stall_in
                ctx.set(dut.h_in.valid, valid)
                if valid:
                    ctx.set(dut.h_in.payload, c.h[i])
                _, _, ready = await ctx.tick().sample(dut.h_in.ready)
                if valid and ready:
                    st["t_in"].append(cycle)
                    i += 1
                    valid = False
                cycle += 1
            ctx.set(dut.h_in.valid, 0)
            done += len(c.h)

    async def sink(ctx):
        cycle, held = 0, None
        while len(st["keep"]) < n_total and cycle < 40 * n_total + 100:
            ready = rng_out.random() >= stall_out
            ctx.set(dut.keep_out.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.keep_out.valid,
                                                          dut.keep_out.payload)
            if held is not None and (not valid or payload != held):
                st["violations"].append(f"cycle {cycle}: keep_out changed while not ready")
            held = None
            if valid and ready:
                st["keep"].append(payload)
                st["t_out"].append(cycle)
            elif valid:
                held = payload
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return st


def check_whole(cfg, cases, res, seed, label):
    assert not res["violations"], f"{label}: {res['violations'][:3]}"
    got = res["keep"]
    k = 0
    for c in cases:
        for i, (h, e) in enumerate(zip(c.h, c.keep)):
            a = got[k] if k < len(got) else None
            if a != e:
                raise AssertionError(
                    f"{label}: config={cfg.to_dict()} seed={seed} case={c.name} index={i} "
                    f"(H={h}, tau_head={c.tau_head}, head_prune={c.head_prune}): expected keep={e}, "
                    f"got {a}")
            k += 1
    assert len(got) == k, f"{label}: {len(got)} outputs for {k} inputs"


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("stall", [0.0, 0.4], ids=["nostall", "stall"])
def test_golden_cases(name, stall):
    """tau_head at 0, 1, h_max/2, h_max-1, h_max; H equal to, just below and above tau; pruning
    off and on; seeded random H; stalls on both sides on and off."""
    cfg = preset(name)
    seed = 40 + PRESETS.index(name)
    cases = vec.head_detector_cases(cfg, seed)
    res = run_unit(HeadDetector(cfg), cases, stall_in=stall, stall_out=stall, seed=seed)
    check_whole(cfg, cases, res, seed, f"{name}/stall={stall}")


def test_latency_and_throughput():
    """Latency 1 cycle and one decision per cycle without stalls."""
    cfg = preset("odd")
    cases = vec.head_detector_cases(cfg, 1)
    res = run_unit(HeadDetector(cfg), cases[:1])
    check_whole(cfg, cases[:1], res, 1, "latency")
    n = len(cases[0].h)
    assert res["t_in"] == list(range(n))
    assert res["t_out"] == [t + 1 for t in res["t_in"]]


class OffByOneDetector(HeadDetector):
    """Deliberately broken: compares ``H > tau_head`` (prunes a head whose H equals tau)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        # overwrite the decision with the strict comparison
        with m.If(self.h_in.ready & self.h_in.valid):
            m.d.sync += self.keep_out.payload.eq(
                ~self.head_prune | (self.h_in.payload > self.tau_head))
        return m


def test_broken_variant_fails():
    """The off-by-one comparison is caught by the H == tau_head case."""
    cfg = preset("tiny")
    cases = vec.head_detector_cases(cfg, 0)
    res = run_unit(OffByOneDetector(cfg), cases)
    pattern = (r"seed=0 case=tau_0_prune1 index=0 \(H=0, tau_head=0, head_prune=1\): "
               r"expected keep=1, got 0")
    with pytest.raises(AssertionError, match=pattern):
        check_whole(cfg, cases, res, 0, "off by one")


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_constructor_checks():
    with pytest.raises(TypeError, match="cfg must be an HDPConfig, not 'x'"):
        HeadDetector("x")
    gc.collect()  # the half-built object warns when collected: inside this test's filter
    Fragment.get(HeadDetector(preset("tiny")), None)
