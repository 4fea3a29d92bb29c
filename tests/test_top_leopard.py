"""The co-processor top generated with the LeOPArd front end, in Amaranth's simulator: whole
heads against :func:`golden.leopard.leopard_head_int`, and the engine's statistics (kept
entries, bits read) against the golden front end's.

The cocotb benches (``tests/test_top_cocotb.py``) run the same top on Icarus and Verilator.
"""

import random

import numpy as np
import pytest

from golden.leopard import config_threshold, leopard_head_int
from golden.model import quantize_qkv
from hw.config import HDPConfig
from hw.presets import preset
from hw.top import Top, leopard_th_code, pack_input_rows, register_map, register_values, unpack_output_row
from sim.amaranth_streams import run_amaranth
from sim.fixtures import load_fixture
from tests.test_top import _heads, cycle_budget, read_reg, recv_rows, send_rows, write_regs

LEO = {"front_end": "leopard", "prune_mode": "off", "approx": "exact", "head_prune": False}


def leo(name: str, **kw) -> HDPConfig:
    return preset(name).replace(**LEO, **kw)


def run_heads(cfg: HDPConfig, heads: list[dict], stall: float = 0.0, seed: int = 0) -> list:
    """Each head ``{q, k, v, valid_len, settings}`` through one simulated top; every output
    row, the kept entries and the bits read are checked against golden."""
    dut = Top(cfg)
    rng = random.Random(seed)
    stats = []

    async def bench(ctx):
        for n, h in enumerate(heads):
            settings = dict(h.get("settings", {}))
            no_et = settings.pop("no_et", 0)
            run_cfg = cfg.replace(**settings)
            vl = h["valid_len"]
            await write_regs(ctx, dut, {**register_values(run_cfg, vl), "no_et": no_et})
            await send_rows(ctx, dut, pack_input_rows(cfg, h["k"], h["q"], h["v"], vl), rng,
                            stall)
            got = await recv_rows(ctx, dut, vl, rng, stall)
            label = (f"config={cfg!r} head {n} settings={h.get('settings')} valid_len={vl} "
                     f"stall={stall} seed={seed}")
            res = leopard_head_int(h["q"], h["k"], h["v"], run_cfg, config_threshold(run_cfg), vl)
            exp = res.out_int[:vl]
            rows = np.array([unpack_output_row(cfg, d) for d, _ in got])
            assert [last for _, last in got] == [0] * (vl - 1) + [1], f"{label}: tlast"
            if not np.array_equal(exp, rows):
                idx = tuple(int(x) for x in np.argwhere(exp != rows)[0])
                raise AssertionError(f"{label}: first difference at row/col {idx}: expected "
                                     f"{exp[idx]}, got {rows[idx]}")
            while not (await read_reg(ctx, dut, "status")) & 2:
                await ctx.tick()
            st = {name: await read_reg(ctx, dut, name)
                  for name in ("kept_entries", "bits_read", "fe_cycles", "cycles",
                               "array_cycles", "kept_keys")}
            want_bits = res.stats["bits_dense"] if no_et else res.stats["bits_processed"]
            assert st["kept_entries"] == res.stats["kept_entries"], f"{label}: kept entries"
            assert st["bits_read"] == want_bits, f"{label}: bits read"
            stats.append(st)
        assert await read_reg(ctx, dut, "heads_done") == len(heads)

    run_amaranth(dut, bench, deadline=cycle_budget(cfg, heads, stall) * 1e-8)
    return stats


def test_register_map_is_the_front_ends():
    regs = {r.name: r for r in register_map(leo("tiny"))}
    assert {"leopard_th", "no_et", "kept_entries", "bits_read", "fe_cycles"} <= set(regs)
    assert not {"mode", "approx", "k_frac_q", "eps_q", "mask_data", "head_imp"} & set(regs)
    # a negative threshold is written as its two's complement code; out of range is clamped
    cfg = leo("tiny", leopard_th=-1.0)
    w = regs["leopard_th"].width
    assert leopard_th_code(cfg) == config_threshold(cfg) % (1 << w)
    assert leopard_th_code(leo("tiny", leopard_th=64.0)) < 1 << (w - 1)


def test_tiny_thresholds_lengths_causal():
    cfg = leo("tiny")
    settings = [{"leopard_th": -64.0}, {"leopard_th": 64.0}, {"leopard_th": 0.0},
                {"leopard_th": 0.5, "causal": True}, {"leopard_th": -0.25},
                {"leopard_th": 0.25, "no_et": 1}, {"leopard_th": 1.0, "causal": True}]
    lens = [8, 8, 5, 8, 1, 7, 3]
    stats = run_heads(cfg, _heads(cfg, settings, lens, seed=1))
    # a threshold below every score keeps everything, above every score only the diagonal
    assert stats[0]["kept_entries"] == 64 and stats[1]["kept_entries"] == 8


@pytest.mark.parametrize("seed", [2, 3])
def test_tiny_stalls_on_both_streams(seed):
    cfg = leo("tiny", leopard_lanes=3)
    settings = [{"leopard_th": t} for t in (0.0, 0.5, -0.5)]
    run_heads(cfg, _heads(cfg, settings, [8, 6, 8], seed), stall=0.4, seed=seed)


@pytest.mark.parametrize("lanes", [1, 4])
def test_odd_random(lanes):
    """N = 13, d = 5, a 3 x 5 array (R != C), causal among the settings."""
    cfg = leo("odd", leopard_lanes=lanes)
    rng = random.Random(lanes)
    settings = [{"leopard_th": rng.randrange(-16, 17) / 16, "causal": rng.random() < 0.5,
                 "no_et": int(rng.random() < 0.2)} for _ in range(4)]
    run_heads(cfg, _heads(cfg, settings, [13, 11, 1, 7], seed=lanes), stall=0.2, seed=lanes)


def test_early_termination_saves_bits_not_results():
    """The same heads with and without early termination: identical outputs (checked
    against golden in run_heads), fewer bits read and fewer engine cycles with it."""
    cfg = leo("tiny")
    heads = _heads(cfg, [{"leopard_th": 1.0}, {"leopard_th": 1.0, "no_et": 1}], [8, 8], 5)
    heads[1].update(q=heads[0]["q"], k=heads[0]["k"], v=heads[0]["v"])
    et, full = run_heads(cfg, heads)
    assert et["bits_read"] < full["bits_read"] == 64 * cfg.qk_bits
    assert et["fe_cycles"] < full["fe_cycles"]


def test_real_minilm_heads():
    """Heads of the 30-token MiniLM capture on the leopard preset's design (seq_len 32)."""
    fx = load_fixture("long")
    cfg = preset("leopard").replace(seq_len=32)
    q_q, k_q, v_q = quantize_qkv(fx["q"], fx["k"], fx["v"], cfg)
    n = int(fx["valid_len"])
    heads = []
    for h, th in ((0, 0.5), (17, 0.0), (40, 1.0)):
        pad = [np.zeros((32, cfg.head_dim), np.int64) for _ in range(3)]
        for dst, src in zip(pad, (q_q[h], k_q[h], v_q[h])):
            dst[:n] = src[:n]
        heads.append({"q": pad[0], "k": pad[1], "v": pad[2], "valid_len": n,
                      "settings": {"leopard_th": th}})
    stats = run_heads(cfg, heads)
    assert all(0 < s["kept_entries"] < n * n for s in stats)


def test_broken_gather_is_caught(monkeypatch):
    """A gather stage that lets every gathered entry into the softmax (the union's bit
    instead of the row's own keep bit) must fail the whole-output comparison."""
    import hw.top
    from hw.stages.leopard_gather import LeopardGather

    class KeepAll(LeopardGather):
        def tile_keep(self, own, union):
            return union

    cfg = leo("tiny")
    heads = _heads(cfg, [{"leopard_th": 0.25}, {"leopard_th": 0.5}], [8, 8], 9)
    for h in heads:     # small scores, so that a wrongly kept entry carries probability
        h["q"], h["k"] = h["q"] // 16, h["k"] // 16
    run_heads(cfg, heads)       # the same heads pass on the correct design
    monkeypatch.setattr(hw.top, "LeopardGather", KeepAll)
    with pytest.raises(AssertionError, match="first difference"):
        run_heads(cfg, heads)
