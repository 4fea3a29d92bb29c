"""DecodeAccel (hw/decode/accel.py), the decode engine behind AXI4-Lite registers, in Amaranth's
simulator: reset values, every read/write register written and read back (and reaching the
engine), read-only registers ignoring writes, ``n`` clamped on its way to the engine, settings
held while a step runs, and construction errors.  The whole step through the registers runs in
tests/test_decode_cocotb.py (``test_accel_*``)."""

import random

import pytest
from amaranth.sim import Simulator

from golden import token_picker as tp
from hw.decode.accel import COUNTERS, SETTINGS, DecodeAccel, register_map
from hw.decode.group import q_beat_layout
from hw.decode.params import DecodeParams
from sim.amaranth_streams import axil_read, axil_read_reg, axil_write, axil_write_regs

CFG = tp.TokenPickerConfig()
P = DecodeParams(CFG, d=8, n_cache=16, group=1)
INIT = {"eps_q": 65, "n": 11, "k_base": 0x3000, "v_base": 0x9000, "v_frac": 5, "eps_v_q": 300}


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_register_map_layout():
    """Word-aligned, non-overlapping, settings then status then counters (and eps_v_q, added
    after them), widths from p."""
    regs = register_map(P)
    assert [r.name for r in regs] == [*SETTINGS[:-1], "status", *COUNTERS, "eps_v_q"]
    assert [r.addr for r in regs] == [0x00, 0x04, 0x08, 0x10, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x2C]
    w = {r.name: r.width for r in regs}
    assert w == {"eps_q": 16, "n": 5, "k_base": 32, "v_base": 32, "v_frac": 3, "status": 2,
                 "k_words": 32, "v_words": 32, "cycles": 32, "eps_v_q": 16}
    assert sorted(r.name for r in regs if r.rw) == sorted(SETTINGS)
    assert {r.name: r.init for r in regs if r.rw} == \
        {"eps_q": 0, "n": 16, "k_base": 0, "v_base": 0, "v_frac": 0, "eps_v_q": 0}


@pytest.mark.parametrize("addr_width", [32, 40])
def test_registers_reset_write_read_back(addr_width):
    """Reset values (from the constructor), every RW register written with random values and
    read back masked to its width, the engine's setting ports following while it is idle; RO
    registers (and the unused upper base words) ignore writes."""
    dut = DecodeAccel(P, addr_width, **INIT)
    regs = {r.name: r for r in dut.regs}
    eng = dut.engine
    rng = random.Random(addr_width)

    async def bench(ctx):
        bus = dut.s_axil
        for r in dut.regs:
            assert await axil_read_reg(ctx, bus, dut.regs, r.name) == r.init, r.name
        for name in SETTINGS:
            assert ctx.get(getattr(eng, name)) == INIT[name], name
        for _ in range(3):
            vals = {name: rng.getrandbits(64) for name in SETTINGS}
            vals["n"] = rng.randrange(1, P.n_cache + 1)
            vals["k_base"] = rng.getrandbits(addr_width - 12) << 12    # 4 KB aligned
            vals["v_base"] = rng.getrandbits(addr_width - 12) << 12
            await axil_write_regs(ctx, bus, dut.regs, vals)
            await ctx.tick().repeat(2)
            for name in SETTINGS:
                want = vals[name] & ((1 << regs[name].width) - 1)
                assert await axil_read_reg(ctx, bus, dut.regs, name) == want, name
                assert ctx.get(getattr(eng, name)) == want, name
        before = {name: await axil_read_reg(ctx, bus, dut.regs, name) for name in SETTINGS}
        for name in ("status", *COUNTERS):
            await axil_write(ctx, bus, regs[name].addr, 0xFFFFFFFF)
            assert await axil_read_reg(ctx, bus, dut.regs, name) == 0, name
        if addr_width <= 32:
            for a in (0x0C, 0x14):      # the upper words of the bases: unused
                await axil_write(ctx, bus, a, 0xFFFFFFFF)
                assert await axil_read(ctx, bus, a) == 0
        after = {name: await axil_read_reg(ctx, bus, dut.regs, name) for name in SETTINGS}
        assert after == before

    simulate(dut, bench)


def test_n_is_clamped_for_the_engine():
    """``n`` reads back as written; the engine sees it clamped to 1 ... N."""
    dut = DecodeAccel(P)

    async def bench(ctx):
        for written, seen in [(0, 1), (5, 5), (16, 16), (17, 16), (31, 16)]:
            await axil_write(ctx, dut.s_axil, 0x04, written)
            await ctx.tick().repeat(2)
            assert await axil_read(ctx, dut.s_axil, 0x04) == written
            assert ctx.get(dut.engine.n) == seen, written

    simulate(dut, bench)


def test_settings_held_while_busy():
    """A write while a step runs (here one that never ends: no memory answers ``m_axi``)
    reads back at once, and ``status`` shows busy, but the engine keeps the step's values."""
    dut = DecodeAccel(P, **INIT)
    eng = dut.engine
    new = {"eps_q": 7, "n": 3, "k_base": 0x5000, "v_base": 0x7000, "v_frac": 1, "eps_v_q": 9}

    async def bench(ctx):
        bus = dut.s_axil
        assert await axil_read(ctx, bus, 0x1C) == 0
        beat = q_beat_layout(P).const({"q": [1] * P.d, "sf": 10})
        ctx.set(dut.s_axis.tdata, beat.as_bits())
        ctx.set(dut.s_axis.tvalid, 1)
        await ctx.tick().until(dut.s_axis.tready)
        ctx.set(dut.s_axis.tvalid, 0)
        await ctx.tick()
        assert await axil_read(ctx, bus, 0x1C) == 1
        await axil_write_regs(ctx, bus, dut.regs, new)
        await ctx.tick().repeat(4)
        for name in SETTINGS:
            assert await axil_read_reg(ctx, bus, dut.regs, name) == new[name], name
            assert ctx.get(getattr(eng, name)) == INIT[name], name
        assert await axil_read(ctx, bus, 0x1C) == 1

    simulate(dut, bench)


def test_rejects_bad_parameters():
    def bad(match, *a, **kw):
        with pytest.raises(ValueError, match=match):
            DecodeAccel(*a, **kw)
    bad("p must be a DecodeParams", CFG)
    bad("addr_width must be an integer in \\[12, 64\\]", P, 8)
    bad("reg_addr_width must be an integer in \\[6, 32\\]", P, reg_addr_width=5)
    bad("reg_addr_width must be", P, reg_addr_width=True)
    bad("eps_q must be an integer in \\[0, 65535\\]", P, eps_q=1 << 16)
    bad("eps_v_q must be an integer in \\[0, 65535\\]", P, eps_v_q=-1)
    bad("n must be an integer in \\[1, 16\\]", P, n=0)
    bad("n must be", P, n=17)
    bad("k_base must be a multiple of 4096", P, k_base=0x1800)
    bad("v_base must be an integer", P, v_base=-4096)
    bad("v_base must be an integer", P, 32, v_base=1 << 32)
    bad("v_frac must be an integer in \\[0, 7\\]", P, v_frac=8)
    bad("unknown reset value 'eps'", P, eps=0.1)


def test_exported_verilog_ports_and_lint(tmp_path):
    """The exported module has the AXI names cocotbext-axi looks for (``s_axil__awaddr`` ...,
    ``m_axi__araddr`` ..., ``s_axis__tdata``, ``m_axis__tdata``) and no setting or counter
    port; Verilator lints it clean."""
    from hw.config import HDPConfig
    from hw.export import export_verilog, find_verilator, lint_verilog, parse_verilog_ports

    v, _ = export_verilog(DecodeAccel(P), HDPConfig(), tmp_path, name="decode_accel")
    ports = parse_verilog_ports(v.read_text(), "decode_accel")
    for name in ("s_axil__awaddr", "s_axil__rdata", "m_axi__araddr", "m_axi__rdata",
                 "s_axis__tdata", "m_axis__tdata"):
        assert name in ports, name
    assert not set(SETTINGS + COUNTERS + ("busy",)) & set(ports)
    if find_verilator() is None:
        pytest.skip("verilator not found")
    lint_verilog(v)


def test_read_error_shows_in_status_until_the_next_step():
    """A memory that answers one R beat of a step with SLVERR (and another with DECERR) sets
    ``status`` bit 1, which stays set after the step and clears when the next step's query
    arrives; a step whose reads all answer OKAY ends with ``status`` 0.  The memory here is a
    responder that returns zeros (the step's outputs do not matter to this test)."""
    from hw.decode.accel import STATUS_BUSY, STATUS_RERR
    from sim.amaranth_streams import run_amaranth

    dut = DecodeAccel(P, n=3)
    bad_beats = {1: [0], 2: [], 3: [2]}      # step -> indices of its R beats answered with an error
    seen = {"step": 0, "beats": 0}
    axi = dut.m_axi

    async def memory(ctx):
        # one burst at a time: raise arready for one edge, then return the burst's beats
        # (an async-for loop over the edges, so that the simulation may end at any point)
        left, accepting = 0, False
        async for _, _, arvalid, arlen, rready in ctx.tick().sample(axi.arvalid, axi.arlen,
                                                                     axi.rready):
            if left and rready:          # the beat offered before this edge was taken
                seen["beats"] += 1
                left -= 1
            if accepting:                # the AR handshake happened at this edge
                accepting, left = False, arlen + 1
            elif not left and arvalid:
                accepting = True
            err = left and seen["beats"] in bad_beats[seen["step"]]
            ctx.set(axi.arready, accepting)
            ctx.set(axi.rresp, (2, 3)[seen["step"] == 3] if err else 0)
            ctx.set(axi.rdata, 0)
            ctx.set(axi.rlast, left == 1)
            ctx.set(axi.rvalid, left > 0)

    async def bench(ctx):
        ctx.set(dut.m_axis.tready, 1)
        beat = q_beat_layout(P).const({"q": [3] * P.d, "sf": 10})
        for step in (1, 2, 3):
            seen["step"], seen["beats"] = step, 0
            ctx.set(dut.s_axis.tdata, beat.as_bits())
            ctx.set(dut.s_axis.tvalid, 1)
            await ctx.tick().until(dut.s_axis.tready)
            ctx.set(dut.s_axis.tvalid, 0)
            await ctx.tick()
            # the previous step's error is gone once this step's query is in (unless this
            # step's own error beat came back during the register read)
            rerr = (await axil_read(ctx, dut.s_axil, 0x1C)) >> STATUS_RERR & 1
            assert not rerr or seen["beats"] > min(bad_beats[step], default=1 << 30), step
            await ctx.tick().until(dut.m_axis.tvalid & dut.m_axis.tlast)
            await ctx.tick()
            status = await axil_read(ctx, dut.s_axil, 0x1C)
            assert status >> STATUS_BUSY & 1 == 0, step
            assert status >> STATUS_RERR & 1 == (step != 2), (step, status)
            assert seen["beats"] > max(bad_beats[step], default=0), step

    run_amaranth(dut, bench, background=[memory], deadline=1e-4)
