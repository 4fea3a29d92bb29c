"""SystolicArray in Amaranth's simulator: score and P x V tiles bit-exact against golden, random
stalls at both stream ends, and measured cycles equal to the array's cycle model."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.model import attention_head_int
from hw.presets import preset
from hw.systolic import SystolicArray, array_widths, min_tile_cycles
from sim import cycle_model
from sim.amaranth_streams import timed_sink, timed_source
from sim.vectors import array as vec


def run_array(dut: SystolicArray, beats: list[int], n_rows: int, *, stall_in: float = 0.0,
              stall_out: float = 0.0, seed: int = 0) -> dict:
    """Feed ``beats`` into op_in, collect ``n_rows`` result beats; cycle 0 is the first clock
    edge; returns outputs, the first accept cycle and the last output cycle."""
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    res = {"out": [], "t_in": [], "t_out": [], "violations": []}
    limit = (len(beats) + 50 * n_rows + 200) * (1 + int(10 * max(stall_in, stall_out)))

    async def source(ctx):
        await timed_source(ctx, dut.op_in, beats, rng=rng_in, stall=stall_in, times=res["t_in"])

    async def sink(ctx):
        await timed_sink(ctx, dut.res_out, n_rows, rng=rng_out, stall=stall_out, limit=limit,
                         out=res["out"], times=res["t_out"], violations=res["violations"])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return res


def check(cfg, w: vec.ArrayWorkload, res: dict, label: str) -> None:
    assert not res["violations"], f"{label}: {res['violations'][:3]}"
    got = vec.unpack_results(cfg, res["out"])
    err = vec.compare(got, vec.expected_rows(cfg, w))
    assert err is None, f"{label} config={cfg.to_dict()}: {err}"


def workload(cfg, seed, n=None, **changes):
    cfg = cfg.replace(**changes)
    return cfg, vec.head_workload(cfg, f"seed{seed}", *vec.random_head(cfg, seed, n))


CASES = [
    ("tiny", {}),
    ("tiny", {"approx": "exact"}),
    ("tiny", {"prune_mode": "off"}),                       # dense operands, drop_ff
    ("odd", {"prune_mode": "off", "approx": "exact"}),     # dense operands, exact
    ("odd", {}),
    ("odd", {"approx": "exact", "causal": False, "prune_mode": "topk", "k_frac": 0.5}),
    ("tiny", {"array_rows": 3, "array_cols": 2, "approx": "exact"}),
    ("tiny", {"array_rows": 1, "array_cols": 4}),
    ("odd", {"qk_frac": 6, "approx": "exact"}),   # F = B - 1: 2^F X alone needs the wider acc
]


@pytest.mark.parametrize("name,changes", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@pytest.mark.parametrize("stall", [0.0, 0.3], ids=["nostall", "stall"])
def test_head_tiles_bit_exact(name, changes, stall):
    """Every issued score and P x V tile of a random pruned head, compared whole."""
    seed = 17 + len(changes)
    cfg, w = workload(preset(name), seed, **changes)
    beats = vec.pack_beats(cfg, w)
    res = run_array(SystolicArray(cfg), beats, len(w.tiles) * cfg.array_rows,
                    stall_in=stall, stall_out=stall, seed=seed)
    check(cfg, w, res, f"{name}{changes} seed={seed} stall={stall}")


def test_extreme_operands():
    """Largest-magnitude operands at every width: full-scale score tiles (q = k = min word,
    q = min / k = max, alternating) with the fine and the dense operands in both approximation
    modes, and P x V with p = 1.0 everywhere and v = min/max words."""
    for name, dense, approx in [(n, dn, a) for n in ("tiny", "odd") for dn in (False, True)
                                for a in ("exact", "drop_ff")]:
        cfg = preset(name).replace(prune_mode="off", approx=approx)
        n, d = cfg.seq_len, cfg.head_dim
        lo, hi = -(1 << (cfg.qk_bits - 1)), (1 << (cfg.qk_bits - 1)) - 1
        f = cfg.qk_frac
        mix = (cfg.qk_int_range[0] << f) + cfg.qk_frac_max    # min integer part, max fraction
        for qv, kv in ((lo, lo), (hi, lo), (mix, mix)):
            q = np.full((n, d), qv)
            k = np.full((n, d), kv)
            k[1::2] = lo if kv != lo else hi
            v = np.full((n, d), -(1 << (cfg.v_bits - 1)))
            v[:, 1::2] = (1 << (cfg.v_bits - 1)) - 1
            w = vec.head_workload(cfg, f"extreme{qv},{kv}", q, k, v, dense=dense)
            res = run_array(SystolicArray(cfg), vec.pack_beats(cfg, w),
                            len(w.tiles) * cfg.array_rows)
            check(cfg, w, res, f"{name} {approx} dense={dense} extremes q={qv} k={kv}")


def test_minilm_fixture_head():
    """A real all-MiniLM-L6-v2 head (the 'padded' capture, valid_len 7 of 12), pruned top-k."""
    from golden.model import quantize_qkv
    from sim.fixtures import fixture_names, load_fixture
    if "padded" not in fixture_names():
        pytest.skip("MiniLM fixture 'padded' not in this checkout")
    fx = load_fixture("padded")
    cfg = preset("default").replace(seq_len=16, k_frac=0.5, array_rows=4, array_cols=4)
    q, k, v = quantize_qkv(fx["q"][40], fx["k"][40], fx["v"][40], cfg)
    w = vec.head_workload(cfg, "minilm_padded_h40", q, k, v, valid_len=fx["valid_len"])
    res = run_array(SystolicArray(cfg), vec.pack_beats(cfg, w), len(w.tiles) * cfg.array_rows,
                    stall_in=0.2, stall_out=0.2, seed=5)
    check(cfg, w, res, "minilm padded head 40")


MASK_CASES = ["dense", "topk", "threshold", "one_block_per_row", "pruned_head"]


@pytest.mark.parametrize("kind", MASK_CASES)
def test_cycles_equal_model(kind):
    """Without stalls the measured cycles (first accepted beat to last result row, inclusive)
    equal sim/cycle_model.predict_cycles for the tiles the keep mask issues."""
    base = preset("tiny").replace(seq_len=12, array_rows=2, array_cols=2, k_frac=0.5)
    changes = {"dense": {"prune_mode": "off"}, "topk": {"prune_mode": "topk", "k_frac": 0.5},
               "threshold": {"prune_mode": "threshold", "rho": 0.75},
               "one_block_per_row": {"prune_mode": "topk", "k_frac": 1 / 256},
               "pruned_head": {"head_prune": True, "tau_head": base.replace(
                   head_prune=True).h_max}}[kind]
    cfg, w = workload(base, 23, **changes)
    depths = [t.depth(cfg) for t in w.tiles]
    predicted = cycle_model.predict_cycles(cfg, depths)
    if kind == "pruned_head":
        assert not w.tiles and predicted == 0
        return
    dut = SystolicArray(cfg)
    res = run_array(dut, vec.pack_beats(cfg, w), len(w.tiles) * cfg.array_rows)
    check(cfg, w, res, kind)
    measured = res["t_out"][-1] - res["t_in"][0] + 1
    assert measured == predicted, f"{kind}: measured {measured}, model {predicted}"
    if kind != "dense":
        dense_cfg, dense_w = workload(base, 23, prune_mode="off")
        assert len(w.tiles) < len(dense_w.tiles), "pruning issued no fewer tiles"
        assert measured < cycle_model.predict_cycles(dense_cfg, [t.depth(dense_cfg)
                                                                 for t in dense_w.tiles])


def test_latency_and_back_to_back_tiles():
    """Tiles of depth >= 2R-1 are accepted back to back (one beat per cycle), the first result
    row comes ``latency`` (measured: C + 6) cycles after the last beat, rows every 2 cycles."""
    cfg = preset("default").replace(seq_len=16, head_dim=8, k_frac=0.5, array_rows=4, array_cols=4,
                                    prune_mode="off")
    cfg, w = workload(cfg, 3)
    dut = SystolicArray(cfg)
    beats = vec.pack_beats(cfg, w)
    res = run_array(dut, beats, len(w.tiles) * cfg.array_rows)
    check(cfg, w, res, "back to back")
    assert all(t.depth(cfg) >= min_tile_cycles(cfg) for t in w.tiles)
    assert res["t_in"] == list(range(len(beats))), "a bubble between tiles"
    first_last = w.beats[0].__len__() - 1
    assert res["t_out"][0] - res["t_in"][first_last] == dut.latency == cfg.array_cols + 6
    assert res["t_out"][1] - res["t_out"][0] == 2


def test_short_tiles_are_padded():
    """P x V tiles shorter than 2R-1 cost 2R-1 cycles (drain rate), still bit-exact."""
    cfg = preset("tiny").replace(array_rows=4, array_cols=2, prune_mode="topk", k_frac=1 / 256)
    cfg, w = workload(cfg, 8)
    res = run_array(SystolicArray(cfg), vec.pack_beats(cfg, w), len(w.tiles) * cfg.array_rows)
    check(cfg, w, res, "short tiles")
    depths = [t.depth(cfg) for t in w.tiles]
    assert min(depths) < min_tile_cycles(cfg)
    assert res["t_out"][-1] - res["t_in"][0] + 1 == cycle_model.predict_cycles(cfg, depths)


class NarrowAccArray(SystolicArray):
    """Deliberately broken: accumulators one bit narrower than derived."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._widths.acc -= 1


@pytest.mark.parametrize("dense", [False, True], ids=["fine", "dense"])
def test_broken_variant_fails(dense):
    """Each pass that sets the accumulator width needs all of it: at F = B - 1 the fine pass
    (2^F X reaches -2^F 2d (2^F-1)), at the odd preset's F = 3 the dense pass (q = k = min word:
    S = d 2^(2(B-1))).  One bit less wraps and the comparison fails; the real array passes."""
    if dense:
        cfg = preset("odd").replace(prune_mode="off", approx="exact")
        assert array_widths(cfg).acc == array_widths(cfg).dense > array_widths(cfg).fine
        lo = -(1 << (cfg.qk_bits - 1))
        q = np.full((cfg.seq_len, cfg.head_dim), lo)
    else:
        cfg = preset("odd").replace(qk_frac=6, prune_mode="off", approx="drop_ff")
        assert array_widths(cfg).acc == array_widths(cfg).fine
        q = np.full((cfg.seq_len, cfg.head_dim), -1)          # q_I = -1, q_F = 2^F - 1
    v = np.full((cfg.seq_len, cfg.head_dim), -(1 << (cfg.v_bits - 1)))
    w = vec.head_workload(cfg, "extreme", q, q, v, passes=("score",), dense=dense)
    beats = vec.pack_beats(cfg, w)
    good = run_array(SystolicArray(cfg), beats, len(w.tiles) * cfg.array_rows)
    check(cfg, w, good, "good")
    bad = NarrowAccArray(cfg)
    assert bad.widths.acc == array_widths(cfg).acc - 1
    res = run_array(bad, beats, len(w.tiles) * cfg.array_rows)
    with pytest.raises(AssertionError, match="first difference"):
        check(cfg, w, res, "narrow acc")


def test_model_dense_utilization_and_skipping_n128():
    """Cycle model at N = 128 on an 8 x 8 array: dense utilization >= 99 %; with blocks equal
    to the tile (8 x 8) and half the blocks of every block-row kept, the head takes about half
    the cycles (a pruned block is a tile never issued)."""
    cfg = preset("default").replace(array_rows=8, array_cols=8)
    n = cfg.seq_len
    dense = np.ones((cfg.n_block_rows, cfg.n_block_cols), bool)
    tiles = cycle_model.tile_plan(cfg, dense, n)
    cycles = cycle_model.predict_cycles(cfg, [t.depth(cfg) for t in tiles])
    assert cycle_model.utilization(cfg, tiles, cycles, n) >= 0.99
    tcfg = cfg.replace(block_rows=8, block_cols=8, k_frac=0.5)
    q, k, v = vec.random_head(tcfg, 1)
    res = attention_head_int(q, k, v, tcfg)
    kept = cycle_model.tile_plan(tcfg, res.block_keep, n)
    assert sum(t.kind == "score" for t in kept) == int(res.block_keep.sum())
    pruned = cycle_model.predict_cycles(tcfg, [t.depth(tcfg) for t in kept])
    assert cycles / pruned >= 1.9, (cycles, pruned)


def test_rtl_dense_utilization_small():
    """Measured on the RTL: a dense 16-row head on a 4 x 4 array (d = 32)."""
    cfg = preset("default").replace(seq_len=16, k_frac=0.5, array_rows=4, array_cols=4,
                                    prune_mode="off")
    cfg, w = workload(cfg, 2)
    res = run_array(SystolicArray(cfg), vec.pack_beats(cfg, w), len(w.tiles) * cfg.array_rows)
    check(cfg, w, res, "dense small")
    cycles = res["t_out"][-1] - res["t_in"][0] + 1
    assert cycles == cycle_model.predict_cycles(cfg, [t.depth(cfg) for t in w.tiles])
    util = cycle_model.utilization(cfg, w.tiles, cycles, 16)
    print(f"RTL dense utilization (N=16, d=32, 4x4): {util:.4f} over {cycles} cycles")
    assert util >= 0.95
