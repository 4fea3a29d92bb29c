"""The co-processor top in Amaranth's simulator: whole heads against golden.model, fast.

The cocotb benches (``tests/test_top_cocotb.py``) cover the fixture on Icarus and Verilator;
these tests iterate quickly on the ``tiny`` and ``odd`` presets: dense and every pruning mode,
head pruning, stalls on both streams, the register file, and a reset in the middle of a head.
"""

import random

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from golden.model import attention_head_int
from hw.config import PRUNE_MODES, HDPConfig
from hw.export import verilog_text
from hw.presets import preset
from hw.top import Top, pack_input_rows, register_map, register_values, unpack_output_row
from hw.units import unit_names
from sim.amaranth_streams import axil_read, axil_read_reg, axil_write, axil_write_regs, run_amaranth


def random_head(cfg: HDPConfig, rng: np.random.Generator, n: int | None = None):
    n = cfg.seq_len if n is None else n
    qk = (-(1 << (cfg.qk_bits - 1)), 1 << (cfg.qk_bits - 1))
    vv = (-(1 << (cfg.v_bits - 1)), 1 << (cfg.v_bits - 1))
    q = rng.integers(*qk, size=(n, cfg.head_dim))
    k = rng.integers(*qk, size=(n, cfg.head_dim))
    v = rng.integers(*vv, size=(n, cfg.head_dim))
    return q, k, v


# ---------------------------------------------------------------------- Amaranth-side driver


async def write_regs(ctx, dut: Top, values: dict[str, int]) -> None:
    await axil_write_regs(ctx, dut.s_axil, register_map(dut.cfg), values)


async def read_reg(ctx, dut: Top, name: str) -> int:
    return await axil_read_reg(ctx, dut.s_axil, register_map(dut.cfg), name)


async def send_rows(ctx, dut, rows, rng, stall):
    for n, row in enumerate(rows):
        while rng is not None and rng.random() < stall:
            ctx.set(dut.s_axis.tvalid, 0)
            await ctx.tick()
        ctx.set(dut.s_axis.tdata, row)
        ctx.set(dut.s_axis.tlast, int(n == len(rows) - 1))
        ctx.set(dut.s_axis.tvalid, 1)
        await ctx.tick().until(dut.s_axis.tready)
    ctx.set(dut.s_axis.tvalid, 0)


async def recv_rows(ctx, dut, n, rng, stall):
    out = []
    for _ in range(n):
        while rng is not None and rng.random() < stall:
            ctx.set(dut.m_axis.tready, 0)
            await ctx.tick()
        ctx.set(dut.m_axis.tready, 1)
        data, last = await ctx.tick().sample(dut.m_axis.tdata, dut.m_axis.tlast) \
            .until(dut.m_axis.tvalid)
        out.append((data, last))
    ctx.set(dut.m_axis.tready, 0)
    return out


def expected(run_cfg: HDPConfig, q, k, v, valid_len):
    return attention_head_int(q, k, v, run_cfg, valid_len)


def check_head(run_cfg, q, k, v, valid_len, got_rows, label):
    res = expected(run_cfg, q, k, v, valid_len)
    exp = res.out_int[:valid_len]
    got = np.array([unpack_output_row(run_cfg, d) for d, _ in got_rows])
    lasts = [last for _, last in got_rows]
    assert lasts == [0] * (valid_len - 1) + [1], f"{label}: tlast pattern {lasts}"
    if not np.array_equal(exp, got):
        idx = tuple(int(x) for x in np.argwhere(exp != got)[0])
        raise AssertionError(f"{label}: first difference at row/col {idx}: expected "
                             f"{exp[idx]}, got {got[idx]} (head_keep={res.head_keep}, "
                             f"kept blocks={int(res.block_keep.sum())})")
    return res


def run_heads(cfg: HDPConfig, heads: list[dict], stall: float = 0.0, seed: int = 0,
              reset_mid: bool = False) -> list[dict]:
    """Run each head ``{q, k, v, valid_len, settings}`` (``settings``: configuration fields
    of the run-time registers; optional ``regs``: raw register values written over them)
    through one simulated top, check every output whole against golden under ``settings`` and
    return per-head statistics read back over AXI4-Lite.

    ``reset_mid``: first send two thirds of head 0, pulse the reset, then run every head."""
    dut = Top(cfg)
    m = Module()
    m.domains.sync = cd = ClockDomain("sync")
    m.submodules.dut = dut
    rng = random.Random(seed)
    stats = []

    async def bench(ctx):
        if reset_mid:
            h = heads[0]
            run_cfg = cfg.replace(**h.get("settings", {}))
            await write_regs(ctx, dut, register_values(run_cfg, h["valid_len"]))
            rows = pack_input_rows(cfg, h["k"], h["q"], h["v"], h["valid_len"])
            await send_rows(ctx, dut, rows[: len(rows) * 2 // 3 + 1], None, 0.0)
            for _ in range(7):
                await ctx.tick()
            ctx.set(cd.rst, 1)
            await ctx.tick()
            ctx.set(cd.rst, 0)
            await ctx.tick()
            assert await read_reg(ctx, dut, "status") == 0, "status after reset"
        for n, h in enumerate(heads):
            run_cfg = cfg.replace(**h.get("settings", {}))
            # "regs": raw register values written over the settings' (golden runs the settings)
            await write_regs(ctx, dut, register_values(run_cfg, h["valid_len"]) | h.get("regs", {}))
            rows = pack_input_rows(cfg, h["k"], h["q"], h["v"], h["valid_len"])
            # the top takes the whole head before its first output row: no need to overlap
            await send_rows(ctx, dut, rows, rng, stall)
            got = await recv_rows(ctx, dut, h["valid_len"], rng, stall)
            res = check_head(run_cfg, h["q"], h["k"], h["v"], h["valid_len"], got,
                             f"config={cfg!r} head {n} settings={h.get('settings')} "
                             f"valid_len={h['valid_len']} stall={stall} seed={seed}")
            while not (await read_reg(ctx, dut, "status")) & 2:
                await ctx.tick()
            status = await read_reg(ctx, dut, "status")
            assert (status >> 2) & 1 == int(res.head_keep), "status.head_kept"
            # a dense head (no pruning, no head pruning) runs no integer pass: H reads 0
            dense = run_cfg.prune_mode == "off" and not run_cfg.head_prune
            want_h = 0 if dense else res.head_importance
            assert await read_reg(ctx, dut, "head_imp") == want_h, "head_imp"
            nbr = -(-h["valid_len"] // cfg.block_rows)
            for r in range(nbr):
                await write_regs(ctx, dut, {"mask_sel": r})
                mask = await read_reg(ctx, dut, "mask_data") if res.head_keep else 0
                want = sum(1 << c for c in range(res.block_keep.shape[1]) if res.block_keep[r, c])
                assert mask == want, f"block-row {r} mask {mask:#x}, expected {want:#x}"
            stats.append({"cycles": await read_reg(ctx, dut, "cycles"),
                          "array_cycles": await read_reg(ctx, dut, "array_cycles"),
                          "kept_keys": await read_reg(ctx, dut, "kept_keys"),
                          "head_keep": res.head_keep})
        assert await read_reg(ctx, dut, "heads_done") == len(heads)

    run_amaranth(m, bench, deadline=cycle_budget(cfg, heads, stall) * 1e-8)
    return stats


def cycle_budget(cfg: HDPConfig, heads: list[dict], stall: float = 0.0) -> int:
    """Clock cycles within which a top must finish ``heads``, whatever their settings: ten
    times a dense head's array work plus its streams, and a fixed margin, per head (tiny: 12k
    cycles a head against about 1k).  A design that deadlocks fails after this many cycles
    instead of hanging the test run."""
    per = [10 * ((h["valid_len"] + 4) ** 2 * cfg.head_dim * 2 // (cfg.array_rows * cfg.array_cols)
                 + 4 * h["valid_len"]) + 5000 for h in heads]
    return int(sum(per) / (1 - min(stall, 0.9)))


SETTINGS = [
    {"prune_mode": "off", "approx": "exact"},
    {"prune_mode": "off", "approx": "drop_ff"},
    {"prune_mode": "topk", "k_frac": 1 / 256},
    {"prune_mode": "topk", "k_frac": 0.5, "approx": "exact"},
    {"prune_mode": "threshold", "rho": 0.5},
    {"prune_mode": "threshold", "rho": 0.25, "causal": True},
    {"prune_mode": "topk", "k_frac": 1 / 256, "causal": True, "approx": "exact"},
    {"prune_mode": "topk", "k_frac": 0.5, "approx": "comp"},
    {"prune_mode": "off", "approx": "comp", "causal": True},
    {"prune_mode": "mass", "eps": 0.1015625},
    {"prune_mode": "mass", "eps": 0.25, "causal": True, "approx": "exact"},
]


def _heads(cfg, settings, lens, seed):
    rng = np.random.default_rng(seed)
    heads = []
    for s, n in zip(settings, lens):
        q, k, v = random_head(cfg, rng)
        heads.append({"q": q, "k": k, "v": v, "valid_len": n, "settings": s})
    return heads


def test_tiny_every_mode():
    cfg = preset("tiny")
    stats = run_heads(cfg, _heads(cfg, SETTINGS, [8, 7, 5, 8, 3, 6, 1, 8, 7, 8, 6], 1))
    # pruning skips key columns: top-k keeping one block per block-row (k_frac = 1/256) issues
    # fewer keys than dense
    assert stats[2]["kept_keys"] < stats[0]["kept_keys"]


def test_top_without_the_mass_pruner():
    """``mass_pruner = False``: the top is built without the mass pruner and no unit list
    names it; every other mode stays bit-exact, and the mode register's mass code runs as off
    (golden's off, with and without head pruning)."""
    cfg = preset("tiny").replace(prune_mode="topk", mass_pruner=False)
    assert "mass_pruner" not in unit_names(cfg) and "mass_pruner" in unit_names(preset("tiny"))
    assert "mass_pruner" not in verilog_text("top", cfg)[0]
    settings = [s for s in SETTINGS if s["prune_mode"] != "mass"]
    heads = _heads(cfg, settings, [8, 7, 5, 8, 3, 6, 1, 8, 7], 4)
    as_off = _heads(cfg, [{"prune_mode": "off", "approx": "exact"},
                          {"prune_mode": "off", "head_prune": True, "tau_head": 0}], [8, 6], 5)
    for h in as_off:
        h["regs"] = {"mode": PRUNE_MODES.index("mass")}
    # run_heads also reads back H (0 for a dense head: no integer pass) and every keep mask
    run_heads(cfg, heads + as_off, stall=0.3, seed=6)


def test_tiny_stalls_on_both_streams():
    cfg = preset("tiny")
    run_heads(cfg, _heads(cfg, SETTINGS[:4], [8, 6, 8, 2], 2), stall=0.4, seed=3)


def _head_prune_settings(cfg, head, mode="topk"):
    """tau_head just above (prune) and equal to (keep) the head's H."""
    h = attention_head_int(head["q"], head["k"], head["v"], cfg, head["valid_len"]).head_importance
    return [{"prune_mode": mode, "head_prune": True, "tau_head": min(h + 1, cfg.h_max)},
            {"prune_mode": mode, "head_prune": True, "tau_head": h}]


def test_head_pruning_tiny_and_odd():
    for name in ("tiny", "odd"):
        cfg = preset(name)
        base = _heads(cfg, [{}], [cfg.seq_len], 4)[0]
        heads = []
        for mode in ("off", "topk", "threshold", "mass"):
            for s in _head_prune_settings(cfg, base, mode):
                heads.append({**base, "settings": s})
        stats = run_heads(cfg, heads)
        assert [s["head_keep"] for s in stats] == [False, True] * 4
        # a pruned head costs no array cycle
        assert all(s["array_cycles"] == 0 for s in stats[::2])
        assert all(s["array_cycles"] > 0 for s in stats[1::2])


@pytest.mark.parametrize("seed", [5, 6])
def test_odd_random_settings(seed):
    cfg = preset("odd")
    rng = random.Random(seed)
    settings = []
    for _ in range(5):
        settings.append({
            "prune_mode": rng.choice(["off", "topk", "threshold", "mass"]),
            "approx": rng.choice(["drop_ff", "exact", "comp"]),
            "causal": rng.random() < 0.5,
            "k_frac": rng.randint(1, 256) / 256,
            "rho": rng.randint(0, 1 << cfg.rho_frac) / (1 << cfg.rho_frac),
            "eps": rng.randint(0, 255) / 256,
        })
    lens = [rng.randint(1, cfg.seq_len) for _ in settings]
    run_heads(cfg, _heads(cfg, settings, lens, seed), stall=0.2, seed=seed)


def test_dense_heads_odd():
    """Dense heads (pruning and head pruning off: no integer pass, the array forms the whole
    score): causal and not, both approximations, short valid_len, around a pruned-mode head
    (mask_data reads the block validity, head_imp 0)."""
    cfg = preset("odd")
    settings = [{"prune_mode": "off", "approx": "drop_ff", "causal": True},
                {"prune_mode": "topk", "k_frac": 1 / 256, "causal": True},
                {"prune_mode": "off", "approx": "exact", "causal": True},
                {"prune_mode": "off", "approx": "drop_ff", "causal": False}]
    run_heads(cfg, _heads(cfg, settings, [13, 10, 9, 4], 9), stall=0.2, seed=9)


def test_array_wider_than_blocks():
    """array_rows > block_rows: a tile's keys are the union of its block-rows' kept keys."""
    cfg = preset("tiny").replace(seq_len=11, array_rows=4, array_cols=3, block_rows=1,
                                 block_cols=2, k_frac=0.5)
    run_heads(cfg, _heads(cfg, SETTINGS, [11, 9, 11, 4, 10, 11, 7, 11, 8], 7))


def test_several_integer_passes():
    """The integer pass in 3 passes per block (int_lanes 3 of head_dim 8, the last pass
    partly used), with stalls on both streams: the same outputs and masks as golden."""
    cfg = HDPConfig(seq_len=12, head_dim=8, n_heads=1, block_rows=2, block_cols=2, k_frac=0.5,
                    array_rows=2, array_cols=4, int_lanes=3)
    run_heads(cfg, _heads(cfg, SETTINGS, [12, 9, 12, 5, 11], 10), stall=0.2, seed=10)


def test_reset_mid_head_then_clean_run():
    cfg = preset("tiny")
    run_heads(cfg, _heads(cfg, SETTINGS[2:5], [8, 8, 5], 8), reset_mid=True)


def test_axil_regs_strobes_unmapped_and_read_only():
    """AxiLiteRegs: byte strobes, registers wider than 32 bits, unmapped addresses read 0
    and ignore writes, read-only registers show their input and ignore writes."""
    from hw.axil import AxiLiteRegs, Reg

    dut = AxiLiteRegs([Reg("a", 0x0, 12, True, 0x5A5), Reg("wide", 0x8, 40, True, 0),
                       Reg("ro", 0x10, 8, False)], addr_width=8)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx):
        bus = dut.s_axil
        assert await axil_read(ctx, bus, 0x0) == 0x5A5
        ctx.set(bus.awaddr, 0x0)
        ctx.set(bus.wdata, 0xFFFF_FF12)
        ctx.set(bus.wstrb, 0b0001)           # low byte only
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        ctx.set(bus.bready, 1)
        await ctx.tick().until(bus.awready)
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        await ctx.tick().until(bus.bvalid)
        assert ctx.get(dut.a) == 0x512
        await axil_write(ctx, bus, 0x8, 0x89ABCDEF)
        await axil_write(ctx, bus, 0xC, 0xFFFFFF77)
        assert ctx.get(dut.wide) == 0x77_89ABCDEF
        assert await axil_read(ctx, bus, 0xC) == 0x77
        ctx.set(dut.ro, 0x3C)
        await axil_write(ctx, bus, 0x10, 0xFF)
        assert await axil_read(ctx, bus, 0x10) == 0x3C
        await axil_write(ctx, bus, 0x40, 0x1234)
        assert await axil_read(ctx, bus, 0x40) == 0
        assert ctx.get(dut.a) == 0x512 and ctx.get(dut.wide) == 0x77_89ABCDEF

    sim.add_testbench(bench)
    sim.run()



def test_axil_regs_rejects_bad_maps():
    from hw.axil import AxiLiteRegs, Reg

    with pytest.raises(ValueError, match="must be word aligned, not 0x2"):
        AxiLiteRegs([Reg("a", 0x2, 8, True)])
    with pytest.raises(ValueError, match="registers a and b overlap at 0x4"):
        AxiLiteRegs([Reg("a", 0x0, 40, True), Reg("b", 0x4, 8, True)])
    with pytest.raises(ValueError, match="does not fit 4 address bits"):
        AxiLiteRegs([Reg("a", 0x10, 8, True)], addr_width=4)


@pytest.mark.parametrize("head_dim", [1, 2, 3])
def test_shallow_tiles(head_dim):
    """Tiles of 1, 2 and 3 depth steps (the score stage's last-step flag is kept two steps
    ahead, and its three-entry operand queue fills and drains every step) under stalls on
    both streams: the same outputs and masks as golden."""
    cfg = preset("tiny").replace(head_dim=head_dim)
    run_heads(cfg, _heads(cfg, SETTINGS, [8, 7, 5, 8, 3, 6, 1, 8, 7, 8, 6], head_dim),
              stall=0.2, seed=head_dim)


@pytest.mark.parametrize("block_cols", [1, 3])
def test_block_widths(block_cols):
    """Block columns of 1 and 3 keys (the score stage's key iterator picks a new column at
    every step with one, every third step with three, sooner where ``valid_len`` cuts the
    last column short), every mode, under stalls on both streams."""
    cfg = preset("tiny").replace(seq_len=11, block_cols=block_cols)
    run_heads(cfg, _heads(cfg, SETTINGS, [11, 10, 9, 7, 1, 5, 8, 11, 2, 6, 4], block_cols),
              stall=0.2, seed=block_cols)
