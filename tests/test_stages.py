"""The top's stages on their own (Amaranth's simulator): the array arbiter.

The whole top, and so every stage together, is checked bit-exact against golden in
``tests/test_top.py`` and ``tests/test_top_cocotb.py`` and cycle-exact against the model in
``tests/test_top_cycles.py``; here the arbiter's own rules are checked under random traffic.
"""

import random

import pytest

from hw.presets import preset
from hw.stages.arbiter import ArrayArbiter
from hw.stages.common import Dims
from hw.systolic import op_layout, res_layout
from sim.amaranth_streams import StreamChecker, run_amaranth, stream_put


def _tiles(rng, src, n):
    """``n`` tiles of random depth from source ``src`` (0 S, 1 P): beats (src, tile, last)."""
    return [[(src, t, k == depth - 1) for k in range(depth)]
            for t in range(n) for depth in [rng.randint(1, 5)]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arbiter_whole_tiles_one_owner(seed):
    """Random tiles from both stages, random stalls on all three sides: every beat arrives
    once, in order per stage, a tile's beats are never interleaved with the other stage's,
    the two stages are never both ready in one cycle, and a free array goes to P first."""
    cfg = preset("tiny")
    d = Dims.of(cfg)
    lay = op_layout(cfg, d.tagw)
    dut = ArrayArbiter(cfg)
    rng = random.Random(seed)
    srcs = [_tiles(rng, 0, 12), _tiles(rng, 1, 12)]
    got = []
    checkers = [StreamChecker(dut.s_op, "s_op"), StreamChecker(dut.p_op, "p_op"),
                StreamChecker(dut.op, "op")]

    def beat(src, tile, last):
        return lay.const({"a0": [src] * d.R, "last": int(last), "tag": tile}).as_bits()

    def source(port, tiles, stall_seed):
        async def bench(ctx):
            r = random.Random(stall_seed)
            for tile in tiles:
                for b in tile:
                    await stream_put(ctx, port, beat(*b), stall_rng=r, stall=0.3)
        return bench

    total = sum(len(t) for s in srcs for t in s)

    async def sink(ctx):
        r = random.Random(seed + 100)
        while len(got) < total:
            ctx.set(dut.op.ready, r.random() < 0.6)
            (_c, _r, valid, ready, payload, s_rdy, p_rdy, s_valid, p_valid,
             owner) = await ctx.tick().sample(
                dut.op.valid, dut.op.ready, dut.op.payload, dut.s_op.ready, dut.p_op.ready,
                dut.s_op.valid, dut.p_op.valid, dut.owner)
            # (p_op.ready is a register that may be high while the P x V stage offers nothing)
            assert not (s_rdy and s_valid and p_rdy and p_valid), "both stages' beats taken"
            assert not (owner == 1 and p_rdy), "P x V ready while the score stage owns the array"
            assert not (owner == 0 and p_valid and s_rdy), "a free array went to S, not P"
            if valid and ready:
                got.append((int(payload.a0[0]), int(payload.tag), bool(payload.last)))

    run_amaranth(dut, [source(dut.s_op, srcs[0], seed + 1), source(dut.p_op, srcs[1], seed + 2),
                       sink], background=[c.testbench for c in checkers], deadline=1e-3)
    for src in (0, 1):
        assert [b for b in got if b[0] == src] == [b for t in srcs[src] for b in t]
    owner = None
    for src, _tile, last in got:
        assert owner in (None, src), "a tile's beats interleaved with the other stage's"
        owner = None if last else src
    assert checkers[2].count == total


def test_arbiter_routes_results_by_kind():
    """The tag's top bit picks the stage a result row goes to; the other sees nothing."""
    cfg = preset("tiny")
    d = Dims.of(cfg)
    lay = res_layout(cfg, d.tagw)
    dut = ArrayArbiter(cfg)
    seen = []

    async def bench(ctx):
        ctx.set(dut.res_s.ready, 1)
        ctx.set(dut.res_p.ready, 1)
        for kind in (0, 1, 1, 0):
            ctx.set(dut.res.payload, lay.const({"tag": kind << (d.tagw - 1), "row": 1}))
            ctx.set(dut.res.valid, 1)
            _c, _r, sv, pv, rdy = await ctx.tick().sample(dut.res_s.valid, dut.res_p.valid,
                                                          dut.res.ready)
            seen.append((sv, pv, rdy))
        ctx.set(dut.res.valid, 0)

    run_amaranth(dut, bench)
    assert seen == [(1, 0, 1), (0, 1, 1), (0, 1, 1), (1, 0, 1)]
