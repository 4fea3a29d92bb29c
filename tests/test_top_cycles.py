"""The top's cycle model (``sim/top_cycles.py``) against the RTL top in Amaranth's simulator.

Every head runs with the input at full rate and the output always ready (the model's
assumptions); the ``cycles`` and ``array_cycles`` registers must equal the model exactly.
Random Q, K, V on small configurations: dense, top-k, threshold, a pruned head, causal,
array shapes with ``array_rows`` equal to and different from ``block_rows``.
"""

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module

from golden.model import attention_head_int
from hw.config import PRUNE_MODES, HDPConfig
from hw.presets import preset
from hw.top import Top, pack_input_rows, register_map, register_values
from sim.amaranth_streams import axil_read, axil_write_regs, run_amaranth
from sim.top_cycles import array_busy, head_cycles, ideal_cycles
from tests.test_top import cycle_budget


def rtl_cycles(cfg: HDPConfig, heads: list[dict]) -> list[dict]:
    """Run heads ``{q, k, v, valid_len, settings}`` through one simulated top at full rate;
    return the ``cycles`` and ``array_cycles`` registers of each."""
    dut = Top(cfg)
    m = Module()
    m.domains.sync = ClockDomain("sync")
    m.submodules.dut = dut
    regmap = register_map(cfg)
    regs = {r.name: r for r in regmap}
    out: list[dict] = []

    async def bench(ctx):
        for h in heads:
            run_cfg = cfg.replace(**h["settings"])
            # "regs": raw register values written over the settings' (the model runs the settings)
            await axil_write_regs(ctx, dut.s_axil, regmap,
                                  register_values(run_cfg, h["valid_len"]) | h.get("regs", {}))
            rows = pack_input_rows(cfg, h["k"], h["q"], h["v"], h["valid_len"])
            ctx.set(dut.m_axis.tready, 1)
            for row in rows:
                ctx.set(dut.s_axis.tdata, row)
                ctx.set(dut.s_axis.tvalid, 1)
                await ctx.tick().until(dut.s_axis.tready)
            ctx.set(dut.s_axis.tvalid, 0)
            for _ in range(h["valid_len"]):
                await ctx.tick().until(dut.m_axis.tvalid)
            while not (await axil_read(ctx, dut.s_axil, regs["status"].addr)) & 2:
                await ctx.tick()
            out.append({"cycles": await axil_read(ctx, dut.s_axil, regs["cycles"].addr),
                        "array_cycles": await axil_read(ctx, dut.s_axil,
                                                         regs["array_cycles"].addr)})

    run_amaranth(m, bench, deadline=cycle_budget(cfg, heads) * 1e-8)
    return out


def _random_heads(cfg: HDPConfig, settings: list[dict], lens: list[int], seed: int):
    rng = np.random.default_rng(seed)
    heads = []
    for st, n in zip(settings, lens):
        qk = (-(1 << (cfg.qk_bits - 1)), 1 << (cfg.qk_bits - 1))
        vv = (-(1 << (cfg.v_bits - 1)), 1 << (cfg.v_bits - 1))
        q, k = (rng.integers(*qk, size=(cfg.seq_len, cfg.head_dim)) for _ in range(2))
        v = rng.integers(*vv, size=(cfg.seq_len, cfg.head_dim))
        heads.append({"q": q, "k": k, "v": v, "valid_len": n, "settings": st})
    return heads


def check_model(cfg: HDPConfig, heads: list[dict]) -> None:
    got = rtl_cycles(cfg, heads)
    for n, (h, g) in enumerate(zip(heads, got)):
        run_cfg = cfg.replace(**h["settings"])
        res = attention_head_int(h["q"], h["k"], h["v"], run_cfg, h["valid_len"])
        dense = run_cfg.prune_mode == "off" and not run_cfg.head_prune
        want = head_cycles(run_cfg, res, dense=dense)
        busy = array_busy(run_cfg, res, dense=dense)
        label = (f"config={cfg!r} head {n} settings={h['settings']} valid_len={h['valid_len']} "
                 f"kept={res.head_keep} blocks={int(res.block_keep.sum())}")
        assert g["cycles"] == want, f"{label}: cycles model {want}, RTL {g['cycles']}"
        assert g["array_cycles"] == busy, \
            f"{label}: array cycles model {busy}, RTL {g['array_cycles']}"
        assert ideal_cycles(run_cfg, res, dense) <= busy


SETTINGS = [
    {"prune_mode": "off", "approx": "exact"},
    {"prune_mode": "topk", "k_frac": 1 / 256},
    {"prune_mode": "threshold", "rho": 0.5},
    {"prune_mode": "topk", "k_frac": 0.5, "causal": True},
    {"prune_mode": "mass", "eps": 0.09765625},
]


def _prune_head_settings(cfg: HDPConfig, head: dict) -> list[dict]:
    """tau_head just above (pruned) and equal to (kept) the head's H, top-k mode."""
    res = attention_head_int(head["q"], head["k"], head["v"], cfg, head["valid_len"])
    h = res.head_importance
    return [{"prune_mode": "topk", "k_frac": 1 / 256, "head_prune": True, "tau_head": min(h + 1, cfg.h_max)},
            {"prune_mode": "topk", "k_frac": 1 / 256, "head_prune": True, "tau_head": h}]


def test_tiny_modes_exact():
    cfg = preset("tiny")
    check_model(cfg, _random_heads(cfg, SETTINGS, [8, 7, 8, 5, 8], 1))


def test_odd_modes_and_pruned_head_exact():
    """R != C, 3 x 2 blocks (N a multiple of neither), causal, threshold, a causal dense
    drop_ff head; a pruned head."""
    cfg = preset("odd")
    heads = _random_heads(cfg, SETTINGS + [{"prune_mode": "threshold", "rho": 0.375,
                                            "causal": True},
                                           {"prune_mode": "off", "approx": "drop_ff",
                                            "causal": True}], [13, 11, 13, 9, 13, 13, 10], 2)
    base = heads[0]
    heads += [dict(base, settings=s) for s in _prune_head_settings(cfg, base)]
    check_model(cfg, heads)


def test_without_the_mass_pruner_exact():
    """A top built without the mass pruner: the mode register's mass code takes the cycles
    of off (dense, and with head pruning the integer pass first), as the model says."""
    cfg = preset("tiny").replace(prune_mode="topk", mass_pruner=False)
    heads = _random_heads(cfg, SETTINGS[:4] + [{"prune_mode": "off"},
                                               {"prune_mode": "off", "head_prune": True}],
                          [8, 7, 8, 5, 8, 8], 5)
    for h in heads[4:]:
        h["regs"] = {"mode": PRUNE_MODES.index("mass")}
    check_model(cfg, heads)


@pytest.mark.parametrize("shape", [(2, 8), (4, 4), (4, 2)])
def test_wider_configs_exact(shape):
    """array_rows == block_rows (the co-design rule) and wider than the blocks; tiles of
    several blocks; rows shorter and longer than the divider's latency."""
    r, c = shape
    cfg = HDPConfig(seq_len=24, head_dim=8, n_heads=1, block_rows=2, block_cols=2, k_frac=0.25,
                    array_rows=r, array_cols=c)
    check_model(cfg, _random_heads(cfg, [SETTINGS[0], SETTINGS[1], SETTINGS[2],
                                         {"prune_mode": "topk", "k_frac": 0.5}, SETTINGS[4]],
                                   [24, 17, 24, 24, 24], 3))


@pytest.mark.parametrize("int_lanes", [3, 4])
def test_several_integer_passes_exact(int_lanes):
    """The integer pass at fewer products per cycle than head_dim (3 and 2 passes per block,
    the last one partly used): its blocks, masks and head decision come later, the model
    follows."""
    cfg = HDPConfig(seq_len=24, head_dim=8, n_heads=1, block_rows=2, block_cols=2, k_frac=0.25,
                    array_rows=2, array_cols=4, int_lanes=int_lanes)
    check_model(cfg, _random_heads(cfg, SETTINGS + [{"prune_mode": "topk", "k_frac": 0.5}],
                                   [24, 17, 24, 24, 24, 11], 4))


@pytest.mark.parametrize("head_dim", [1, 2, 3])
def test_shallow_tiles_exact(head_dim):
    """Tiles of 1, 2 and 3 depth steps: back-to-back tiles that a longer tile hides."""
    cfg = preset("tiny").replace(head_dim=head_dim)
    check_model(cfg, _random_heads(cfg, SETTINGS, [8, 7, 8, 5, 8], head_dim))


@pytest.mark.parametrize("block_cols", [1, 3])
def test_block_widths_exact(block_cols):
    """Block columns of 1 and 3 keys: the key iterator's picks cost no cycle."""
    cfg = preset("tiny").replace(seq_len=11, block_cols=block_cols)
    check_model(cfg, _random_heads(cfg, SETTINGS, [11, 10, 9, 7, 1, 5, 8], block_cols))
