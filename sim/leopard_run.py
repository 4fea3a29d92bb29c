"""Run :class:`hw.leopard_engine.LeopardEngine` on :class:`sim.vectors.leopard.LeopardCase` heads
in Amaranth's simulator (the unit tests and ``bench/leopard_cycles.py`` share it)."""

import random

from sim.amaranth_streams import StreamChecker, run_amaranth, stream_get, stream_put
from sim.vectors import leopard as vec

__all__ = ["run_cases"]


def run_cases(dut, cases, *, stall_in=0.0, stall_out=0.0, seed=0):
    """Stream every case through ``dut`` in one simulation (run-time ports set between heads,
    after the previous head's last record).  Returns per case the records (packed) and the
    engine's ``cycles`` at the end of the head."""
    cfg = dut.cfg
    got = [[] for _ in cases]
    cycles = []
    state = {"head": 0}
    rng_k, rng_q, rng_o = (random.Random(seed + n) for n in range(3))

    async def source(ctx):
        for ci, case in enumerate(cases):
            while state["head"] < ci:
                await ctx.tick()
            ctx.set(dut.valid_len, case.valid_len)
            ctx.set(dut.causal, case.causal)
            ctx.set(dut.no_et, case.no_et)
            for beat in vec.k_beats(cfg, case):
                await stream_put(ctx, dut.k_in, beat, rng_k, stall_in)
            for beat in vec.q_beats(cfg, case):
                await stream_put(ctx, dut.q_in, beat, rng_q, stall_in)

    async def sink(ctx):
        for ci, case in enumerate(cases):
            for _ in range(vec.n_records(case)):
                got[ci].append((await stream_get(ctx, dut.res_out, rng_o, stall_out)).as_bits())
            while not ctx.get(dut.done):
                await ctx.tick()
            cycles.append(ctx.get(dut.cycles))
            state["head"] = ci + 1

    checkers = [StreamChecker(dut.k_in, "k_in"), StreamChecker(dut.q_in, "q_in"),
                StreamChecker(dut.res_out, "res_out")]
    limit = sum(vec.n_records(c) * (cfg.qk_bits + 4) * 20 + 200 for c in cases)

    async def watchdog(ctx):
        for _ in range(limit):
            await ctx.tick()
        raise AssertionError(f"no end after {limit} cycles (deadlock?)")

    run_amaranth(dut, [source, sink], background=[c.testbench for c in checkers] + [watchdog],
                 clock=1e-6)
    assert checkers[2].count == sum(vec.n_records(c) for c in cases)
    # no extra record: res_out stays idle after the last head (checked by the count above and
    # by the sink having drained exactly n_records per head before reading `done`)
    return got, cycles
