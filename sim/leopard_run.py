"""Run :class:`hw.leopard_engine.LeopardEngine` on :class:`sim.vectors.leopard.LeopardCase` heads
in Amaranth's simulator (the unit tests and ``bench/leopard_cycles.py`` share it)."""

import random

from sim.amaranth_streams import StreamChecker, run_amaranth, stream_get, stream_put
from sim.vectors import leopard as vec

__all__ = ["run_cases"]


def run_cases(dut, cases, *, stall_in=0.0, stall_out=0.0, seed=0):
    """Stream every case through ``dut`` in one simulation (run-time ports set between heads,
    after the previous head's last record).  Returns per case the records (packed) and the
    engine's ``cycles`` at the end of the head.

    Also checks, raising ``AssertionError``: the stream rules on every stream; the record
    count; no record after the last head; and that ``cycles`` is the number of clock edges
    after the head's first ``q_in`` handshake up to the one that ends its last row."""
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
        ctx.set(dut.res_out.ready, 1)
        for _ in range(2 * cfg.qk_bits + 8):
            _, _, valid = await ctx.tick().sample(dut.res_out.valid)
            assert not valid, "extra res_out record after the last head"

    checkers = [StreamChecker(dut.k_in, "k_in"), StreamChecker(dut.q_in, "q_in"),
                StreamChecker(dut.res_out, "res_out")]
    limit = sum(vec.n_records(c) * (cfg.qk_bits + 4) * 20 + 200 for c in cases)

    times = {"q": [], "done": []}

    async def watchdog(ctx):
        prev_done = 0
        for cycle in range(limit):
            _, _, qv, qr, done = await ctx.tick().sample(dut.q_in.valid, dut.q_in.ready,
                                                          dut.done)
            if qv and qr:
                times["q"].append(cycle)
            if done and not prev_done:
                times["done"].append(cycle)
            prev_done = done
        raise AssertionError(f"no end after {limit} cycles (deadlock?)")

    run_amaranth(dut, [source, sink], background=[c.testbench for c in checkers] + [watchdog],
                 clock=1e-6)
    assert checkers[2].count == sum(vec.n_records(c) for c in cases)
    first_q = [sum(c.valid_len for c in cases[:ci]) for ci in range(len(cases))]
    for ci in range(len(cases)):
        # done is first seen high one edge after the edge that ends the last row
        edges = times["done"][ci] - 1 - times["q"][first_q[ci]]
        assert cycles[ci] == edges, f"case {ci}: cycles register {cycles[ci]}, measured {edges}"
    return got, cycles
